"""benchmarks/bench_precision.py runs end to end on a tiny setting (it measures; it asserts no
timing, and neither does this test)."""

from __future__ import annotations

from pathlib import Path


def test_runs_on_the_digits_exports(scripts, precision_repository: Path, tmp_path: Path) -> None:
    files = [
        f"{name}={precision_repository / 'digits' / str(version) / 'model.onnx'}"
        for version, name in ((1, "fp32"), (2, "int8"), (3, "fp16"))
    ]
    ran = scripts.run(
        "bench_precision",
        *files,
        "--batch",
        "1",
        "4",
        "--threads=1",
        "--repeats=2",
        "--min-time=0.01",
        "--warmup=1",
        "--dataset=digits",
        "--limit=100",
        out=tmp_path / "precision.json",
    )
    assert "| int8 | int8 | 1 | 4 |" in ran.stdout
    result = ran.result
    assert [m["precision"] for m in result["models"]] == ["fp32", "int8", "fp16"]
    speed = result["speed"]
    assert {(r["model"], r["batch"]) for r in speed} == {
        (m, b) for m in ("fp32", "int8", "fp16") for b in (1, 4)
    }
    assert all(r["images_per_s"] > 0 and len(r["images_per_s_runs"]) == 2 for r in speed)
    assert all(r["speedup"] == 1.0 for r in speed if r["model"] == "fp32")
    quality = {r["model"]: r for r in result["quality"]}
    assert quality["fp32"]["agreement_with_first"] == 1.0
    assert all(r["images"] == 100 and r["accuracy"] > 0.5 for r in quality.values())
    assert quality["int8"]["size_bytes"] < quality["fp32"]["size_bytes"]
    assert "cpu" in result["machine"]


def test_builds_and_measures_a_synthetic_network(scripts, tmp_path: Path) -> None:
    built = tmp_path / "built"
    tiny = ["--batch", "2", "--threads", "1", "--repeats=1", "--min-time=0.01", "--warmup=1"]
    ran = scripts.run(
        "bench_precision",
        "--synthetic=cnn",
        f"--synthetic-dir={built}",
        *tiny,
        out=tmp_path / "synthetic.json",
    )
    assert "| cnn int8 | int8 | 1 | 2 |" in ran.stdout
    assert sorted(p.name for p in built.iterdir()) == [
        "cnn-fp16.onnx",
        "cnn-fp32.onnx",
        "cnn-int8.onnx",
    ]
    assert [m["precision"] for m in ran.result["models"]] == ["fp32", "int8", "fp16"]
    assert ran.result["quality"] == []
