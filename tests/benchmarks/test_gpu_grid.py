"""benchmarks/gpu/grid.py at toy size on the CPU: tiny MNIST files (sklearn digits, enlarged),
one width x the six configurations of one seed, each trained a few steps and evaluated as the
CPU grid does; the records come back as records.json and go into a records folder."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + np.ascontiguousarray(array, np.uint8).tobytes()))


def tiny_mnist(root: Path) -> Path:
    """MNIST's files with 300 training and 100 test images: sklearn's digits at 28 x 28."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.stack(
        [
            np.asarray(Image.fromarray((d * 255 / 16).astype(np.uint8)).resize((28, 28)))
            for d in digits.images[:400]
        ]
    )
    labels = digits.target[:400].astype(np.uint8)
    root.mkdir(parents=True)
    for prefix, part in (("train", slice(0, 300)), ("t10k", slice(300, 400))):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images[part])
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels[part])
    return root


def test_grid_at_toy_size(scripts, tmp_path: Path) -> None:
    out, records = tmp_path / "out", tmp_path / "records"
    args = [
        "--tiny",
        "--data-dir", str(tiny_mnist(tmp_path / "mnist")),
        "--out", str(out),
        "--runs", str(tmp_path / "runs"),
        "--records", str(records),
        "--widths", "0.25",
        "--seeds", "0",
        "--epochs", "1",
        "--jobs", "2",
        "--budget-s", "600",
    ]  # fmt: skip
    scripts.run("gpu.grid", *args, timeout=900)
    assert sorted(p.name for p in out.iterdir()) == ["log.txt", "records.json", "summary.md"]
    found = json.loads((out / "records.json").read_text())
    expected = {
        f"w{w}-{config}-s0"
        for w in ("0.25",)
        for config in (
            "m1-rho0-plain", "m1-rho0-oe", "m2-rho0.5-plain", "m2-rho0.5-outlier",
            "m3-rho0.5-plain", "m3-rho0.5-outlier",
        )
    }  # fmt: skip
    assert set(found) == expected
    record = found["w0.25-m3-rho0.5-outlier-s0"]
    assert record["epochs"] == 1 and record["point"]["ensemble_size"] == 3
    assert 0.0 <= record["metrics"]["clean"]["accuracy"] <= 1.0
    summary = (out / "summary.md").read_text()
    assert "6 points recorded" in summary and "| w0.25-m1-rho0-oe-s0 |" in summary

    # Back home: one file per record, as docs/results/grid/ keeps them.
    into = tmp_path / "grid12"
    scripts.run("gpu.grid", "--import", str(out / "records.json"), "--records", str(into))
    assert {p.stem for p in into.glob("*.json")} == expected


def test_budget_stops_runs_and_keeps_what_finished(scripts, tmp_path: Path) -> None:
    """A budget too short for anything: the runs started are stopped, none recorded, and the
    output says so."""
    out = tmp_path / "out"
    args = [
        "--tiny",
        "--data-dir", str(tiny_mnist(tmp_path / "mnist")), "--out", str(out),
        "--runs", str(tmp_path / "runs"), "--records", str(tmp_path / "records"),
        "--widths", "0.25", "--seeds", "0", "--epochs", "1", "--jobs", "2", "--budget-s", "1",
    ]  # fmt: skip
    scripts.run("gpu.grid", *args, timeout=300)
    summary = (out / "summary.md").read_text()
    assert "budget over: stopped" in summary and "not started" in summary
    assert json.loads((out / "records.json").read_text()) == {}
