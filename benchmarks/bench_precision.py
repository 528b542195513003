"""The same model at several precisions (fp32, int8, fp16 exports): ONNX Runtime alone, no HTTP.

    python -m benchmarks.bench_precision fp32=models/mnist/1/model.onnx int8=q/mnist/1/model.onnx
    python -m benchmarks.bench_precision a.onnx b.onnx --batch 1 32 --threads 1 2 --repeats 5 \\
        --dataset mnist --data-dir ../shared/data/mnist --out precision.json

Each file gets one session per thread count, with the service's own session options
(service/runtime.py: all graph optimisations, sequential, no spinning). A measurement calls it
on one batch of images tiled into the M slots, as serving does, for at least `--min-time`
seconds, and gives images/s. Every repeat measures every (file, threads, batch) once, in a
shuffled order, so that a slow spell of a shared machine hits all of them alike; the table
gives the median over repeats, and each file's speed-up over the first file as the median of
the ratios measured within the same repeat. With `--dataset`, the files are also evaluated on
its test split: accuracy, NLL and ECE of the ensemble mean (temperature 1), and the share of
images whose top-1 class is the first file's. It measures; it asserts nothing.

`--synthetic wrn-16-4` (or `resnet18`, `cnn`) first writes an untrained M=3 network for 32x32
RGB images at fp32, int8 (calibrated on uniform noise) and fp16 into `--synthetic-dir`, and
measures those: a network where the model, not the call, dominates. Speed only (it needs the
training extra: torch).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from benchmarks.common import machine_info, service_session, time_calls
from service.contract import contract_of

SYNTHETIC = {  # architecture, width, depth
    "wrn-16-4": ("wrn", 4.0, 16),
    "resnet18": ("resnet18", 1.0, 0),
    "cnn": ("cnn", 1.0, 0),
}


@dataclass
class Model:
    label: str
    path: Path
    precision: str
    ensemble_size: int
    input_shape: tuple[int, int, int]
    size_bytes: int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "models",
        nargs="*",
        help="model.onnx files, optionally label=path; the first is the reference",
    )
    parser.add_argument("--synthetic", choices=sorted(SYNTHETIC), help="build and measure this")
    parser.add_argument("--synthetic-dir", type=Path, default=Path("synthetic-models"))
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32], help="images per call")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="intra-op threads")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved runs of each")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per session and batch")
    parser.add_argument("--seed", type=int, default=0, help="order of the interleaved runs")
    parser.add_argument("--dataset", help="also evaluate on this dataset's test split")
    parser.add_argument("--data-dir", help="the dataset's folder (not needed for digits)")
    parser.add_argument("--limit", type=int, help="evaluate on the first N test images only")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if bool(args.models) == bool(args.synthetic):
        parser.error("give either model files or --synthetic")
    if min(args.repeats, args.warmup + 1, *args.batch, *args.threads) < 1:
        parser.error("--repeats, --batch and --threads must be positive")
    return args


def load_models(specs: list[str]) -> list[Model]:
    models = []
    for spec in specs:
        label, _, where = spec.rpartition("=")
        path = Path(where)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        contract = contract_of(session, str(path))
        models.append(
            Model(
                label or f"{contract.precision} ({path})",
                path,
                contract.precision,
                contract.ensemble_size,
                contract.input_shape,
                path.stat().st_size,
            )
        )
    shapes = {(m.ensemble_size, m.input_shape) for m in models}
    if len(shapes) > 1:
        raise SystemExit(f"the files take different inputs (M, [C, H, W]): {sorted(shapes)}")
    return models


def images_per_second(session: ort.InferenceSession, tiled: np.ndarray, min_time: float) -> float:
    timing = time_calls(lambda: session.run(["logits"], {"images": tiled}), min_time, min_calls=3)
    return timing.per_second(len(tiled))


def write_synthetic(name: str, folder: Path, calibration_images: int = 128) -> list[str]:
    """An untrained MIMO M=3 network for 32x32 RGB at fp32, int8 and fp16: label=path specs."""
    import torch

    from service.contract import ModelContract
    from training.conversion import to_onnx_bytes
    from training.metadata import with_metadata
    from training.models import build_network
    from training.quantize import Int8Settings, calibration_inputs, quantize_int8, to_fp16

    arch, width, depth = SYNTHETIC[name]
    torch.manual_seed(0)
    shape, m = (3, 32, 32), 3
    model = build_network(arch, m, shape, 10, [0.5] * 3, [0.25] * 3, width=width, depth=depth)
    contract = ModelContract(
        ensemble_size=m,
        input_shape=shape,
        labels=tuple(str(k) for k in range(10)),
        preprocess={"color": "RGB", "resize": [32, 32], "resample": "bilinear", "invert": False},
        temperature=1.0,
        thresholds={"mutual_information": 0.0},
        training={"architecture": arch, "width": width, "depth": depth, "untrained": True},
    )
    fp32 = to_onnx_bytes(model)
    noise = np.random.default_rng(0).integers(0, 256, (calibration_images, *shape), np.uint8)
    settings = Int8Settings(calibration_images=calibration_images)
    inputs = calibration_inputs(noise, m, calibration_images, mixed=True)
    graphs = {
        "fp32": fp32,
        "int8": quantize_int8(fp32, inputs, settings),
        "fp16": to_fp16(fp32),
    }
    folder.mkdir(parents=True, exist_ok=True)
    specs = []
    for precision, graph in graphs.items():
        path = folder / f"{name}-{precision}.onnx"
        quantization = settings.describe() if precision == "int8" else {}
        lowered = dataclasses.replace(contract, precision=precision, quantization=quantization)
        path.write_bytes(with_metadata(graph, lowered))
        specs.append(f"{name} {precision}={path}")
    return specs


def measure_speed(models: list[Model], args: argparse.Namespace) -> list[dict[str, Any]]:
    m, shape = models[0].ensemble_size, models[0].input_shape
    rng = np.random.default_rng(0)
    inputs = {}
    for b in args.batch:
        x = rng.random((b, *shape), dtype=np.float32)
        inputs[b] = np.ascontiguousarray(np.broadcast_to(x[:, None], (b, m, *shape)))
    sessions = {}
    for i, model in enumerate(models):
        for t in args.threads:
            session = service_session(model.path, t)
            for b in args.batch:
                for _ in range(args.warmup):
                    session.run(["logits"], {"images": inputs[b]})
            sessions[i, t] = session
    keys = [(i, t, b) for i in range(len(models)) for t in args.threads for b in args.batch]
    runs: dict[tuple[int, int, int], list[float]] = {k: [] for k in keys}
    order = random.Random(args.seed)
    for repeat in range(args.repeats):
        order.shuffle(keys)
        for i, t, b in keys:
            runs[i, t, b].append(images_per_second(sessions[i, t], inputs[b], args.min_time))
        print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    rows = []
    for t in args.threads:
        for b in args.batch:
            reference = runs[0, t, b]
            for i, model in enumerate(models):
                values = runs[i, t, b]
                rows.append(
                    {
                        "model": model.label,
                        "precision": model.precision,
                        "threads": t,
                        "batch": b,
                        "images_per_s": statistics.median(values),
                        "images_per_s_runs": values,
                        "speedup": statistics.median(
                            v / r for v, r in zip(values, reference, strict=True)
                        ),
                    }
                )
    return rows


def measure_quality(models: list[Model], args: argparse.Namespace) -> list[dict[str, Any]]:
    from training import metrics
    from training.data import load_dataset

    test = load_dataset(args.dataset, "test", args.data_dir)
    if test.shape != models[0].input_shape:
        raise SystemExit(
            f"{args.dataset} images are {test.shape}, the models take {models[0].input_shape}"
        )
    images = test.images[: args.limit] if args.limit else test.images
    labels = test.labels[: len(images)]
    x = images.astype(np.float32) / 255.0
    m = models[0].ensemble_size
    rows, reference = [], None
    for model in models:
        session = service_session(model.path, 0)
        logits = np.concatenate(
            [
                session.run(["logits"], {"images": np.repeat(x[i : i + 500, None], m, axis=1)})[0]
                for i in range(0, len(x), 500)
            ]
        )
        probs = metrics.softmax(logits).mean(axis=1)
        top1 = probs.argmax(axis=1)
        reference = top1 if reference is None else reference
        rows.append(
            {
                "model": model.label,
                "precision": model.precision,
                "size_bytes": model.size_bytes,
                "images": len(x),
                "accuracy": metrics.accuracy(probs, labels),
                "nll": metrics.ensemble_nll(logits, labels),
                "ece": metrics.ece(probs, labels),
                "agreement_with_first": float((top1 == reference).mean()),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    specs = write_synthetic(args.synthetic, args.synthetic_dir) if args.synthetic else args.models
    models = load_models(specs)
    where = machine_info()
    print(f"machine: {json.dumps(where)}")
    speed = measure_speed(models, args)
    print()
    print("| model | precision | threads | batch | images/s (median) | x first |")
    print("|---|---|---:|---:|---:|---:|")
    for r in speed:
        print(
            f"| {r['model']} | {r['precision']} | {r['threads']} | {r['batch']} | "
            f"{r['images_per_s']:.0f} | {r['speedup']:.2f} |"
        )
    quality = measure_quality(models, args) if args.dataset else []
    print()
    print("| model | precision | size MB | accuracy | NLL | ECE | top-1 = first |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for model in models:
        q = next((r for r in quality if r["model"] == model.label), None)
        cells = (
            f"{q['accuracy']:.4f} | {q['nll']:.4f} | {q['ece']:.4f} | "
            f"{q['agreement_with_first']:.4f}"
            if q
            else "| | |"
        )
        print(f"| {model.label} | {model.precision} | {model.size_bytes / 1e6:.3f} | {cells} |")
    if args.out:
        result = {
            "machine": where,
            "settings": {
                k: str(v) if isinstance(v, Path) else v
                for k, v in vars(args).items()
                if k not in ("out", "models")
            },
            "models": [
                {
                    "label": m.label,
                    "path": str(m.path),
                    "precision": m.precision,
                    "size_bytes": m.size_bytes,
                }
                for m in models
            ],
            "speed": speed,
            "quality": quality,
        }
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
