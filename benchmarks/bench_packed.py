"""Packed mode against ensemble mode on ONNX Runtime, no HTTP: what a forward pass buys and
what a single head costs in accuracy.

- accuracy and NLL on the MNIST test set (`--mnist-dir`): the ensemble (each image tiled into
  the M slots, mean of the heads) against packed mode (M consecutive test images per row,
  each answered by its own slot's head, as service/inference.py `pack` fills the slots);
- images/s of both at `--rows` rows per forward pass, for each `--model` (medians of
  `--repeats` interleaved runs), on the service's own ONNX Runtime session.

    python -m benchmarks.bench_packed --model models/mnist/1/model.onnx \\
        --model /tmp/cifar-models/cifar/1/model.onnx
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from benchmarks.common import service_session, time_calls
from service.inference import forward, pack, tile
from service.uncertainty import softmax

ROOT = Path(__file__).resolve().parents[1]


def accuracy(session: ort.InferenceSession, images: np.ndarray, labels: np.ndarray) -> dict:
    m = session.get_inputs()[0].shape[1]
    temperature = float(session.get_modelmeta().custom_metadata_map.get("mimo.temperature", 1))
    n = len(images) - len(images) % m  # whole rows only
    images, labels = images[:n], labels[:n]
    ensemble = np.concatenate(
        [
            softmax(forward(session, tile(images[i : i + 500], m)), temperature).mean(axis=1)
            for i in range(0, n, 500)
        ]
    )
    packed = np.concatenate(
        [
            softmax(forward(session, pack(images[i : i + 501], m)).reshape(-1, 10), temperature)
            for i in range(0, n, 501)  # 501: whole rows of 3
        ]
    )
    heads = np.arange(n) % m

    def nll(p: np.ndarray) -> float:
        return float(-np.log(np.maximum(p[np.arange(len(p)), labels], 1e-12)).mean())

    right = packed.argmax(1) == labels
    return {
        "images": int(n),
        "ensemble_accuracy": float((ensemble.argmax(1) == labels).mean()),
        "ensemble_nll": nll(ensemble),
        "packed_accuracy": float(right.mean()),
        "packed_nll": nll(packed),
        "packed_accuracy_by_head": [float(right[heads == h].mean()) for h in range(m)],
    }


def images_per_s(session: ort.InferenceSession, rows: int, seconds: float) -> dict[str, float]:
    _, m, c, h, w = session.get_inputs()[0].shape
    x = np.random.default_rng(0).random((rows, m, c, h, w), dtype=np.float32)
    out = {}
    for mode, per_row in (("ensemble", 1), ("packed", m)):
        timing = time_calls(lambda: session.run(None, {"images": x}), seconds, warmup=3)
        out[mode] = timing.per_second(rows * per_row)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, action="append", required=True)
    parser.add_argument("--mnist-dir", type=Path, default=ROOT.parent / "shared" / "data" / "mnist")
    parser.add_argument("--rows", type=int, default=32, help="rows per forward pass")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    for path in args.model:
        session = service_session(path, args.threads)
        runs = [images_per_s(session, args.rows, args.seconds) for _ in range(args.repeats)]
        speed = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        entry: dict[str, Any] = {
            "images_per_s": speed,
            "ratio": speed["packed"] / speed["ensemble"],
        }
        shape = session.get_inputs()[0].shape
        if shape[2:] == [1, 28, 28] and args.mnist_dir.is_dir():
            from training.data import load_dataset

            test = load_dataset("mnist", "test", args.mnist_dir)
            entry["accuracy"] = accuracy(session, test.images.astype(np.float32) / 255, test.labels)
        results[str(path)] = entry
        print(f"## {path}")
        print(
            f"images/s at {args.rows} rows per pass ({args.threads} threads, median of "
            f"{args.repeats}): ensemble {speed['ensemble']:.0f}, packed {speed['packed']:.0f}, "
            f"x{entry['ratio']:.2f}"
        )
        if "accuracy" in entry:
            a = entry["accuracy"]
            print(
                f"MNIST test ({a['images']} images): ensemble {a['ensemble_accuracy']:.2%} "
                f"(NLL {a['ensemble_nll']:.4f}); packed {a['packed_accuracy']:.2%} "
                f"(NLL {a['packed_nll']:.4f}); by head "
                + ", ".join(f"{x:.2%}" for x in a["packed_accuracy_by_head"])
            )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
