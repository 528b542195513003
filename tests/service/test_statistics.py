"""Triton's statistics extension: the pure reading of metric samples on hand-made samples,
then `python -m service` with two worker processes on real sockets, counted through /predict,
OIP REST and gRPC and read back with the real tritonclient."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from support import serve_with_grpc
from tritonclient.utils import InferenceServerException

from service.statistics import model_statistics

MODEL = {"model": "digits", "version": "1"}


def test_model_statistics_from_samples() -> None:
    samples = [
        ("mimo_model_requests_total", {**MODEL, "status": "200"}, 4.0),
        ("mimo_model_requests_total", {**MODEL, "status": "400"}, 1.0),
        ("mimo_model_requests_total", {**MODEL, "status": "429"}, 2.0),
        ("mimo_model_request_seconds_total", {**MODEL, "status": "200"}, 0.4),
        ("mimo_model_request_seconds_total", {**MODEL, "status": "400"}, 0.001),
        ("mimo_model_request_seconds_total", {**MODEL, "status": "429"}, 0.002),
        ("mimo_queue_duration_seconds_count", MODEL, 6.0),
        ("mimo_queue_duration_seconds_sum", MODEL, 0.06),
        ("mimo_batch_size_count", MODEL, 2.0),  # two passes of 6 images
        ("mimo_batch_size_sum", MODEL, 6.0),
        ("mimo_stage_seconds_total", {**MODEL, "stage": "input"}, 0.012),
        ("mimo_stage_seconds_total", {**MODEL, "stage": "infer"}, 0.3),
        ("mimo_stage_seconds_total", {**MODEL, "stage": "output"}, 0.018),
        ("mimo_last_inference_timestamp_seconds", MODEL, 1_800_000_000.25),
        # another version and another model: not this one's
        ("mimo_batch_size_sum", {"model": "digits", "version": "2"}, 100.0),
        ("mimo_batch_size_sum", {"model": "other", "version": "1"}, 100.0),
    ]
    stats = model_statistics(samples, "digits", "1")
    assert stats["name"] == "digits" and stats["version"] == "1"
    assert stats["last_inference"] == 1_800_000_000_250  # milliseconds
    assert stats["inference_count"] == 6 and stats["execution_count"] == 2
    infer = stats["inference_stats"]
    assert infer["success"] == {"count": 4, "ns": 400_000_000}
    assert infer["fail"] == {"count": 3, "ns": 3_000_000}
    assert infer["queue"] == {"count": 6, "ns": 60_000_000}
    assert infer["compute_input"] == {"count": 6, "ns": 12_000_000}
    assert infer["compute_infer"] == {"count": 6, "ns": 300_000_000}
    assert infer["compute_output"] == {"count": 6, "ns": 18_000_000}
    assert infer["cache_hit"] == infer["cache_miss"] == {"count": 0, "ns": 0}


def test_a_model_never_called_has_zeros() -> None:
    stats = model_statistics([], "digits", "1")
    assert stats["last_inference"] == stats["inference_count"] == stats["execution_count"] == 0
    assert all(d == {"count": 0, "ns": 0} for d in stats["inference_stats"].values())


@pytest.fixture(scope="module")
def server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of HTTP, then of gRPC: two worker processes, each counting its own share."""
    log = tmp_path_factory.mktemp("stats-server") / "server.log"
    process, where = serve_with_grpc(model_repository, log, MIMO_WORKERS="2")
    try:
        yield f"{where.http.removeprefix('http://')} {where.grpc}"
    finally:
        process.stop()


def as_ints(value: Any, key: str = "") -> Any:
    """protobuf's JSON of the gRPC answer (64-bit integers as strings, zeros left out), as
    the REST answer writes it."""
    if isinstance(value, dict):
        return {k: as_ints(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [as_ints(v) for v in value]
    return value if key in ("name", "version") else int(value)


def test_counts_add_up_over_workers_and_protocols(
    server: str, digits: tuple[np.ndarray, np.ndarray], digit_pngs: list[tuple[bytes, int]]
) -> None:
    http, grpc = server.split()
    rest = triton_http.InferenceServerClient(http)
    grpc_client = triton_grpc.InferenceServerClient(grpc)
    before = rest.get_inference_statistics("digits")["model_stats"][0]
    assert before["inference_count"] == 0 and before["last_inference"] == 0
    started_ms = time.time() * 1000
    images, _ = digits

    def predict(i: int) -> int:
        # a new connection each: the kernel spreads them over both workers
        png = digit_pngs[i % len(digit_pngs)][0]
        return httpx.post(
            f"http://{http}/predict", content=png, headers={"content-type": "image/png"}
        ).status_code

    with ThreadPoolExecutor(4) as pool:
        assert set(pool.map(predict, range(24))) == {200}
    batch = images[:5].astype(np.float32) / 255.0  # one request of 5 images
    tensor = triton_http.InferInput("images", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    rest.infer("digits", [tensor])
    for image in images[:3]:
        one = triton_grpc.InferInput("images", [1, 1, 8, 8], "UINT8")
        one.set_data_from_numpy(image[None])
        grpc_client.infer("digits", [one])
    # a failed request: pixels out of range
    bad = triton_http.InferInput("images", [1, 1, 8, 8], "FP32")
    bad.set_data_from_numpy(np.full((1, 1, 8, 8), 7.0, np.float32))
    with pytest.raises(InferenceServerException, match=r"\[0, 1\]"):
        rest.infer("digits", [bad])

    # A lone image's metrics are recorded on its worker's next loop turn, after its answer
    # left (service/batching.py): on a loaded machine that turn can come after the next call.
    deadline = time.monotonic() + 5
    while True:
        stats = rest.get_inference_statistics("digits")["model_stats"][0]
        if stats["inference_count"] >= 24 + 5 + 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert stats["name"] == "digits" and stats["version"] == "1"
    assert stats["inference_count"] == 24 + 5 + 3  # images
    assert 1 <= stats["execution_count"] <= 32  # forward passes
    assert started_ms - 1000 <= stats["last_inference"] <= time.time() * 1000 + 1000
    infer = stats["inference_stats"]
    assert infer["success"]["count"] == 24 + 1 + 3  # requests
    assert infer["fail"]["count"] == 1 and infer["fail"]["ns"] > 0
    assert infer["queue"]["count"] == 32
    for stage in ("compute_input", "compute_infer", "compute_output"):
        assert infer[stage]["count"] == 32 and infer[stage]["ns"] > 0, stage
    # a request's time holds its stages: the mean success is at least the mean compute
    mean = {k: v["ns"] / max(v["count"], 1) for k, v in infer.items()}
    assert mean["success"] >= mean["compute_infer"] > 0
    # the same figures over gRPC, for the version, and in the list of every model
    assert rest.get_inference_statistics("digits", "1")["model_stats"] == [stats]
    assert rest.get_inference_statistics()["model_stats"] == [stats]
    grpc_stats = grpc_client.get_inference_statistics("digits", as_json=True)["model_stats"]
    expected = {k: v for k, v in stats.items() if v not in ([], 0)}
    expected["inference_stats"] = {k: {n: c for n, c in v.items() if c} for k, v in infer.items()}
    assert as_ints(grpc_stats) == [expected]
    assert as_ints(grpc_client.get_inference_statistics(as_json=True)["model_stats"]) == [expected]


def test_unknown_model_and_version(server: str) -> None:
    http, grpc = server.split()
    for path, why in (
        ("/v2/models/nope/stats", "unknown model 'nope'"),
        ("/v2/models/digits/versions/3/stats", "has no version 3"),
    ):
        response = httpx.get(f"http://{http}{path}")
        assert response.status_code == 404 and why in response.json()["error"], path
    client = triton_grpc.InferenceServerClient(grpc)
    with pytest.raises(InferenceServerException, match="unknown model 'nope'") as error:
        client.get_inference_statistics("nope")
    assert error.value.status() == "StatusCode.NOT_FOUND"
