"""benchmarks/bench_packed.py runs on a tiny setting (it measures; nothing here times)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support import ROOT


def test_runs_on_a_tiny_setting(model_repository: Path, tmp_path: Path) -> None:
    out = tmp_path / "packed.json"
    model = model_repository / "digits" / "1" / "model.onnx"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_packed.py"),
            f"--model={model}",
            "--rows=4",
            "--repeats=1",
            "--seconds=0.1",
            "--threads=1",
            f"--out={out}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    entry = json.loads(out.read_text())[str(model)]
    assert set(entry["images_per_s"]) == {"ensemble", "packed"}
    assert entry["ratio"] > 0
