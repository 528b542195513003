"""benchmarks/bench_serving.py runs end to end on a tiny setting: it starts the servers it
compares, loads them with hey and prints the table (it asserts no timing, nor does this)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT


@pytest.mark.skipif(shutil.which("hey") is None, reason="needs hey (Debian package hey)")
@pytest.mark.parametrize("mode", [[], ["--side-by-side"]], ids=["in-turn", "side-by-side"])
def test_runs_on_a_tiny_setting(model_repository: Path, tmp_path: Path, mode: list[str]) -> None:
    out = tmp_path / "serving.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_serving.py"),
            f"--model={model_repository / 'digits' / '1' / 'model.onnx'}",
            "--servers",
            "mimo",
            "trivial",
            "--concurrency",
            "2",
            "--seconds=0.5",
            "--repeats=2",
            "--threads=1",
            f"--out={out}",
            *mode,
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| mimo | 2 |" in done.stdout and "ONNX Runtime alone" in done.stdout
    rows = json.loads(out.read_text())["rows"]
    assert {r["server"] for r in rows} == {"mimo", "trivial"}
    assert all(r["non_200"] == 0 and r["req_per_s"] > 0 for r in rows)
    mimo = next(r for r in rows if r["server"] == "mimo")
    low, high = mimo["vs_trivial_range"]
    assert mimo["runs"] == 2 and low <= mimo["vs_trivial"] <= high
