"""uvicorn's HTTP protocol, with each answer leaving in one socket write.

uvicorn writes the status line and headers as soon as the app sends `http.response.start`,
and the body in a second write: two system calls and two TCP segments (each processed on both
ends) for a JSON answer that fits one. `OneWriteProtocol` holds what is written until the
answer is complete, or until the next turn of the loop for anything else (a streamed body, a
`100 Continue`), then writes it at once. Measured with both versions serving side by side and
`hey -c 32` alternating between them: +4 % requests per second (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Held bytes past this leave at once: a body streamed without a pause between its chunks
# still meets the transport's flow control.
FLUSH_BYTES = 64 * 1024


class HeldWrites:
    """A connection's transport whose `write`s wait for `flush`, at the latest one turn of the
    loop (or FLUSH_BYTES); every other attribute is the transport's."""

    __slots__ = ("_held", "_loop", "_size", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if type(data) is not bytes:  # a buffer the sender may reuse once send() returns
            data = bytes(data)
        if self._held is None:
            self._held, self._size = [data], len(data)
            self._loop.call_soon(self.flush)
        else:
            self._held.append(data)
            self._size += len(data)
        if self._size > FLUSH_BYTES:
            self.flush()

    def writelines(self, lines: list[bytes]) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        # (a transport that is closing refuses writes; the client has gone)
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneWriteProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # (flow control keeps the transport itself)
        self.transport = HeldWrites(transport, self.loop)  # type: ignore[assignment]

    def on_response_complete(self) -> None:
        self.transport.flush()  # type: ignore[attr-defined]
        super().on_response_complete()
