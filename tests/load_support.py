"""A small load generator for the load and soak tests (tests/service/test_load.py).

Real clients over real sockets: httpx's async client sends `/predict` requests carrying real
PNG files of test-split digits to a `python -m service` on 127.0.0.1, a fixed number of them
at a fixed concurrency, and keeps one compact `Outcome` per request (status, latency, what the
answer said), so that 50,000 requests cost little memory. Also: the server's counters as its
/metrics shows them, its resident memory, percentiles, and a Prometheus scraping it.
"""

from __future__ import annotations

import asyncio
import io
import math
import os
import shutil
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from support import Process, free_port, wait_for

NO_PROMETHEUS = "Prometheus is not installed (apt-get install prometheus; make test tries to)"


@dataclass(frozen=True)
class Sample:
    """One real test digit as the PNG file a client sends, with its true label."""

    png: bytes
    label: int


def digit_samples(count: int) -> list[Sample]:
    """The first `count` digits of the sklearn digits' test split, as 8x8 grayscale PNGs."""
    from training.data import load_dataset

    test = load_dataset("digits", "test")
    out = []
    for pixels, label in zip(test.images[:count], test.labels[:count], strict=True):
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(pixels[0]), "L").save(buffer, "PNG")
        out.append(Sample(buffer.getvalue(), int(label)))
    return out


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request as the client saw it. `status` is None when no HTTP answer came back
    (connection refused, reset, timed out): `error` then says what happened instead."""

    sample: int  # index of the image sent
    sent: float  # time.monotonic() when the client started the request
    seconds: float  # until the whole answer was read
    status: int | None
    version: int | None = None  # 200: the version the answer names
    label: str | None = None  # 200: the predicted label
    index: int | None = None  # 200: the predicted class index
    problem: str | None = None  # anything wrong with the answer (None: nothing)
    error: str | None = None


def read_answer(sample: int, sent: float, seconds: float, answer: httpx.Response) -> Outcome:
    """What a /predict answer says, and what is wrong with it.

    200: a JSON prediction of one image. 429: a `Retry-After` header and a JSON body that is
    exactly `{"error": "..."}`. Any other status is a problem in itself."""
    status = answer.status_code
    try:
        body = answer.json()
    except ValueError:
        return Outcome(sample, sent, seconds, status, problem=f"not JSON: {answer.text[:200]!r}")
    if status == 200:
        try:
            (prediction,) = body["predictions"]
            return Outcome(
                sample,
                sent,
                seconds,
                status,
                version=body["version"],
                label=prediction["label"],
                index=prediction["index"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            return Outcome(sample, sent, seconds, status, problem=f"odd 200 ({exc!r}): {body}")
    problem = None
    if not (isinstance(body, dict) and list(body) == ["error"] and isinstance(body["error"], str)):
        problem = f"error body is not {{'error': str}}: {body!r}"[:300]
    elif status == 429 and not answer.headers.get("retry-after", "").isdigit():
        problem = f"429 without a Retry-After header: {dict(answer.headers)}"
    elif status != 429:
        problem = f"status {status}: {body['error'][:200]}"
    return Outcome(sample, sent, seconds, status, problem=problem)


async def send_predicts(
    url: str,
    samples: Sequence[Sample],
    total: int,
    concurrency: int,
    *,
    fresh_connections: bool = False,
    headers: dict[str, str] | None = None,
    timeout_s: float = 60.0,
    keep_going: Callable[[], bool] | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """`total` /predict requests (image i % len(samples) for the i-th) from `concurrency`
    clients at once, each sending its next request when its last one is answered.

    Each client is its own httpx.AsyncClient holding one keep-alive connection, as separate
    callers would (one client with a pool of 64 connections is the bottleneck itself: a
    third of the throughput and a tail of seconds on 2 cores). `fresh_connections`: every
    request opens its own connection (a burst of new callers). With `keep_going`, the clients
    stop once it turns false (then `total` is only an upper bound)."""
    limits = httpx.Limits(
        max_connections=1, max_keepalive_connections=0 if fresh_connections else 1
    )
    tls = ssl.create_default_context()  # unused on http://, built once instead of per client
    request_headers = {"Content-Type": "image/png", **(headers or {})}
    outcomes: list[Outcome] = []
    counter = iter(range(total))

    async def one(client: httpx.AsyncClient, i: int) -> Outcome:
        sample = i % len(samples)
        sent = time.monotonic()
        try:
            answer = await client.post(
                "/predict", content=samples[sample].png, headers=request_headers
            )
        except httpx.HTTPError as exc:
            return Outcome(sample, sent, time.monotonic() - sent, None, error=repr(exc))
        return read_answer(sample, sent, time.monotonic() - sent, answer)

    async def caller() -> None:
        async with httpx.AsyncClient(
            base_url=url, timeout=timeout_s, limits=limits, verify=tls
        ) as client:
            for i in counter:
                if keep_going is not None and not keep_going():
                    return
                outcome = await one(client, i)
                outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return outcomes


def run(coroutine: Awaitable[Any]) -> Any:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def metric_value(base_url: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` (a counter's `_total` included) whose labels
    include `labels`, as the service's /metrics shows them now; 0 when there is none."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def rss_bytes(pid: int) -> int:
    """Resident memory of process `pid` (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            assert unit == "kB", line
            return int(value) * 1024
    raise ValueError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time process `pid` has used so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Prometheus:
    process: Process
    url: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = answer.json()
        assert answer.status_code == 200 and body["status"] == "success", (expr, body)
        return body["data"]["result"]


def start_prometheus(service_port: int, folder: Path) -> Prometheus | None:
    """A real Prometheus scraping the service every second (None if it is not installed).

    Returns once it has scraped the service at least once."""
    if not shutil.which("prometheus"):
        return None
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "mimo-serve",
                "static_configs": [{"targets": [f"127.0.0.1:{service_port}"]}],
            }
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    web = free_port()
    process = Process(
        [
            "prometheus",
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{web}",
        ],
        folder / "prometheus.log",
        cwd=folder,
    )
    prometheus = Prometheus(process, f"http://127.0.0.1:{web}")
    try:
        wait_for(
            "prometheus ready",
            lambda: process.alive() and httpx.get(f"{prometheus.url}/-/ready").status_code == 200,
            30,
        )
        wait_for(
            "first scrape of the service",
            lambda: [r for r in prometheus.query("up") if r["value"][1] == "1"],
            30,
        )
    except BaseException:
        process.stop()
        raise
    return prometheus
