"""ASGI middleware: body size and time limits, and the per-request HTTP metrics."""

from __future__ import annotations

import asyncio
import time

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.errors import PayloadTooLarge, ServiceError, error_json

Headers = list[tuple[bytes, bytes]]


async def send_json(send: Send, status: int, body: bytes, headers: Headers | None = None) -> None:
    """A whole JSON answer straight on the ASGI channel."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, status: int, message: str, headers: Headers | None = None) -> None:
    await send_json(send, status, error_json(message), headers)


class BodyTooLarge(PayloadTooLarge):
    """The body went over the limit while it arrived (raised from LimitedBody's `receive`, so
    whoever reads the body answers it like any error of ours)."""


class BodyTooSlow(ServiceError):
    status_code = 408


class ClientGone(ClientDisconnect):
    """The client closed the connection before its body was all sent: nobody to answer."""

    status_code = 499  # nginx's "client closed request", in the request counters


class LimitedBody:
    """A request's `receive` with the body limits: over `max_bytes`, announced (Content-Length)
    or streamed (chunked), is BodyTooLarge (413); still arriving `max_seconds` after the
    request (a slow or stalled client, who would otherwise hold a connection and its buffers
    for as long as it likes), BodyTooSlow (408); a client that leaves before its body is all
    sent, ClientGone."""

    __slots__ = ("complete", "deadline", "max_bytes", "max_seconds", "receive", "seen")

    def __init__(self, receive: Receive, max_bytes: int, max_seconds: float | None) -> None:
        self.receive = receive
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.deadline = None if max_seconds is None else time.monotonic() + max_seconds
        self.seen = 0
        self.complete = False  # the whole body has arrived

    def too_large(self, size: int | str) -> BodyTooLarge:
        return BodyTooLarge(
            f"request body of {size} bytes is over the limit of {self.max_bytes} bytes "
            "(MIMO_MAX_BODY_BYTES): send smaller or fewer images"
        )

    def declared_too_large(self, scope: Scope) -> BodyTooLarge | None:
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return self.too_large(int(declared))
        return None

    async def __call__(self) -> Message:
        if self.complete or self.deadline is None:
            message = await self.receive()
        else:
            try:  # (asyncio.timeout: no task per call, unlike wait_for)
                async with asyncio.timeout(self.deadline - time.monotonic()):
                    message = await self.receive()
            except TimeoutError:
                raise BodyTooSlow(
                    f"request body not complete {self.max_seconds:g} s after the request "
                    f"(MIMO_REQUEST_TIMEOUT_S; {self.seen} bytes came): send the body at once",
                    # The rest of the body is never read: the connection ends with the answer.
                    {"Connection": "close"},
                ) from None
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            self.complete = not message.get("more_body", False)
            if self.seen > self.max_bytes:
                raise self.too_large(f"more than {self.max_bytes}")
        elif message["type"] == "http.disconnect" and not self.complete:
            raise ClientGone
        return message


class Guard:
    """Every HTTP request's body limits (LimitedBody) and request metrics
    (metrics.RequestRecord), in one layer: each layer costs a coroutine and a wrapped `send`
    per request."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_seconds: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = metrics.RequestRecord(endpoint_of(scope["path"]))

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            await send(message)

        body = LimitedBody(receive, self.max_bytes, self.max_seconds)
        try:
            if (refused := body.declared_too_large(scope)) is not None:
                await send_error(recording_send, refused.status_code, refused.message)
                return
            await self.app(scope, body, recording_send)
        except ClientDisconnect:
            record.status = ClientGone.status_code  # no answer can reach it; not a server error
        finally:
            record.done()


ENDPOINTS = ("/predict", "/models", "/metrics", "/v2/health", "/v2/repository", "/v2/models", "/v2")


def endpoint_of(path: str) -> str:
    """A low-cardinality endpoint label: the route family, never the raw path."""
    if path.startswith("/v2/models/"):
        return "/v2/models/infer" if path.endswith("/infer") else "/v2/models"
    for prefix in ENDPOINTS:
        if path == prefix or path.startswith(prefix + "/"):
            return prefix
    return "other"
