"""benchmarks/bench_latency.py runs end to end on a tiny setting: it starts the servers it
compares, times one request at a time and prints the table (it asserts no timing)."""

from __future__ import annotations

from pathlib import Path


def test_runs_on_a_tiny_setting(scripts, model_repository: Path, tmp_path: Path) -> None:
    ran = scripts.run(
        "bench_latency",
        f"--model={model_repository / 'digits' / '1' / 'model.onnx'}",
        "--servers",
        "trivial",
        "mimo",
        "--rounds=2",
        "--requests=15",
        "--pause=0",
        "--threads=1",
        out=tmp_path / "latency.json",
        timeout=240,
    )
    assert "| mimo |" in ran.stdout and "p50 x trivial" in ran.stdout
    rows = ran.result["rows"]
    assert [r["server"] for r in rows] == ["trivial", "mimo"]
    assert all(r["requests"] == 30 and 0 < r["p50_us"] <= r["p99_us"] for r in rows)
    trivial = rows[0]
    assert trivial["p50_vs_first"] == 1.0 and trivial["rounds_lower_than_first"] == 0
