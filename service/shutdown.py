"""Graceful shutdown: on SIGTERM readiness turns false first, then the server drains.

Kubernetes and load balancers stop sending new requests once readiness fails; requests that
arrive meanwhile are still answered. After `delay_s` the signal goes on to uvicorn, which
stops accepting connections, answers every request in flight (up to its grace period), then
runs the lifespan's shutdown: the gRPC server drains and the batchers answer what is queued.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from starlette.datastructures import State

log = logging.getLogger("mimo.shutdown")


@contextmanager
def unready_first(state: State, delay_s: float) -> Iterator[None]:
    """While the app runs: SIGTERM sets `state.ready = False` and reaches the server's own
    handler `delay_s` later (at once for a second SIGTERM)."""
    if delay_s <= 0 or threading.current_thread() is not threading.main_thread():
        yield  # signals reach only the main thread (an app in a test's thread has none)
        return
    loop = asyncio.get_running_loop()
    server_handler = signal.getsignal(signal.SIGTERM)  # uvicorn's, installed before startup

    def forward(sig: int, frame: FrameType | None = None) -> None:
        if callable(server_handler):
            server_handler(sig, frame)
        else:  # no server handler: the default action, as if we had not been here
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(sig)

    def on_term(sig: int, frame: FrameType | None) -> None:
        if getattr(state, "draining", False):
            forward(sig, frame)
            return
        state.draining = True
        state.ready = False
        log.info("SIGTERM: not ready any more; draining starts in %.1f s", delay_s)
        loop.call_soon_threadsafe(loop.call_later, delay_s, forward, sig)

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, server_handler)
