"""Client errors that carry their HTTP status and a message saying what to do instead."""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 400

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(ServiceError):
    status_code = 400


class Unauthorized(ServiceError):
    status_code = 401


class Forbidden(ServiceError):
    status_code = 403


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


class PayloadTooLarge(ServiceError):
    status_code = 413


class UnsupportedMediaType(ServiceError):
    status_code = 415


class TooManyRequests(ServiceError):
    status_code = 429


class Unavailable(ServiceError):
    status_code = 503


class Timeout(ServiceError):
    status_code = 504


def quoted(value: object, limit: int = 60) -> str:
    """repr(value) for a message, cut after `limit` characters: what a client sent is named,
    not reflected back whole (a 10,000-character model name)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"
