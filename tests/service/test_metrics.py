"""service/metrics.py: the live gauges of a worker that died stop adding up."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from service.metrics import forget_dead_workers


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
