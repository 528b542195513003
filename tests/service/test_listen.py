"""One listening socket per worker (service/listen.py): real sockets on loopback, the kernel's
own SO_REUSEPORT spreading."""

from __future__ import annotations

import select
import socket
from multiprocessing.reduction import ForkingPickler

import pytest

from service import listen

pytestmark = pytest.mark.skipif(not listen.SUPPORTED, reason="SO_REUSEPORT spreading is Linux's")


def as_worker_gets_it(sock: socket.socket) -> socket.socket:
    """What a spawned worker receives: the socket through multiprocessing's pickler."""
    return ForkingPickler.loads(ForkingPickler.dumps(sock))


def test_each_worker_gets_its_own_socket_on_the_same_port() -> None:
    parent = listen.worker_socket("127.0.0.1", 0)
    first, second = as_worker_gets_it(parent), as_worker_gets_it(parent)
    try:
        address = parent.getsockname()
        assert first.getsockname() == second.getsockname() == address
        assert len({parent.fileno(), first.fileno(), second.fileno()}) == 3
        for sock in (first, second):
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
            assert sock.get_inheritable()
    finally:
        for sock in (parent, first, second):
            sock.close()


def test_connections_spread_over_the_workers_and_the_parent_takes_none() -> None:
    parent = listen.worker_socket("127.0.0.1", 0)
    workers = [as_worker_gets_it(parent) for _ in range(2)]
    clients: list[socket.socket] = []
    accepted: dict[int, list[socket.socket]] = {w.fileno(): [] for w in workers}
    try:
        for sock in workers:
            sock.listen(64)
            sock.setblocking(False)
        for _ in range(48):
            clients.append(socket.create_connection(parent.getsockname(), timeout=5))
        while sum(map(len, accepted.values())) < len(clients):
            ready, _, _ = select.select(workers, [], [], 5)
            assert ready, f"accepted {sum(map(len, accepted.values()))} of {len(clients)}"
            for sock in ready:
                with_peer = sock.accept()
                accepted[sock.fileno()].append(with_peer[0])
        counts = sorted(len(a) for a in accepted.values())
        # Hashed, not round-robin: all 48 on one socket has probability 2 ** -47.
        assert counts[0] >= 1, counts
        # The parent's socket holds the port without listening: nothing waits on it.
        with pytest.raises(OSError):
            parent.setblocking(False)
            parent.accept()
    finally:
        for sock in [parent, *workers, *clients, *(s for a in accepted.values() for s in a)]:
            sock.close()


def test_a_taken_port_fails_at_once() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(OSError):
            listen.worker_socket("127.0.0.1", taken.getsockname()[1])


def test_a_port_another_server_shares_between_its_workers_fails_too() -> None:
    """Another mimo-serve (SO_REUSEPORT sockets) on the port: not joined, refused."""
    other = listen.worker_socket("127.0.0.1", 0)
    others_worker = as_worker_gets_it(other)
    try:
        others_worker.listen(8)
        with pytest.raises(OSError):
            listen.worker_socket("127.0.0.1", other.getsockname()[1])
    finally:
        other.close()
        others_worker.close()


def test_another_mimo_serve_still_starting_holds_the_port() -> None:
    """Its workers do not listen yet (models loading), so no bind fails: the port lock does."""
    first = listen.worker_socket("127.0.0.1", 0)
    port = first.getsockname()[1]
    first.close()
    first = listen.worker_socket("127.0.0.1", port)
    try:
        with pytest.raises(OSError, match="another mimo-serve holds port"):
            listen.worker_socket("127.0.0.1", port)
    finally:
        first.close()
    listen.worker_socket("127.0.0.1", port).close()  # free again once the first one is gone


def test_a_worker_that_cannot_listen_stops_as_a_startup_failure() -> None:
    """Not a traceback and exit code 1, which uvicorn's supervisor restarts forever."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(SystemExit) as stopped:
            listen._worker_listener(socket.AF_INET, taken.getsockname())
    assert stopped.value.code == listen.STARTUP_FAILURE == 3
