"""benchmarks/bench_serving.py runs end to end on a tiny setting: it starts the servers it
compares, loads them with hey and prints the table (it asserts no timing, nor does this)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.mark.skipif(shutil.which("hey") is None, reason="needs hey (Debian package hey)")
@pytest.mark.parametrize("mode", [[], ["--side-by-side"]], ids=["in-turn", "side-by-side"])
def test_runs_on_a_tiny_setting(
    scripts, model_repository: Path, tmp_path: Path, mode: list[str]
) -> None:
    ran = scripts.run(
        "bench_serving",
        f"--model={model_repository / 'digits' / '1' / 'model.onnx'}",
        "--servers",
        "mimo",
        "trivial",
        "--concurrency",
        "2",
        "--seconds=0.5",
        "--repeats=2",
        "--threads=1",
        *mode,
        out=tmp_path / "serving.json",
        timeout=240,
    )
    assert "| mimo | 2 |" in ran.stdout and "ONNX Runtime alone" in ran.stdout
    rows = ran.result["rows"]
    assert {r["server"] for r in rows} == {"mimo", "trivial"}
    assert all(r["non_200"] == 0 and r["req_per_s"] > 0 for r in rows)
    mimo = next(r for r in rows if r["server"] == "mimo")
    low, high = mimo["vs_trivial_range"]
    assert mimo["runs"] == 2 and low <= mimo["vs_trivial"] <= high
