"""The steps every pipeline takes: run `python -m training ...` with a log, train and evaluate
unless done, read a training log back."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.experiments.records import ROOT
from training.files import write_atomic

# The 12-epoch comparisons use every corrupted test image and more OOD images.
FULL_EVAL_FLAGS = ("--corruption-limit", "10000", "--ood-count", "2000")


def run(args: Sequence[str], log: Path) -> None:
    """Run `python -m training ...`, appending its output to a log; fail loudly."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print("$ python -m training " + " ".join(args), flush=True)
    with log.open("a") as f:
        done = subprocess.run(
            [sys.executable, "-m", "training", *args], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT
        )
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}); see {log}")


def train_and_evaluate(
    out: Path, data_dir: str, flags: Sequence[str], eval_flags: Sequence[str]
) -> dict[str, Any]:
    if not (out / "model.pt").exists():
        command = ["train", "--preset", "mnist", "--data-dir", data_dir, "--out-dir", str(out)]
        command += flags
        if (out / "last.pt").exists():
            command += ["--resume", str(out / "last.pt")]
        run(command, out / "train.log")
    return evaluate(out / "eval", [out / "model.pt"], eval_flags)


def evaluate(out: Path, checkpoints: Sequence[Path], eval_flags: Sequence[str]) -> dict[str, Any]:
    if not (out / "metrics.json").exists():
        run(
            ["evaluate", "--checkpoint", *map(str, checkpoints), "--out", str(out), *eval_flags],
            out.parent / "evaluate.log",
        )
    return json.loads((out / "metrics.json").read_text())


def write_record(path: Path, record: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(record, indent=1) + "\n")


def train_log(log: Path) -> tuple[float, int]:
    """Training seconds (sum of the epoch records; a resumed run appends its own) and the
    parameter count, from what `python -m training train` printed."""
    seconds, parameters = 0.0, 0
    for text in log.read_text().splitlines():
        if text.startswith("{") and '"seconds"' in text:
            seconds += float(json.loads(text)["seconds"])
        elif text.startswith("training ") and " parameters" in text:
            parameters = int(text.split(" parameters")[0].rsplit(" ", 1)[1].replace(",", ""))
    return seconds, parameters
