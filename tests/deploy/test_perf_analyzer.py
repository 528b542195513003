"""Triton's own load generator, perf_analyzer 2.60 (PyPI's wheel, unchanged), against the
service over HTTP and gRPC: it asks for the model's configuration and statistics (Triton's
extensions) before it sends a request, then reports the client's and the server's figures.

Its program needs glibc 2.38, newer than this Debian's: it runs in a Debian 13 container that
podman builds from Debian's packages (benchmarks/podman.py). Skipped, saying why, where no
container can run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton_http
from support import (
    ROOT,
    SERVICE,
    containers_unavailable,
    free_port,
    service_env,
    start_service,
)

sys.path.insert(0, str(ROOT / "benchmarks"))
import perf_analyzer
import podman

NO_CONTAINERS = "NO CONTAINER CAN RUN HERE, perf_analyzer untested"


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory) -> str:
    """What perf_analyzer's container is: its image built (from Debian's packages, once per
    machine) and the program fetched from PyPI (once per checkout)."""
    if why := podman.unusable():
        containers_unavailable(f"{NO_CONTAINERS}: {why}")
    log = tmp_path_factory.mktemp("perf-analyzer-image") / "mmdebstrap.log"
    try:
        built = podman.ensure_image(perf_analyzer.IMAGE, log)
        perf_analyzer.fetch()
    except (podman.PodmanError, subprocess.SubprocessError, OSError) as exc:
        containers_unavailable(f"{NO_CONTAINERS}: {exc}")
    what = f"{perf_analyzer.IMAGE.what}{' (built now)' if built else ''}"
    print(f"\nperf_analyzer {perf_analyzer.VERSION} in {what}")
    return what


@pytest.fixture(scope="module")
def server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of HTTP, then of gRPC; two workers."""
    port, grpc_port = free_port(), free_port()
    env = service_env(model_repository, port, MIMO_GRPC_PORT=str(grpc_port), MIMO_WORKERS="2")
    process = start_service(SERVICE, env, ROOT, tmp_path_factory.mktemp("pa-server") / "server.log")
    try:
        yield f"127.0.0.1:{port} 127.0.0.1:{grpc_port}"
    finally:
        process.stop()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_perf_analyzer_runs_unchanged(
    container: str,
    server: str,
    protocol: str,
    digits: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
) -> None:
    http, grpc = server.split()
    images = digits[0].astype(np.float32) / 255.0  # 20 real digits
    data = tmp_path / "data.json"
    data.write_text(json.dumps(perf_analyzer.input_data(images)))
    before = triton_http.InferenceServerClient(http).get_inference_statistics("digits")
    run = perf_analyzer.run(
        http if protocol == "http" else grpc,
        protocol,
        "digits",
        concurrency=2,
        data=data,
        seconds=0.5,
        # a shared 2-core machine: stable within 50 % is stable enough to have run
        extra=("--stability-percentage", "50", "--max-trials", "20"),
    )
    assert "error" not in run.output.lower(), run.output
    assert perf_analyzer.THROUGHPUT.search(run.output), run.output
    assert run.throughput > 0
    assert run.latency_ms("p99") >= run.latency_ms("p50") > 0
    # the server's side, from the statistics extension
    assert "Server:" in run.output and "Inference count:" in run.output, run.output
    assert float(run.rows[0]["Server Compute Infer"]) > 0
    after = triton_http.InferenceServerClient(http).get_inference_statistics("digits")
    served = (
        after["model_stats"][0]["inference_count"] - before["model_stats"][0]["inference_count"]
    )
    assert served > 0
