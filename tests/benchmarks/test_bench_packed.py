"""benchmarks/bench_packed.py runs on a tiny setting (it measures; nothing here times)."""

from __future__ import annotations

from pathlib import Path


def test_runs_on_a_tiny_setting(scripts, model_repository: Path, tmp_path: Path) -> None:
    model = model_repository / "digits" / "1" / "model.onnx"
    ran = scripts.run(
        "bench_packed",
        f"--model={model}",
        "--rows=4",
        "--repeats=1",
        "--seconds=0.1",
        "--threads=1",
        out=tmp_path / "packed.json",
    )
    entry = ran.result[str(model)]
    assert set(entry["images_per_s"]) == {"ensemble", "packed"}
    assert entry["ratio"] > 0
