"""SIGTERM under load: readiness turns false first, every request in flight is answered, and
the process exits within the configured grace period; with one worker and with two."""

from __future__ import annotations

import asyncio
import io
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from support import ROOT, SERVICE, free_port, service_env, start_service

DELAY_S = 1.5  # MIMO_SHUTDOWN_DELAY_S
GRACE_S = 10.0  # MIMO_SHUTDOWN_GRACE_S


def digit_pngs(count: int) -> list[tuple[bytes, int]]:
    from training.data import load_dataset

    test = load_dataset("digits", "test")
    out = []
    for pixels, label in zip(test.images[:count], test.labels[:count], strict=True):
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(pixels[0]), "L").save(buffer, "PNG")
        out.append((buffer.getvalue(), int(label)))
    return out


@dataclass
class Traffic:
    """What the clients saw, as a load balancer in front of the service would send it."""

    sending: bool = True  # the balancer's view: readiness still passing
    sent: int = 0
    answers: dict[int, int] = field(default_factory=dict)  # status -> count
    failures: list[str] = field(default_factory=list)  # exceptions of requests sent
    in_flight: int = 0
    in_flight_at_sigterm: int = -1
    unready_after_s: float | None = None  # from SIGTERM to the first failed readiness check


async def client_loop(url: str, pngs: list[tuple[bytes, int]], traffic: Traffic) -> None:
    # A fresh connection per request, as from many clients: none waits on a keep-alive socket.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        i = 0
        while traffic.sending:
            png, _ = pngs[i % len(pngs)]
            i += 1
            traffic.sent += 1
            traffic.in_flight += 1
            try:
                answer = await client.post(
                    "/predict", content=png, headers={"content-type": "image/png"}
                )
                traffic.answers[answer.status_code] = traffic.answers.get(answer.status_code, 0) + 1
            except httpx.HTTPError as exc:
                traffic.failures.append(repr(exc))
            finally:
                traffic.in_flight -= 1


async def balancer(url: str, traffic: Traffic, sigterm_at: list[float]) -> None:
    """Stops the traffic once /v2/health/ready fails, as a load balancer would."""
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while traffic.sending:
            try:
                ready = await client.get("/v2/health/ready")
                failed = ready.status_code != 200
            except httpx.HTTPError:
                failed = True
            if failed and sigterm_at:
                traffic.unready_after_s = time.monotonic() - sigterm_at[0]
                traffic.sending = False
                return
            await asyncio.sleep(0.05)


async def shut_down_under_load(url: str, pid: int, traffic: Traffic) -> None:
    pngs = digit_pngs(20)
    sigterm_at: list[float] = []
    clients = [asyncio.create_task(client_loop(url, pngs, traffic)) for _ in range(16)]
    watcher = asyncio.create_task(balancer(url, traffic, sigterm_at))
    await asyncio.sleep(2.0)  # steady load first
    assert traffic.answers.get(200, 0) > 0, traffic
    traffic.in_flight_at_sigterm = traffic.in_flight
    sigterm_at.append(time.monotonic())
    import os

    os.kill(pid, signal.SIGTERM)
    await asyncio.wait_for(watcher, DELAY_S + 5)
    await asyncio.wait_for(asyncio.gather(*clients), GRACE_S + 5)


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
        f"{traffic.in_flight_at_sigterm} in flight at SIGTERM, readiness failed after "
        f"{traffic.unready_after_s:.2f} s, exit after {exited_after:.2f} s"
    )
    # Readiness failed first, while the service still answered (the delay), ...
    assert traffic.unready_after_s is not None and traffic.unready_after_s < DELAY_S, log[-3000:]
    # ... every request sent was answered, and answered well: nothing in flight was lost.
    assert traffic.failures == [], (traffic.failures[:5], log)
    assert traffic.answers == {200: traffic.sent}, log
    assert traffic.in_flight_at_sigterm > 0
    # ... and the process ended within the delay and the grace period.
    # (uvicorn ends by raising the SIGTERM it deferred: the status of a process it ended)
    assert process.popen.returncode in (0, -signal.SIGTERM), log[-3000:]
    assert exited_after < DELAY_S + GRACE_S, log[-3000:]
    assert log.count("not ready any more; draining starts") == workers, log[-3000:]
