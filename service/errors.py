"""Client errors that carry their HTTP status and a message saying what to do instead, and
the one way every HTTP answer renders an error: `{"error": "..."}`."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException


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


def error_json(message: str) -> bytes:
    """The body of every error answer (compact, UTF-8: as Starlette's JSONResponse)."""
    return json.dumps({"error": message}, ensure_ascii=False, separators=(",", ":")).encode()


def internal_error(exc: BaseException) -> str:
    """What a client learns of a failure of ours (HTTP 500, gRPC INTERNAL): its kind only."""
    return f"internal error ({type(exc).__name__}); see the log"


def error_answer(exc: Exception) -> tuple[int, str, dict[str, str]]:
    """(status, message, headers) of the answer to an exception raised while serving."""
    if isinstance(exc, ServiceError):
        return exc.status_code, exc.message, exc.headers
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail), dict(exc.headers or {})
    return 500, internal_error(exc), {}
