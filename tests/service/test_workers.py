"""Two uvicorn workers: the Prometheus totals aggregate both processes exactly, on every scrape."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from PIL import Image
from support import (
    ROOT,
    SERVICE,
    Process,
    failed_start,
    free_port,
    service_env,
    wait_for,
    wait_ready,
)

DEADLINE_S = 120  # for the whole module: start-up, traffic and scrapes
PID_FILE = re.compile(r"_(\d+)\.db$")
SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def worker_pids(folder: Path) -> set[int]:
    """PIDs that wrote prometheus multiprocess files (every worker sets mimo_model_info)."""
    return {int(m.group(1)) for p in folder.glob("*.db") if (m := PID_FILE.search(p.name))}


def parent_of(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"^PPid:\s*(\d+)", status, re.MULTILINE)
    return int(found.group(1)) if found else None


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    metrics_dir: Path
    log: Path
    grpc: str  # host:port, shared by both workers


@pytest.fixture(scope="module")
def two_workers(
    model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("workers")
    metrics_dir = tmp / "prometheus"
    log = tmp / "server.log"
    port, grpc_port = free_port(), free_port()
    env = service_env(
        model_repository,
        port,
        MIMO_WORKERS="2",
        MIMO_METRICS_DIR=str(metrics_dir),
        MIMO_GRPC_PORT=str(grpc_port),
    )
    process = Process(SERVICE, log, env=env, cwd=ROOT)
    server = Server(
        f"http://127.0.0.1:{port}", process.popen, metrics_dir, log, f"127.0.0.1:{grpc_port}"
    )
    children: set[int] = set()

    def both_workers_started() -> bool:
        # Ready once both workers finished their start-up (each has set mimo_model_info).
        children.clear()
        children.update(worker_pids(metrics_dir) if metrics_dir.is_dir() else ())
        return len(children) == 2

    try:
        wait_ready(process, port, check=both_workers_started, what="two workers ready")
        yield server
    finally:
        process.stop()
        for pid in children:  # the workers go with their supervisor; make sure of it
            if parent_of(pid) == server.process.pid:
                os.kill(pid, signal.SIGKILL)


def digit_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image[0], mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


async def send_predicts(url: str, pngs: list[bytes]) -> list[int]:
    """Every PNG as its own /predict, 8 connections at a time (spread over both workers)."""
    limits = httpx.Limits(max_connections=8, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        gate = asyncio.Semaphore(8)

        async def one(png: bytes) -> int:
            async with gate:
                answer = await client.post(
                    "/predict", content=png, headers={"Content-Type": "image/png"}
                )
                return answer.status_code

        return await asyncio.gather(*(one(p) for p in pngs))


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        found = SAMPLE.match(line)
        if found and found["name"] == name:
            labels = dict(LABEL.findall(found["labels"] or ""))
            out.append((labels, float(found["value"])))
    return out


@pytest.mark.slow
def test_metrics_aggregate_two_workers(two_workers: Server) -> None:
    started = time.monotonic()
    url = two_workers.url

    # Two distinct worker processes, both children of the `python -m service` supervisor.
    pids = worker_pids(two_workers.metrics_dir)
    assert len(pids) == 2, sorted(p.name for p in two_workers.metrics_dir.iterdir())
    assert two_workers.process.pid not in pids
    assert {parent_of(pid) for pid in pids} == {two_workers.process.pid}

    from training.data import load_dataset

    images = load_dataset("digits", "test").images
    pngs = [digit_png(images[i]) for i in range(40)]
    statuses = asyncio.run(send_predicts(url, pngs))
    assert statuses == [200] * 40

    for i in range(10):  # each over a fresh connection: either worker may answer
        with triton.InferenceServerClient(url.removeprefix("http://")) as client:
            tensor = triton.InferInput("images", [1, 1, 8, 8], "UINT8")
            tensor.set_data_from_numpy(images[40 + i : 41 + i])
            result = client.infer("digits", [tensor])
            assert result.as_numpy("probabilities").shape == (1, 10)

    for _ in range(6):  # fresh connections: the scrapes land on either worker
        answer = httpx.get(f"{url}/metrics", timeout=10)
        assert answer.status_code == 200
        text = answer.text
        predict_ok = [
            v
            for labels, v in samples(text, "mimo_requests_total")
            if labels.get("endpoint") == "/predict" and labels.get("status") == "200"
        ]
        assert sum(predict_ok) == 40, predict_ok
        mi_count = [
            v
            for labels, v in samples(text, "mimo_mutual_information_nats_count")
            if labels.get("model") == "digits"
        ]
        assert sum(mi_count) == 50, mi_count
        predictions = [v for _, v in samples(text, "mimo_predictions_total")]
        assert sum(predictions) == 50, predictions
        info = samples(text, "mimo_model_info")
        assert info, "mimo_model_info missing"
        assert {(labels["model"], labels["version"]) for labels, _ in info} == {("digits", "1")}
        assert all(v == 1 for _, v in info)
        # Aggregated, not one row per process.
        assert all("pid" not in labels for labels, _ in info)
        ok_requests = [
            v
            for labels, v in samples(text, "mimo_model_requests_total")
            if labels.get("status") == "200"
        ]
        assert sum(ok_requests) == 50, ok_requests

    # No worker died and was replaced along the way.
    assert worker_pids(two_workers.metrics_dir) == pids
    assert time.monotonic() - started < DEADLINE_S


def established_per_worker(pids: set[int], port: int) -> dict[int, int]:
    """How many accepted connections on `port` each worker holds (from /proc; IPv4 only,
    as the fixture's 127.0.0.1: a server on `::` would list them in /proc/net/tcp6)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # ESTABLISHED
            inodes.add(f"socket:[{fields[9]}]")
    counts = {}
    for pid in pids:
        counts[pid] = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):  # closed since the listing
                counts[pid] += os.readlink(fd) in inodes
    return counts


@pytest.mark.slow
def test_keep_alive_connections_opened_together_spread_over_both_workers(
    two_workers: Server,
) -> None:
    """A pool of keep-alive connections opened at once (a proxy, a load generator) lands on
    both workers: each listens on its own socket (service/listen.py). With one shared socket
    the worker that woke first took them all."""
    # live workers only: a killed one's metrics files stay behind
    pids = {
        p for p in worker_pids(two_workers.metrics_dir) if parent_of(p) == two_workers.process.pid
    }
    port = int(two_workers.url.rsplit(":", 1)[1])
    clients = [httpx.Client(base_url=two_workers.url, timeout=10) for _ in range(16)]
    try:
        for client in clients:
            assert client.get("/v2/health/ready").status_code == 200
        counts = established_per_worker(pids, port)
        assert sum(counts.values()) == 16, counts
        # hashed by the kernel: all 16 on one worker has probability 2 ** -15
        assert min(counts.values()) >= 1, counts
        assert two_workers.process.pid not in counts
    finally:
        for client in clients:
            client.close()


@pytest.mark.slow
def test_grpc_port_shared_by_both_workers(two_workers: Server) -> None:
    """Both workers listen on the one gRPC port (SO_REUSEPORT); the totals add up as for HTTP.

    Runs after the HTTP test above, whose 50 predictions are already counted.
    """
    import tritonclient.grpc as triton_grpc

    from training.data import load_dataset

    images = load_dataset("digits", "test").images
    for i in range(10):  # a fresh connection each: the kernel spreads them over the workers
        with triton_grpc.InferenceServerClient(two_workers.grpc) as client:
            tensor = triton_grpc.InferInput("images", [1, 1, 8, 8], "UINT8")
            tensor.set_data_from_numpy(images[i : i + 1])
            assert client.infer("digits", [tensor]).as_numpy("probabilities").shape == (1, 10)
    for _ in range(4):
        text = httpx.get(f"{two_workers.url}/metrics", timeout=10).text
        grpc_ok = [
            v
            for labels, v in samples(text, "mimo_requests_total")
            if labels.get("endpoint") == "grpc:ModelInfer" and labels.get("status") == "200"
        ]
        assert sum(grpc_ok) == 10, grpc_ok
        mi_count = [v for _, v in samples(text, "mimo_mutual_information_nats_count")]
        assert sum(mi_count) == 60, mi_count


@pytest.mark.slow
def test_a_dead_worker_leaves_no_stale_gauges(two_workers: Server) -> None:
    """SIGKILL one worker: uvicorn starts another, and the dead one's live gauges (queue
    capacity, depth, in flight) stop adding up; its counters stay in the totals. Runs last:
    it replaces a worker of the module's server."""

    def capacity() -> float:
        text = httpx.get(f"{two_workers.url}/metrics", timeout=10).text
        return sum(v for _, v in samples(text, "mimo_queue_capacity"))

    def total_predictions() -> float:
        text = httpx.get(f"{two_workers.url}/metrics", timeout=10).text
        return sum(v for _, v in samples(text, "mimo_predictions_total"))

    before = worker_pids(two_workers.metrics_dir)
    assert capacity() == 2 * 256  # one full queue per worker
    counted = total_predictions()
    victim = min(before)
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        now = {p for p in worker_pids(two_workers.metrics_dir) if parent_of(p) is not None}
        return victim not in now and len(now - before) == 1

    wait_for("a new worker", replaced, 60)
    # Once the new worker has started up, two queues: the dead one's no longer counts (it
    # would be 3 x 256 if its last value stayed summed).
    wait_for("the new worker's queue", lambda: capacity() == 2 * 256, 60)
    for _ in range(6):  # fresh connections: either worker answers the scrape
        assert capacity() == 2 * 256
        assert total_predictions() == counted
    assert not list(two_workers.metrics_dir.glob(f"gauge_live*_{victim}.db"))


@pytest.mark.slow
def test_a_second_server_on_the_port_fails_loudly(
    two_workers: Server, model_repository: Path, tmp_path: Path
) -> None:
    """Workers listen with SO_REUSEPORT, but a second `python -m service` on the same port
    must not join them (it would take half the connections): it stops with an error."""
    port = int(two_workers.url.rsplit(":", 1)[1])
    env = service_env(model_repository, port, MIMO_WORKERS="2")
    assert f"cannot listen on 127.0.0.1:{port}" in failed_start(env, tmp_path / "second.log")


def test_two_servers_on_one_host_keep_their_metrics_apart(
    model_repository: Path, tmp_path: Path, digit_pngs: list[tuple[bytes, int]]
) -> None:
    """Two multi-worker servers on two ports, default metrics folders: each wipes and counts
    only its own (one folder per port), neither the other's requests, and removes it at the
    end."""
    started = []
    try:
        for name in ("a", "b"):
            port = free_port()
            env = service_env(model_repository, port, MIMO_WORKERS="2", TMPDIR=str(tmp_path))
            process = Process(SERVICE, tmp_path / f"{name}.log", env=env, cwd=ROOT)
            started.append((process, port))
            wait_ready(process, port)
        for (_, port), count in zip(started, (3, 1), strict=True):
            for png, _ in digit_pngs[:count]:
                answer = httpx.post(
                    f"http://127.0.0.1:{port}/predict",
                    content=png,
                    headers={"content-type": "image/png"},
                )
                assert answer.status_code == 200, answer.text
        for (_, port), count in zip(started, (3, 1), strict=True):
            text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            found = samples(text, "mimo_model_requests_total")
            assert sum(v for labels, v in found if labels.get("status") == "200") == count
            assert (tmp_path / f"mimo-prometheus-{port}").is_dir()
        for process, port in started:  # a server that ends takes its folder with it
            process.stop()
            assert process.popen.returncode == 0, process.output()
            assert not (tmp_path / f"mimo-prometheus-{port}").exists()
    finally:
        for process, _ in started:
            process.stop()
