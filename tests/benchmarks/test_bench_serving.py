"""benchmarks/bench_serving.py runs end to end on a tiny setting: it starts the servers it
compares, loads them with hey and prints the table (it asserts no timing, nor does this)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
from support import ROOT


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


def test_the_service_is_started_on_the_chosen_file_alone(
    model_repository: Path, tmp_path: Path
) -> None:
    """Beside a newer version, the file asked for is still the one served (the service answers
    a request that names no version with the highest)."""
    # (by path: on pytest's path, `benchmarks` is this folder, tests/benchmarks)
    spec = importlib.util.spec_from_file_location("bench_common", ROOT / "benchmarks" / "common.py")
    assert spec and spec.loader
    common = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = common  # (its dataclasses look their module up there)
    spec.loader.exec_module(common)
    lone_repository = common.lone_repository

    for version in ("1", "2"):
        shutil.copytree(model_repository / "digits" / "1", tmp_path / "digits" / version)
    chosen = tmp_path / "digits" / "1" / "model.onnx"
    repo = lone_repository(chosen)
    assert sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()) == [
        "digits/1/model.onnx"
    ]
    assert (repo / "digits" / "1" / "model.onnx").read_bytes() == chosen.read_bytes()
    assert lone_repository(chosen) == repo  # one copy per file and run
