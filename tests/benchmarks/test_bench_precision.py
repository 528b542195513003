"""benchmarks/bench_precision.py runs end to end on a tiny setting (it measures; it asserts no
timing, and neither does this test)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT


def test_runs_on_the_digits_exports(precision_repository: Path, tmp_path: Path) -> None:
    files = [
        f"{name}={precision_repository / 'digits' / str(version) / 'model.onnx'}"
        for version, name in ((1, "fp32"), (2, "int8"), (3, "fp16"))
    ]
    out = tmp_path / "precision.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_precision.py"),
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
            f"--out={out}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| int8 | int8 | 1 | 4 |" in done.stdout
    result = json.loads(out.read_text())
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


def test_builds_and_measures_a_synthetic_network(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = importlib.util.spec_from_file_location(
        "bench_precision", ROOT / "benchmarks" / "bench_precision.py"
    )
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_precision"] = bench  # its dataclass looks its module up
    spec.loader.exec_module(bench)
    out = tmp_path / "synthetic.json"
    argv = ["--synthetic=cnn", f"--synthetic-dir={tmp_path / 'built'}", f"--out={out}"]
    tiny = ["--batch", "2", "--threads", "1", "--repeats=1", "--min-time=0.01", "--warmup=1"]
    assert bench.main([*argv, *tiny]) == 0
    assert "| cnn int8 | int8 | 1 | 2 |" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "built").iterdir()) == [
        "cnn-fp16.onnx",
        "cnn-fp32.onnx",
        "cnn-int8.onnx",
    ]
    result = json.loads(out.read_text())
    assert [m["precision"] for m in result["models"]] == ["fp32", "int8", "fp16"]
    assert result["quality"] == []
