"""SIGTERM under load: readiness turns false first, every request in flight is answered, and
the process exits within the configured grace period; with one worker and with two."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from drain_support import Traffic, stop_under_load
from load_support import digit_samples
from support import ROOT, SERVICE, free_port, service_env, start_service

DELAY_S = 1.5  # MIMO_SHUTDOWN_DELAY_S
GRACE_S = 10.0  # MIMO_SHUTDOWN_GRACE_S


async def shut_down_under_load(url: str, pid: int, traffic: Traffic) -> None:
    await stop_under_load(
        url,
        [sample.png for sample in digit_samples(20)],
        lambda: os.kill(pid, signal.SIGTERM),
        traffic,
        unready_within_s=DELAY_S,
        answered_within_s=GRACE_S,
    )


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_under_load(model_repository: Path, tmp_path: Path, workers: int) -> None:
    port = free_port()
    env = service_env(
        model_repository,
        port,
        MIMO_WORKERS=str(workers),
        MIMO_METRICS_DIR=str(tmp_path / "prometheus"),
        MIMO_SHUTDOWN_DELAY_S=str(DELAY_S),
        MIMO_SHUTDOWN_GRACE_S=str(GRACE_S),
        MIMO_MAX_QUEUE_DELAY_MS="20",  # requests wait in the batcher: more of them in flight
        MIMO_LOG_LEVEL="info",
    )
    process = start_service(SERVICE, env, ROOT, tmp_path / "server.log")
    traffic = Traffic()
    try:
        started = time.monotonic()
        asyncio.run(shut_down_under_load(f"http://127.0.0.1:{port}", process.popen.pid, traffic))
        process.popen.wait(timeout=DELAY_S + GRACE_S + 10)
        exited_after = time.monotonic() - started - 2.0
    finally:
        process.stop()
    log = process.log.read_text(errors="replace")
    print(
        f"workers={workers}: {traffic.sent} requests, answers {traffic.answers}, "
        f"{traffic.in_flight_at_stop} in flight at SIGTERM, readiness failed after "
        f"{traffic.unready_after_s:.2f} s, exit after {exited_after:.2f} s"
    )
    # Readiness failed first, while the service still answered (the delay), ...
    assert traffic.unready_after_s is not None and traffic.unready_after_s < DELAY_S, log[-3000:]
    # ... every request sent was answered, and answered well: nothing in flight was lost.
    assert traffic.failures == [], (traffic.failures[:5], log)
    assert traffic.answers == {200: traffic.sent}, log
    assert traffic.in_flight_at_stop > 0
    # ... and the process ended within the delay and the grace period.
    # (uvicorn ends by raising the SIGTERM it deferred: the status of a process it ended)
    assert process.popen.returncode in (0, -signal.SIGTERM), log[-3000:]
    assert exited_after < DELAY_S + GRACE_S, log[-3000:]
    assert log.count("not ready any more; draining starts") == workers, log[-3000:]
