"""One listening socket per worker process on the same port (SO_REUSEPORT), so that the kernel
spreads connections over the workers.

uvicorn's workers share one listening socket and uvloop accepts every pending connection at
each wake-up: a burst of keep-alive connections (a load generator, a proxy's pool) lands on
whichever worker woke first, and the other workers idle while that one queues. Measured with
`hey -c 32` and 2 workers (docs/benchmarks.md): splits such as 2/30 connections, 1,344 req/s
against ~2,000 when they were even.

With SO_REUSEPORT each worker listens on its own socket and the kernel hashes each new
connection (its addresses and ports) to one of them.
"""

from __future__ import annotations

import socket
import sys
import tempfile
from pathlib import Path
from typing import IO

# Linux hashes connections over the sockets of a SO_REUSEPORT group; macOS and the BSDs
# accept the option but hand every connection to one socket.
SUPPORTED = sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")
STARTUP_FAILURE = 3  # uvicorn's supervisor stops, rather than restarts, a worker exiting so


class WorkerSocket(socket.socket):
    """A bound socket that becomes, in each worker process it is sent to (multiprocessing
    pickles it to spawn the worker), a new socket bound to the same address: one listening
    socket per worker, all in one SO_REUSEPORT group.

    The parent's own socket is bound but never listens: it holds the port without taking
    connections."""

    port_lock: IO[str] | None = None  # the parent's hold on the port (see worker_socket)

    def __reduce__(self) -> tuple:
        return _worker_listener, (self.family, self.getsockname())

    def close(self) -> None:
        if self.port_lock is not None:
            self.port_lock.close()
            self.port_lock = None
        super().close()


def bind_shared(family: int, address: tuple) -> WorkerSocket:
    """A socket of the SO_REUSEPORT group on `address`."""
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


def _worker_listener(family: int, address: tuple) -> WorkerSocket:
    # Runs in the new worker as its arguments are unpickled, before uvicorn's own start-up:
    # a failure exits as uvicorn's start-up failures do, so that the supervisor stops instead
    # of restarting the worker forever.
    try:
        return bind_shared(family, address)
    except OSError as exc:
        print(f"mimo-serve worker: cannot listen on {address[:2]}: {exc}", file=sys.stderr)
        raise SystemExit(STARTUP_FAILURE) from None


def worker_socket(host: str, port: int) -> WorkerSocket:
    """The parent's socket for `host`:`port` that each worker turns into its own listener.

    Refused when anything else holds the port: a listener (the bind comes before SO_REUSEPORT
    is on), or another mimo-serve, even one whose workers are still starting and do not
    listen yet (a lock per port): joining its group would split the traffic between two
    deployments."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = WorkerSocket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.port_lock = _lock_port(sock.getsockname()[1]) if port else None
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # the workers may join
    except OSError:
        sock.close()
        raise
    return sock


def _lock_port(port: int) -> IO[str] | None:
    """An exclusive lock on `port` among mimo-serve processes, held while the file is open."""
    import fcntl  # (Unix only, as SO_REUSEPORT spreading)

    path = Path(tempfile.gettempdir()) / f"mimo-serve-port-{port}.lock"
    try:
        handle = path.open("a")
    except OSError:  # another user's file (the kernel keeps groups per user anyway), or no
        return None  # writable temp folder: the bind's own checks remain
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise OSError(f"another mimo-serve holds port {port} ({path} is locked)") from None
    return handle
