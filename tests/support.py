"""Helpers of the tests that run real processes: free ports, polling, `python -m service`.

tests/conftest.py puts this folder on sys.path, so any test can `from support import ...`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICE = (sys.executable, "-m", "service")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.25) -> Any:
    """Poll `check` until it returns something truthy; its last exception explains a timeout."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (httpx.HTTPError, OSError, AssertionError, KeyError, ValueError) as exc:
            last = exc
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s (last: {last!r})")


class Process:
    """A subprocess whose output goes to a file, stopped (and reaped) by `stop`."""

    def __init__(self, args: Sequence[str], log: Path, **kwargs: Any) -> None:
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, **kwargs)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def alive(self) -> bool:
        if self.popen.poll() is not None:
            raise RuntimeError(f"exited with {self.popen.returncode}:\n{self.output()}")
        return True

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)


def service_env(repository: Path, port: int, **extra: str) -> dict[str, str]:
    """The environment of `python -m service` on `repository`, loopback `port`: none of the
    caller's MIMO_* or Prometheus variables, one thread, `extra` last."""
    env = {
        k: v for k, v in os.environ.items() if not k.upper().startswith(("MIMO_", "PROMETHEUS_"))
    }
    env.update(
        MIMO_REPOSITORY=str(repository),
        MIMO_DEFAULT_MODEL="digits",
        MIMO_HOST="127.0.0.1",
        MIMO_PORT=str(port),
        MIMO_GRPC_PORT="0",  # no gRPC unless a test asks for it with a free port
        MIMO_SHUTDOWN_DELAY_S="0",  # stop at once (tests of the shutdown set their own)
        MIMO_THREADS="1",  # modest: the machine is shared
        MIMO_WORKERS="1",  # one process unless a test asks for more
        MIMO_LOG_LEVEL="warning",
    )
    env.update(extra)
    return env


def wait_ready(
    process: Process,
    port: int | str,
    timeout: float = 90,
    check: Callable[[], Any] | None = None,
    what: str = "service ready",
) -> None:
    """Wait until the service on `port` answers 200 on /v2/health/ready and `check` (if any)
    is truthy; fail at once if it exits, and with its output if it is not ready in time."""
    url = f"http://127.0.0.1:{port}/v2/health/ready"
    try:
        wait_for(
            what,
            lambda: (
                process.alive()
                and httpx.get(url, timeout=2).status_code == 200
                and (check is None or check())
            ),
            timeout,
        )
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}:\n{process.output()}") from None


def start_service(
    command: Sequence[str], env: dict[str, str], cwd: Path, log: Path, timeout: float = 90
) -> Process:
    """Start the service and wait for /v2/health/ready; stop it if it does not get there."""
    process = Process(command, log, env=env, cwd=cwd)
    try:
        wait_ready(process, env["MIMO_PORT"], timeout)
    except BaseException:
        process.stop()
        raise
    return process


@dataclass
class Endpoints:
    http: str  # base URL
    grpc: str  # host:port


def serve_with_grpc(repository: Path, log: Path, **extra: str) -> tuple[Process, Endpoints]:
    """`python -m service` on `repository` with gRPC, both on free ports; `extra`: MIMO_*."""
    port, grpc_port = free_port(), free_port()
    env = service_env(repository, port, MIMO_GRPC_PORT=str(grpc_port), **extra)
    process = start_service(SERVICE, env, ROOT, log)
    return process, Endpoints(f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}")


def failed_start(env: dict[str, str], log: Path, timeout: float = 60) -> str:
    """Start `python -m service` expecting it to refuse to start: its output, once it exited
    with an error status."""
    process = Process(SERVICE, log, env=env, cwd=ROOT)
    try:
        wait_for("exit", lambda: process.popen.poll() is not None, timeout)
        assert process.popen.returncode != 0, process.output()
        return process.output()
    finally:
        process.stop()


# .ci/run sets it: there, a test that cannot run its containers fails instead of skipping.
REQUIRE_CONTAINERS = "REQUIRE_CONTAINERS"


def containers_unavailable(reason: str) -> NoReturn:
    """Skip, saying why; fail instead where REQUIRE_CONTAINERS is set (CI)."""
    if os.environ.get(REQUIRE_CONTAINERS):
        pytest.fail(f"{reason} ({REQUIRE_CONTAINERS} is set: containers must run here)")
    pytest.skip(reason)
