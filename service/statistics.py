"""Triton's statistics extension, read from the Prometheus metrics the stages already record
(service/metrics.py): nothing more is counted on the hot path, and with several worker
processes the figures add up over them, as /metrics does.

What each figure counts here:
- `inference_count`: images inferred; `execution_count`: forward passes.
- `success`, `fail`: inference requests (REST, gRPC and /predict) and their time from arrival
  to the answer computed.
- `queue`, `compute_input`, `compute_infer`, `compute_output`: per image, as Triton counts per
  request (a batch's time counts once for each image in it); with one image per request
  (perf_analyzer's default) an image is a request. Input is arrival to the batching queue
  (the body, decoding, checks); infer is tiling and the forward pass; output is the softmax,
  mean and uncertainty.
- No response cache (`cache_hit`, `cache_miss` stay 0), no `batch_stats` or `memory_usage`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from service import metrics
from service.registry import ServedModel

Sample = tuple[str, dict[str, str], float]
FAMILIES = (
    metrics.MODEL_REQUESTS,
    metrics.MODEL_REQUEST_SECONDS,
    metrics.QUEUE_DURATION,
    metrics.BATCH_SIZE,
    metrics.STAGE_SECONDS,
    metrics.LAST_INFERENCE,
)
NO_CACHE = {"count": 0, "ns": 0}


def named(family: Counter | Gauge | Histogram, suffix: str = "") -> str:
    """The name of a sample of `family` (`suffix`: "_total", "_sum", "_count", ...)."""
    return family.describe()[0].name + suffix


def duration(count: float, seconds: float) -> dict[str, int]:
    return {"count": round(count), "ns": round(seconds * 1e9)}


def model_statistics(found: Iterable[Sample], name: str, version: str) -> dict[str, Any]:
    """One model version's statistics from metric samples (`metrics.samples(*FAMILIES)`)."""
    mine = [
        (sample, labels, value)
        for sample, labels, value in found
        if labels.get("model") == name and labels.get("version") == version
    ]

    def total(sample: str, keep: Callable[[dict[str, str]], bool] = lambda labels: True) -> float:
        return sum(value for s, labels, value in mine if s == sample and keep(labels))

    def status(ok: bool) -> Callable[[dict[str, str]], bool]:
        return lambda labels: (labels.get("status") == "200") == ok

    def stage(name: str) -> Callable[[dict[str, str]], bool]:
        return lambda labels: labels.get("stage") == name

    images = total(named(metrics.BATCH_SIZE, "_sum"))
    return {
        "name": name,
        "version": version,
        "last_inference": round(total(named(metrics.LAST_INFERENCE)) * 1000),
        "inference_count": round(images),
        "execution_count": round(total(named(metrics.BATCH_SIZE, "_count"))),
        "inference_stats": {
            "success": duration(
                total(named(metrics.MODEL_REQUESTS, "_total"), status(True)),
                total(named(metrics.MODEL_REQUEST_SECONDS, "_total"), status(True)),
            ),
            "fail": duration(
                total(named(metrics.MODEL_REQUESTS, "_total"), status(False)),
                total(named(metrics.MODEL_REQUEST_SECONDS, "_total"), status(False)),
            ),
            "queue": duration(
                total(named(metrics.QUEUE_DURATION, "_count")),
                total(named(metrics.QUEUE_DURATION, "_sum")),
            ),
            **{
                f"compute_{name}": duration(
                    images, total(named(metrics.STAGE_SECONDS, "_total"), stage(name))
                )
                for name in metrics.STAGES
            },
            "cache_hit": NO_CACHE,
            "cache_miss": NO_CACHE,
        },
        "batch_stats": [],
        "memory_usage": [],
    }


def statistics(models: Iterable[ServedModel]) -> dict[str, Any]:
    """The extension's answer for `models`, in name and version order."""
    found = metrics.samples(*FAMILIES)
    return {
        "model_stats": [
            model_statistics(found, m.name, str(m.version))
            for m in sorted(models, key=lambda m: (m.name, m.version))
        ]
    }
