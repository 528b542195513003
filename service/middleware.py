"""ASGI middleware: body size and time limits, and the per-request HTTP metrics."""

from __future__ import annotations

import asyncio
import time

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.errors import error_json


async def send_json(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
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


async def send_error(
    send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send_json(send, status, error_json(message), headers)


class Guard:
    """The per-request HTTP metrics and the body limits, in one layer (each layer is a
    coroutine and a wrapped `send` per request).

    Body limits: 413 for a body over the limit, announced (Content-Length) or streamed
    (chunked); 408 for a body still arriving `max_seconds` after the request (a slow or stalled
    client, who would otherwise hold a connection and its buffers for as long as it likes); a
    client that leaves before its body is all sent is no server error (ClientGone, counted as
    499). Metrics: requests in flight, and each request's endpoint, status and duration."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_seconds: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds

    def _message(self, size: int | str) -> str:
        return (
            f"request body of {size} bytes is over the limit of {self.max_bytes} bytes "
            "(MIMO_MAX_BODY_BYTES): send smaller or fewer images"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0  # of the answer, once it starts
        seen = 0
        complete = False  # the whole body has arrived
        deadline = None if self.max_seconds is None else time.monotonic() + self.max_seconds

        async def guarded_receive() -> Message:
            nonlocal seen, complete
            if complete or deadline is None:
                message = await receive()
            else:
                try:  # (asyncio.timeout: no task per call, unlike wait_for)
                    async with asyncio.timeout(deadline - time.monotonic()):
                        message = await receive()
                except TimeoutError:
                    raise _TooSlow from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if seen > self.max_bytes:
                    raise _TooLarge
            elif message["type"] == "http.disconnect" and not complete:
                raise ClientGone
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics.IN_FLIGHT.inc()
        try:
            declared = dict(scope["headers"]).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                await send_error(guarded_send, 413, self._message(int(declared)))
                return
            try:
                await self.app(scope, guarded_receive, guarded_send)
            except _TooLarge:
                if not status:
                    await send_error(
                        guarded_send, 413, self._message(f"more than {self.max_bytes}")
                    )
            except _TooSlow:
                if not status:
                    message = (
                        f"request body not complete {self.max_seconds:g} s after the request "
                        f"(MIMO_REQUEST_TIMEOUT_S; {seen} bytes came): send the body at once"
                    )
                    # The rest of the body is never read: the connection ends with the answer.
                    await send_error(guarded_send, 408, message, [(b"connection", b"close")])
        except ClientDisconnect:
            status = ClientGone.status_code  # no answer can reach it; not a server error
        finally:
            metrics.IN_FLIGHT.dec()
            endpoint = endpoint_of(scope["path"])
            metrics.child(metrics.REQUESTS, endpoint, str(status or 500)).inc()
            metrics.child(metrics.REQUEST_DURATION, endpoint).observe(time.perf_counter() - started)


class BodyLimitError(Exception):
    """Raised from the wrapped `receive`: Guard answers it (routes let it through)."""


class _TooLarge(BodyLimitError):
    status_code = 413  # what the routes' request counters record for it


class _TooSlow(BodyLimitError):
    status_code = 408


class ClientGone(ClientDisconnect):
    """The client closed the connection before its body was all sent: nobody to answer."""

    status_code = 499  # nginx's "client closed request", in the request counters


ENDPOINTS = ("/predict", "/models", "/metrics", "/v2/health", "/v2/repository", "/v2/models", "/v2")


def endpoint_of(path: str) -> str:
    """A low-cardinality endpoint label: the route family, never the raw path."""
    if path.startswith("/v2/models/"):
        return "/v2/models/infer" if path.endswith("/infer") else "/v2/models"
    for prefix in ENDPOINTS:
        if path == prefix or path.startswith(prefix + "/"):
            return prefix
    return "other"
