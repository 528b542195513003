"""service/metrics.py: the live gauges of a worker that died stop adding up; predictions are
counted by class."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from service.metrics import forget_dead_workers
from service.postprocess import count_predictions


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
    names, labels = ("zero", "one", "two"), (f"count-{len(tops)}", "1")
    count_predictions(tops, names, labels)
    count_predictions(tops, names, labels)
    for index, name in enumerate(names):
        got = REGISTRY.get_sample_value(
            "mimo_predictions_total", {"model": labels[0], "version": "1", "label": name}
        )
        assert (got or 0) == 2 * tops.count(index)
