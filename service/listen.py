"""One listening socket per worker process on the same port (SO_REUSEPORT), so that the kernel
spreads connections over the workers.

uvicorn's workers share one listening socket and uvloop accepts every pending connection at
each wake-up: a burst of keep-alive connections (a load generator, a proxy's pool) lands on
whichever worker woke first, and the other workers idle while that one queues. Measured with
`hey -c 32` and 2 workers: all 32 connections in one worker in some runs, 1,395-1,735 req/s
against ~2,000 when they were split.

With SO_REUSEPORT each worker listens on its own socket and the kernel hashes each new
connection (its addresses and ports) to one of them.
"""

from __future__ import annotations

import socket
import sys

# Linux hashes connections over the sockets of a SO_REUSEPORT group; macOS and the BSDs
# accept the option but hand every connection to one socket.
SUPPORTED = sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")


class WorkerSocket(socket.socket):
    """A bound socket that becomes, in each worker process it is sent to (multiprocessing
    pickles it to spawn the worker), a new socket bound to the same address: one listening
    socket per worker, all in one SO_REUSEPORT group.

    The parent's own socket is bound but never listens: it holds the port (and fails at once
    when the port is taken) without taking connections."""

    def __reduce__(self) -> tuple:
        return bind_shared, (self.family, self.getsockname())


def bind_shared(family: int, address: tuple) -> WorkerSocket:
    """A socket of the SO_REUSEPORT group on `address` (port 0: a free port)."""
    sock = WorkerSocket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def worker_socket(host: str, port: int) -> WorkerSocket:
    """The parent's socket for `host`:`port` that each worker turns into its own listener.

    Bound before SO_REUSEPORT is on, so that a port another server holds fails here, even
    another mimo-serve whose workers share it: joining its group would split the traffic
    between two deployments."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = WorkerSocket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # the workers may join
    except OSError:
        sock.close()
        raise
    return sock
