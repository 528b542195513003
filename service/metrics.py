"""Every Prometheus metric of the service, declared once.

Names carry the `mimo_` prefix and base units; labels stay low-cardinality (model, version,
endpoint, status code, class label of a fixed label set). With several uvicorn workers,
prometheus-client's multiprocess mode is on (PROMETHEUS_MULTIPROC_DIR set before import, see
service/__main__.py) and the gauges say how their per-process values combine.
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from service.procs import stat_fields, zombie

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Nats; mutual information is bounded by log M (log 4 = 1.39), entropy by log K (log 10 = 2.30).
INFORMATION_BUCKETS = (0.0001, 0.001, 0.003, 0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5)
# Fraction of head pairs that disagree: 0, 1/6, 1/3, 1/2, 2/3, 1 for up to 4 heads.
DISAGREEMENT_BUCKETS = (0.0, 0.17, 0.34, 0.5, 0.67, 0.84, 1.0)

MODEL = ("model", "version")

REQUESTS = Counter(
    "mimo_requests_total", "HTTP requests by endpoint and status code", ["endpoint", "status"]
)
MODEL_REQUESTS = Counter(
    "mimo_model_requests_total", "Inference requests by model and outcome", [*MODEL, "status"]
)
REQUEST_DURATION = Histogram(
    "mimo_request_duration_seconds",
    "Wall time of an HTTP request, reading the body to the last byte of the answer",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
QUEUE_DURATION = Histogram(
    "mimo_queue_duration_seconds",
    "Time an image waited in the batching queue",
    MODEL,
    buckets=LATENCY_BUCKETS,
)
INFERENCE_DURATION = Histogram(
    "mimo_inference_duration_seconds",
    "Time of one forward pass (session.run) for a whole batch",
    MODEL,
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram("mimo_batch_size", "Images per forward pass", MODEL, buckets=BATCH_BUCKETS)
QUEUE_DEPTH = Gauge(
    "mimo_queue_depth", "Images waiting in the batching queue", MODEL, multiprocess_mode="livesum"
)
QUEUE_CAPACITY = Gauge(
    "mimo_queue_capacity",
    "Images the batching queue holds before answering 429 (MIMO_MAX_QUEUE_SIZE)",
    MODEL,
    multiprocess_mode="livesum",
)
IN_FLIGHT = Gauge(
    "mimo_requests_in_flight", "HTTP requests being served", multiprocess_mode="livesum"
)
MUTUAL_INFORMATION = Histogram(
    "mimo_mutual_information_nats",
    "Mutual information between the prediction and the heads (epistemic uncertainty)",
    MODEL,
    buckets=INFORMATION_BUCKETS,
)
PREDICTIVE_ENTROPY = Histogram(
    "mimo_predictive_entropy_nats",
    "Entropy of the ensemble mean prediction (total uncertainty)",
    MODEL,
    buckets=INFORMATION_BUCKETS,
)
DISAGREEMENT = Histogram(
    "mimo_disagreement_ratio",
    "Fraction of head pairs whose top classes differ",
    MODEL,
    buckets=DISAGREEMENT_BUCKETS,
)
PREDICTIONS = Counter(
    "mimo_predictions_total", "Predictions by predicted class label", [*MODEL, "label"]
)
UNCERTAIN = Counter(
    "mimo_uncertain_predictions_total",
    "Predictions flagged uncertain (the model's flag measure above its threshold)",
    MODEL,
)
# Triton's statistics extension (service/statistics.py) reads these beside the histograms
# above; counters, so that worker processes add up as every other metric does.
MODEL_REQUEST_SECONDS = Counter(
    "mimo_model_request_seconds",
    "Seconds of inference requests, arrival to the answer computed, summed by outcome "
    "(their number: mimo_model_requests_total)",
    [*MODEL, "status"],
)
STAGES = ("input", "infer", "output")
STAGE_SECONDS = Counter(
    "mimo_stage_seconds",
    "Seconds of each stage, summed over the images it served (a batch's time counts once for "
    "each image in it): input = arrival to the batching queue (body, decoding, checks), "
    "infer = tiling and the forward pass, output = softmax, mean and uncertainty",
    [*MODEL, "stage"],
)
LAST_INFERENCE = Gauge(
    "mimo_last_inference_timestamp_seconds",
    "Unix time of the model's last forward pass",
    MODEL,
    multiprocess_mode="max",
)
MODEL_INFO = Gauge(
    "mimo_model_info",
    "1 for each served model version, with its ensemble size and execution provider",
    [*MODEL, "ensemble_size", "provider"],
    multiprocess_mode="max",
)


def start_series(model: str, version: str, class_names: Sequence[str]) -> None:
    """A served version's prediction counters and uncertainty histograms, created at zero
    before its first request: Prometheus' rate() counts only what a series gains after its
    first scrape, so a series born during a burst loses the burst (a new version's uncertain
    share, and the alerts on it, would be wrong for its first minutes). Costs K + 4 series per
    loaded version, as its traffic would; they stay until the process ends, as others do."""
    for metric in (UNCERTAIN, MUTUAL_INFORMATION, PREDICTIVE_ENTROPY, DISAGREEMENT):
        metric.labels(model, version)
    for name in class_names:
        PREDICTIONS.labels(model, version, name)


_Metric = TypeVar("_Metric", Counter, Gauge, Histogram)


@functools.cache
def child(metric: _Metric, *labels: str) -> _Metric:
    """`metric.labels(*labels)`, looked up once per series: labels() takes a lock and costs
    ~2 us, and the hot path asks for the same few series on every request. Safe because no
    series is ever removed, and the label values are few (low cardinality)."""
    return metric.labels(*labels)


LIVE_GAUGE_FILE = re.compile(r"^gauge_live(?:sum|all)_(\d+)\.db$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = stat_fields(pid)  # a zombie (died, not reaped yet) is dead for the metrics
    return fields is None or not zombie(fields)


def forget_dead_workers(folder: str) -> list[int]:
    """Drop the live gauges (queue depth, in flight, capacity) of worker processes that died,
    so that their last values stop adding up; their counters stay (totals never go back)."""
    dead = {
        int(found.group(1))
        for name in os.listdir(folder)
        if (found := LIVE_GAUGE_FILE.match(name)) and not _alive(int(found.group(1)))
    }
    for pid in dead:
        multiprocess.mark_process_dead(pid, folder)
    return sorted(dead)


class RequestRecord:
    """One request of any protocol (HTTP, gRPC) in the request metrics: in flight from its
    creation until `done`, which counts it by endpoint and `status` (0, no answer: 500) and
    records its duration."""

    __slots__ = ("endpoint", "started", "status")

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.status = 0
        self.started = time.perf_counter()
        IN_FLIGHT.inc()

    def done(self) -> None:
        IN_FLIGHT.dec()
        child(REQUESTS, self.endpoint, str(self.status or 500)).inc()
        child(REQUEST_DURATION, self.endpoint).observe(time.perf_counter() - self.started)


@contextmanager
def counted(labels: tuple[str, str], started: float) -> Iterator[None]:
    """Count an inference request of a model (`labels`: model, version) and its seconds since
    `started` (time.monotonic() at its arrival) by outcome: its 4xx/5xx status, or 200."""
    try:
        yield
    except Exception as exc:
        status = str(getattr(exc, "status_code", 500))
        child(MODEL_REQUESTS, *labels, status).inc()
        child(MODEL_REQUEST_SECONDS, *labels, status).inc(time.monotonic() - started)
        raise
    child(MODEL_REQUESTS, *labels, "200").inc()
    child(MODEL_REQUEST_SECONDS, *labels, "200").inc(time.monotonic() - started)


def samples(*families: Counter | Gauge | Histogram) -> list[tuple[str, dict[str, str], float]]:
    """The current samples of `families` (sample name, labels, value), over every worker
    process in multiprocess mode, as /metrics shows them."""
    names = {metric.name for family in families for metric in family.describe()}
    if folder := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, folder)
        collected = registry.collect()
    else:
        collected = (metric for family in families for metric in family.collect())
    return [
        (sample.name, sample.labels, sample.value)
        for metric in collected
        if metric.name in names
        for sample in metric.samples
    ]


def exposition() -> tuple[bytes, str]:
    """The text exposition, aggregated over worker processes in multiprocess mode."""
    if folder := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        forget_dead_workers(folder)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
