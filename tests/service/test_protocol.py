"""service/protocol.py: an answer leaves in one write, and nothing written is lost or late.

The unit tests hold writes on a real transport (a socket pair on the running loop) and count
what reaches it; the server tests speak raw HTTP/1.1 to `python -m service`, which runs this
protocol: keep-alive and pipelined requests, `Expect: 100-continue`, a malformed request.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ROOT, SERVICE, free_port, service_env, start_service

from service.protocol import HeldWrites


class Counting:
    """A real transport, with its write calls counted."""

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.transport.write(data)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.transport, name)


async def pair() -> tuple[HeldWrites, Counting, socket.socket]:
    ours, peer = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    counting = Counting(transport)
    return HeldWrites(counting, loop), counting, peer  # type: ignore[arg-type]


def received(peer: socket.socket, size: int) -> bytes:
    peer.settimeout(5)
    data = b""
    while len(data) < size:
        chunk = peer.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_writes_until_the_flush_leave_in_one() -> None:
    async def main() -> None:
        held, counting, peer = await pair()
        held.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        held.write(b"{}")
        assert counting.writes == []
        held.flush()
        assert counting.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
        assert received(peer, 40).endswith(b"\r\n\r\n{}")
        held.close()
        peer.close()

    asyncio.run(main())


def test_an_unflushed_write_leaves_on_the_next_turn_of_the_loop() -> None:
    async def main() -> None:
        held, counting, peer = await pair()
        held.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await asyncio.sleep(0)
        assert counting.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
        held.flush()  # nothing left: no empty write
        assert len(counting.writes) == 1
        held.close()
        peer.close()

    asyncio.run(main())


def test_close_sends_what_is_held_first_and_late_flushes_are_harmless() -> None:
    async def main() -> None:
        held, counting, peer = await pair()
        held.write(b"bye")
        held.close()
        await asyncio.sleep(0)  # the scheduled flush finds the transport closing
        assert counting.writes == [b"bye"]
        assert received(peer, 10) == b"bye"  # then the end of the stream
        held.write(b"more")
        await asyncio.sleep(0)
        assert counting.writes == [b"bye"]
        peer.close()

    asyncio.run(main())


def test_writelines_big_writes_and_reused_buffers() -> None:
    """writelines is held like write; past FLUSH_BYTES the held bytes leave at once; a
    bytearray is copied when held (its sender may reuse it)."""
    from service.protocol import FLUSH_BYTES

    async def main() -> None:
        held, counting, peer = await pair()
        buffer = bytearray(b"abc")
        held.writelines([b"1", b"2"])
        held.write(buffer)
        buffer[:] = b"xyz"
        held.flush()
        assert counting.writes == [b"12abc"]
        big = b"x" * (FLUSH_BYTES + 1)
        held.write(big)
        assert counting.writes[-1] == big  # without waiting for the turn of the loop
        assert received(peer, 5 + len(big)) == b"12abc" + big
        held.close()
        peer.close()

    asyncio.run(main())


# --- a real server ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def port(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    log = tmp_path_factory.mktemp("protocol") / "server.log"
    service = start_service(SERVICE, service_env(model_repository, port), ROOT, log)
    try:
        yield port
    finally:
        service.stop()


def head(length: int, extra: str = "") -> bytes:
    return (
        "POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: image/png\r\n"
        f"content-length: {length}\r\n{extra}\r\n"
    ).encode()


def request(body: bytes) -> bytes:
    return head(len(body)) + body


def answers(sock: socket.socket, count: int) -> list[tuple[bytes, bytes]]:
    """`count` whole answers (status line, body) read from a keep-alive connection."""
    sock.settimeout(10)
    data, out = b"", []
    while len(out) < count:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            head = data[:end].decode()
            length = int(head.lower().split("content-length: ")[1].split("\r\n")[0])
            if len(data) >= end + 4 + length:
                out.append((data[: data.find(b"\r\n")], data[end + 4 : end + 4 + length]))
                data = data[end + 4 + length :]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(out)} answers"
        data += chunk
    assert data == b"", data
    return out


def test_keep_alive_and_pipelined_requests_are_each_answered_whole(
    port: int, digit_pngs: list[tuple[bytes, int]]
) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for png, _ in digit_pngs[:3]:
            sock.sendall(request(png))
            [(status, body)] = answers(sock, 1)
            assert status == b"HTTP/1.1 200 OK" and body.startswith(b'{"model"'), body
        sock.sendall(b"".join(request(png) for png, _ in digit_pngs[:4]))  # pipelined
        found = answers(sock, 4)
    assert [s for s, _ in found] == [b"HTTP/1.1 200 OK"] * 4


def test_expect_100_continue_gets_its_interim_answer_before_the_body(
    port: int, digit_pngs: list[tuple[bytes, int]]
) -> None:
    png = digit_pngs[0][0]
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head(len(png), "expect: 100-continue\r\n"))
        sock.settimeout(10)
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(png)
        [(status, _)] = answers(sock, 1)
    assert status == b"HTTP/1.1 200 OK"


def test_a_malformed_request_is_answered_400_and_closed(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-length: nope\r\n\r\n")
        sock.settimeout(10)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n"), data
