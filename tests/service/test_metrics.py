"""service/metrics.py: the live gauges of a worker that died stop adding up; a batch's values
recorded at once land in the buckets observe() would have put them in."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram

from service.metrics import forget_dead_workers, observe_many
from service.postprocess import count_predictions

BOUNDS = (0.0, 0.1, 0.5, 1.0)
# on a bound, between, below the first, beyond the last, infinity, repeats
VALUES = [0.0, 0.1, 0.05, -1.0, 0.5, 0.7, 1.0, 3.0, math.inf, -1e9, 0.1, 0.7]


def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("le", "")): s.value
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def histograms(registry: CollectorRegistry) -> tuple[Histogram, Histogram]:
    one = Histogram("one_by_one", "", ["m"], buckets=BOUNDS, registry=registry)
    many = Histogram("all_at_once", "", ["m"], buckets=BOUNDS, registry=registry)
    return one.labels("x"), many.labels("x")


def renamed(found: dict[tuple[str, str], float], name: str) -> dict[tuple[str, str], float]:
    return {(k[0].replace(name, "h"), k[1]): v for k, v in found.items() if k[0].startswith(name)}


@pytest.mark.parametrize("values", [VALUES, VALUES[:5], [], [0.3], np.array(VALUES, np.float32)])
def test_observe_many_counts_what_observe_would(values: list[float]) -> None:
    registry = CollectorRegistry()
    one, many = histograms(registry)
    for v in values:
        one.observe(float(v))
    observe_many(many, values)
    found = samples(registry)
    # (a NaN goes in no bucket and makes the sum NaN, both ways)
    assert renamed(found, "all_at_once") == pytest.approx(renamed(found, "one_by_one"), nan_ok=True)
    if values is VALUES:  # counted by hand (cumulative, as exposed)
        buckets = {k[1]: v for k, v in renamed(found, "all_at_once").items() if k[1]}
        assert buckets == {"0.0": 3, "0.1": 6, "0.5": 7, "1.0": 10, "+Inf": 12}


def test_observe_many_in_multiprocess_mode(tmp_path: Path) -> None:
    """With several workers the values are files that the exposition adds up."""
    script = f"""
import os
from math import inf
os.environ["PROMETHEUS_MULTIPROC_DIR"] = {str(tmp_path)!r}
from prometheus_client import CollectorRegistry, Histogram, multiprocess
from service.metrics import observe_many
one = Histogram("one_by_one", "", ["m"], buckets={BOUNDS!r}, registry=None).labels("x")
many = Histogram("all_at_once", "", ["m"], buckets={BOUNDS!r}, registry=None).labels("x")
values = {VALUES!r}
for v in values:
    one.observe(v)
observe_many(many, values)
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry)
for metric in registry.collect():
    for s in metric.samples:
        print(s.name, s.labels.get("le", "-"), s.value)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    found = {(name, le): float(v) for name, le, v in (line.split() for line in out.splitlines())}
    many = renamed(found, "all_at_once")
    assert many and many == renamed(found, "one_by_one")
    assert many["h_count", "-"] == len(VALUES)


def test_dead_workers_live_gauges_are_dropped_and_the_rest_kept(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()  # reaped: its pid is gone
    zombie = subprocess.Popen(["true"])
    zombie_pid = zombie.pid  # exited, not reaped yet: a zombie
    os.waitid(os.P_PID, zombie_pid, os.WEXITED | os.WNOWAIT)
    mine = os.getpid()
    files = [
        f"gauge_livesum_{dead.pid}.db",
        f"gauge_liveall_{dead.pid}.db",
        f"gauge_livesum_{zombie_pid}.db",
        f"gauge_livesum_{mine}.db",
        f"counter_{dead.pid}.db",  # totals stay
        f"gauge_max_{dead.pid}.db",
    ]
    for name in files:
        (tmp_path / name).write_bytes(b"")
    try:
        assert forget_dead_workers(str(tmp_path)) == sorted({dead.pid, zombie_pid})
    finally:
        zombie.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"gauge_livesum_{mine}.db", f"counter_{dead.pid}.db", f"gauge_max_{dead.pid}.db"]
    )


@pytest.mark.parametrize("tops", [[2], [0, 2, 2], [1, 0, 2, 2, 2, 1, 0, 2]], ids=len)
def test_predictions_are_counted_by_class(tops: list[int]) -> None:
    """A few images are counted one by one, a batch by class: the same totals."""
    names, labels = ("zero", "one", "two"), (f"count-{len(tops)}", "1")
    p = np.eye(3)[tops] * 0.8 + 0.1  # image i's top class is tops[i]
    count_predictions(p, names, labels)
    count_predictions(p, names, labels)
    for index, name in enumerate(names):
        got = REGISTRY.get_sample_value(
            "mimo_predictions_total", {"model": labels[0], "version": "1", "label": name}
        )
        assert (got or 0) == 2 * tops.count(index)
