"""A service stopped under load, seen from its clients: many clients send `/predict` over fresh
connections while a load balancer watches readiness and stops sending once it fails, as one in
front of the service would. Every request sent must be answered: nothing in flight is lost.

Used on a process (tests/service/test_shutdown.py: SIGTERM) and on a container
(tests/deploy/test_containers.py: `docker compose stop`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx


@dataclass
class Traffic:
    """What the clients saw."""

    sending: bool = True  # the balancer's view: readiness still passing
    sent: int = 0
    answers: dict[int, int] = field(default_factory=dict)  # status -> count
    failures: list[str] = field(default_factory=list)  # exceptions of requests sent
    in_flight: int = 0
    in_flight_at_stop: int = -1
    unready_after_s: float | None = None  # from the stop to the first failed readiness check
    stopped_after_s: float | None = None  # from the stop to `stop()` returning


async def client_loop(url: str, pngs: list[bytes], traffic: Traffic) -> None:
    # A fresh connection per request, as from many clients: none waits on a keep-alive socket.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        i = 0
        while traffic.sending:
            png = pngs[i % len(pngs)]
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


async def balancer(url: str, traffic: Traffic, stopped_at: list[float]) -> None:
    """Stops the traffic once /v2/health/ready fails after the stop."""
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while traffic.sending:
            try:
                ready = await client.get("/v2/health/ready")
                failed = ready.status_code != 200
            except httpx.HTTPError:
                failed = True
            if failed and stopped_at:
                traffic.unready_after_s = time.monotonic() - stopped_at[0]
                traffic.sending = False
                return
            await asyncio.sleep(0.05)


async def stop_under_load(
    url: str,
    pngs: list[bytes],
    stop: Callable[[], object],
    traffic: Traffic,
    *,
    unready_within_s: float,
    answered_within_s: float,
    clients: int = 16,
) -> None:
    """Steady load for 2 s, then `stop()` (in a thread: it may block until the service is
    gone); returns once the balancer has stopped sending and every client has its answers."""
    stopped_at: list[float] = []
    tasks = [asyncio.create_task(client_loop(url, pngs, traffic)) for _ in range(clients)]
    watcher = asyncio.create_task(balancer(url, traffic, stopped_at))
    await asyncio.sleep(2.0)
    assert traffic.answers.get(200, 0) > 0, traffic
    traffic.in_flight_at_stop = traffic.in_flight
    stopped_at.append(time.monotonic())

    def timed_stop() -> None:
        stop()
        traffic.stopped_after_s = time.monotonic() - stopped_at[0]

    stopping = asyncio.create_task(asyncio.to_thread(timed_stop))
    await asyncio.wait_for(watcher, unready_within_s + 5)
    await asyncio.wait_for(asyncio.gather(*tasks), answered_within_s + 5)
    await asyncio.wait_for(stopping, answered_within_s + 30)
