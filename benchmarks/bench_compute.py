"""One MIMO forward pass beside an ensemble of M separate networks, on ONNX Runtime's CPU.

For each network and each M, the MIMO network is built with training's own code
(`training.models.build_network`), exported with training's own converter
(`training.conversion.to_onnx_bytes`: opset 17, dynamic batch) and loaded with the service's
session options (`service.runtime.create_session`). Its input is one image tiled into the M
slots, as `ServedModel.infer` does (the tiling is timed with the call). Beside it, a deep
ensemble: M separately initialised M=1 networks, each in its own session, run one after the
other on the same images (what one would do without MIMO). Weights are untrained (this measures
speed only); BatchNorm statistics come from two train-mode passes on random images so that
activations have a realistic scale.

    python -m benchmarks.bench_compute                            # the full run (minutes)
    python -m benchmarks.bench_compute --networks mnist-cnn --members 1 2 --batches 1 \
        --threads 1 --repeats 1 --warmup 1 --sample-s 0.01 --peak-size 256   # seconds

Timing: after `--warmup` calls, each sample runs a session (or the whole ensemble) for at least
`--sample-s` seconds and keeps the mean time per call; the variants of one (network, threads,
batch) cell take turns within each repeat (the order rotates), and the table gives the median
over `--repeats`. Ratios are medians of the per-repeat ratios of samples taken side by side,
which cancels most of the drift of a shared machine.

FLOPs are counted, not estimated: forward hooks on every Conv2d and Linear add up their
multiply-accumulates for one image (FLOPs = 2 x MACs). The machine's fp32 peak is measured here
too, as torch's sgemm of a `--peak-size` square matrix: alone at each thread count before and
after the timings (the header: the better median of the two), and as one more variant taking
turns in every cell, at the cell's thread count. "% of peak" is against that side-by-side
sgemm (median of the per-repeat ratios), so that a machine busy with other work lowers both.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from benchmarks.common import cores, machine_info, service_session, time_calls
from training.config import PRESETS
from training.conversion import OPSET, to_onnx_bytes
from training.models import MimoNetwork, build_network

MNIST = PRESETS["mnist"]  # the shipped models' network and recipe (models/mnist/1 and 2)


@dataclass(frozen=True)
class NetworkSpec:
    arch: str
    width: float
    depth: int
    input_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    about: str


CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
NETWORKS: dict[str, NetworkSpec] = {
    "mnist-cnn": NetworkSpec(
        MNIST.arch,
        MNIST.width,
        MNIST.depth,
        (1, 28, 28),
        10,
        (0.1307,),
        (0.3081,),
        "the default model's network (mnist preset: small CNN), 1x28x28",
    ),
    "wrn-16-4": NetworkSpec(
        "wrn", 4.0, 16, (3, 32, 32), 10, CIFAR_MEAN, CIFAR_STD, "WRN-16-4, 3x32x32"
    ),
    "resnet18": NetworkSpec(
        "resnet18", 1.0, 28, (3, 32, 32), 10, CIFAR_MEAN, CIFAR_STD, "CIFAR ResNet-18, 3x32x32"
    ),
}

# The targets, checked at M = 3.
TARGET_M = 3
MAX_MIMO_OVER_SINGLE = 1.10  # MIMO M=3 time <= 1.10 x M=1 time
MIN_ENSEMBLE_OVER_MIMO = 2.7  # ensemble of 3 time >= 2.7 x MIMO M=3 time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--networks",
        nargs="+",
        default=["mnist-cnn", "wrn-16-4"],
        choices=sorted(NETWORKS),
        help="networks to measure",
    )
    parser.add_argument("--members", type=int, nargs="+", default=[1, 2, 3, 4], help="M values")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32], help="images per call")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        help=f"ONNX Runtime intra-op threads (default: the cores, {cores()}, and 1)",
    )
    parser.add_argument("--repeats", type=int, default=15, help="interleaved samples of each")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first")
    parser.add_argument(
        "--sample-s", type=float, default=0.1, help="each sample runs for at least this long"
    )
    parser.add_argument("--peak-size", type=int, default=2048, help="sgemm matrix side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.threads is None:
        args.threads = sorted({cores(), 1}, reverse=True)
    args.members = sorted(set(args.members))
    args.batches = sorted(set(args.batches))
    if min(*args.members, *args.batches, *args.threads, args.repeats, args.peak_size) < 1:
        parser.error("--members, --batches, --threads, --repeats and --peak-size must be >= 1")
    if args.warmup < 0 or args.sample_s < 0:
        parser.error("--warmup and --sample-s must be >= 0")
    return args


# --- FLOPs -----------------------------------------------------------------------------------


def count_macs(model: MimoNetwork) -> dict[str, int]:
    """Multiply-accumulates of one image through every Conv2d and Linear, split into the stem
    (the first conv, whose input channels grow with M), the head (M x K outputs) and the body."""
    per_module: list[tuple[nn.Module, int]] = []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            per_out = (module.in_channels // module.groups) * kh * kw
        else:
            per_out = module.in_features
        per_module.append((module, output.numel() // output.shape[0] * per_out))

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, model.ensemble_size, *model.input_shape))
    finally:
        for h in handles:
            h.remove()
    stem = next(macs for module, macs in per_module if isinstance(module, nn.Conv2d))
    head = sum(macs for module, macs in per_module if module is model.head)
    total = sum(macs for _, macs in per_module)
    return {"total": total, "stem": stem, "head": head, "body": total - stem - head}


# --- the machine's fp32 peak -----------------------------------------------------------------


def sgemm_runner(size: int, threads: int) -> tuple[Callable[[Any], Any], float]:
    """A call of torch's fp32 matmul of two size x size matrices on `threads` threads (the
    argument is ignored, so that it takes turns with the networks), and its FLOPs."""
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(size, size, generator=gen)
    b = torch.rand(size, size, generator=gen)
    out = torch.empty(size, size)

    def run(_: Any = None) -> Any:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return torch.mm(a, b, out=out)
        finally:
            torch.set_num_threads(before)

    return run, 2.0 * size**3


def sgemm_gflops(size: int, threads: int, repeats: int, sample_s: float) -> dict[str, Any]:
    """GFLOP/s of the sgemm alone: median of `repeats` samples (at least 3) of at least
    `sample_s` seconds (at least 0.05) each."""
    run, flops = sgemm_runner(size, threads)
    run()  # warm-up
    seconds = max(sample_s, 0.05)
    samples = [flops / time_calls(run, seconds).mean_s / 1e9 for _ in range(max(3, repeats))]
    return {"gflops": statistics.median(samples), "samples": samples}


# --- networks, sessions, timing --------------------------------------------------------------


def make_network(spec: NetworkSpec, members: int, seed: int) -> MimoNetwork:
    torch.manual_seed(seed)
    model = build_network(
        spec.arch,
        members,
        input_shape=spec.input_shape,
        num_classes=spec.num_classes,
        mean=spec.mean,
        std=spec.std,
        width=spec.width,
        depth=spec.depth,
    )
    # Untrained BatchNorm (mean 0, var 1) lets activations grow or shrink layer after layer;
    # running statistics from random images keep them at the scale of a trained network.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the passes
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(16, members, *spec.input_shape))
    return model.eval()


def export_to(model: MimoNetwork, path: Path) -> Path:
    path.write_bytes(to_onnx_bytes(model))
    return path


def mimo_runner(session: ort.InferenceSession, members: int) -> Callable[[np.ndarray], Any]:
    """One forward pass: the images tiled into the M slots, as ServedModel.infer does."""

    def run(images: np.ndarray) -> Any:
        tiled = np.ascontiguousarray(
            np.broadcast_to(images[:, None], (len(images), members, *images.shape[1:]))
        )
        return session.run(["logits"], {"images": tiled})[0]

    return run


def ensemble_runner(sessions: list[ort.InferenceSession]) -> Callable[[np.ndarray], Any]:
    """M separate M=1 networks, one after the other, on the same images."""

    def run(images: np.ndarray) -> Any:
        single = images[:, None]  # [N, 1, C, H, W]: a view, still contiguous
        return [s.run(["logits"], {"images": single})[0] for s in sessions]

    return run


def median_ratio(a: list[float], b: list[float]) -> float:
    """Median over repeats of a[i] / b[i]: samples of one repeat were taken side by side."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def measure_cell(
    runners: dict[str, Callable[[np.ndarray], Any]],
    images: np.ndarray,
    args: argparse.Namespace,
) -> dict[str, list[float]]:
    """ms per call of each runner: `repeats` samples, the runners taking turns."""
    names = list(runners)
    calls = {name: functools.partial(runners[name], images) for name in names}
    for name in names:
        for _ in range(args.warmup):
            calls[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    gc.disable()
    try:
        for r in range(args.repeats):
            k = r % len(names)
            for name in names[k:] + names[:k]:  # rotate: no variant always runs first
                samples[name].append(1e3 * time_calls(calls[name], args.sample_s).mean_s)
    finally:
        gc.enable()
    return samples


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)  # torch only builds and exports here; keep its pool out of the way
    n_cores = cores()
    peak_threads = sorted(set(args.threads) | {n_cores}, reverse=True)
    load_before = os.getloadavg()
    peak_before = {
        t: sgemm_gflops(args.peak_size, t, args.repeats, args.sample_s) for t in peak_threads
    }

    networks: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(args.seed)
    max_m = max(args.members)
    ensemble_sizes = [m for m in args.members if m >= 2]
    with tempfile.TemporaryDirectory(prefix="bench-compute-") as tmp:
        for net_name in args.networks:
            spec = NETWORKS[net_name]
            folder = Path(tmp) / net_name
            folder.mkdir()
            # The MIMO networks, and the members of the deep ensemble (seeds of their own).
            mimo_paths, flops = {}, {}
            for m in args.members:
                model = make_network(spec, m, args.seed)
                macs = count_macs(model)
                flops[m] = {k: 2 * v for k, v in macs.items()}
                mimo_paths[m] = export_to(model, folder / f"mimo-{m}.onnx")
            member_paths = []
            for i in range(max_m if ensemble_sizes else 0):
                member = make_network(spec, 1, args.seed + 1 + i)
                member_paths.append(export_to(member, folder / f"member-{i}.onnx"))
            if member_paths:
                member_flops = 2 * count_macs(member)["total"]
            single = flops[1]["total"] if 1 in flops else None
            networks[net_name] = {
                "about": spec.about,
                "architecture": spec.arch,
                "width": spec.width,
                "depth": spec.depth if spec.arch == "wrn" else None,
                "input_shape": list(spec.input_shape),
                "num_classes": spec.num_classes,
                "flops_per_image": {
                    str(m): {
                        **f,
                        "extra_over_m1": None if single is None else f["total"] - single,
                    }
                    for m, f in flops.items()
                },
            }
            for threads in args.threads:
                mimo_sessions = {m: service_session(p, threads) for m, p in mimo_paths.items()}
                member_sessions = [service_session(p, threads) for p in member_paths]
                runners: dict[str, Callable[[np.ndarray], Any]] = {}
                for m, session in mimo_sessions.items():
                    runners[f"mimo-{m}"] = mimo_runner(session, m)
                for m in ensemble_sizes:
                    runners[f"ensemble-{m}"] = ensemble_runner(member_sessions[:m])
                # The sgemm takes its turn with the networks: the same load on the machine.
                runners["sgemm"], sgemm_flops = sgemm_runner(args.peak_size, threads)
                for batch in args.batches:
                    images = rng.random((batch, *spec.input_shape), dtype=np.float32)
                    cell = measure_cell(runners, images, args)
                    sgemm = [sgemm_flops / ms / 1e6 for ms in cell.pop("sgemm")]
                    work = {f"mimo-{m}": flops[m]["total"] for m in args.members}
                    work |= {f"ensemble-{m}": m * member_flops for m in ensemble_sizes}
                    rows += cell_rows(net_name, threads, batch, cell, work, sgemm)
                    print(
                        f"  {net_name}, {threads} thread(s), batch {batch}: done",
                        file=sys.stderr,
                        flush=True,
                    )
                del mimo_sessions, member_sessions, runners

    peak_after = {
        t: sgemm_gflops(args.peak_size, t, args.repeats, args.sample_s) for t in peak_threads
    }
    peak = {
        str(t): {
            "gflops": max(peak_before[t]["gflops"], peak_after[t]["gflops"]),
            "before": peak_before[t],
            "after": peak_after[t],
        }
        for t in peak_threads
    }
    return {
        "machine": machine_info()
        | {
            "torch": torch.__version__,
            # the machine may be shared: 1-minute load averages around the run
            "load_before": load_before[0],
            "load_after": os.getloadavg()[0],
        },
        "settings": {
            "networks": args.networks,
            "members": args.members,
            "batches": args.batches,
            "threads": args.threads,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "sample_s": args.sample_s,
            "peak_size": args.peak_size,
            "opset": OPSET,
            "session": "service.runtime.create_session (ORT_ENABLE_ALL, sequential, no spinning)",
        },
        "peak_sgemm": peak,
        "networks": networks,
        "rows": rows,
        "targets": targets(rows),
    }


def cell_rows(
    net_name: str,
    threads: int,
    batch: int,
    cell: dict[str, list[float]],
    flops: dict[str, int],
    sgemm: list[float],
) -> list[dict[str, Any]]:
    """The table's rows of one (network, threads, batch): `cell` holds each variant's ms per
    call, `flops` its FLOPs per image, `sgemm` the GFLOP/s of the sgemm taking turns with them."""
    base = cell.get("mimo-1")
    out = []
    for name, samples in cell.items():
        kind, m_text = name.split("-")
        m = int(m_text)
        ms = statistics.median(samples)
        achieved = [flops[name] * batch / x / 1e6 for x in samples]  # GFLOP/s, per repeat
        mimo_same_m = cell.get(f"mimo-{m}")
        row = {
            "network": net_name,
            "threads": threads,
            "batch": batch,
            "kind": kind,
            "members": m,
            "ms_per_batch": ms,
            "ms_samples": samples,
            "ms_min": min(samples),  # the least disturbed sample, for a machine shared with others
            "images_per_s": batch / ms * 1e3,
            "ratio_to_m1": None if base is None else median_ratio(samples, base),
            "ensemble_over_mimo": (
                median_ratio(samples, mimo_same_m)
                if kind == "ensemble" and mimo_same_m is not None
                else None
            ),
            "gflop_per_image": flops[name] / 1e9,
            "gflops_per_s": flops[name] * batch / ms / 1e6,
            # against the sgemm measured side by side, at the same thread count
            "sgemm_gflops_per_s": statistics.median(sgemm),
            "percent_of_peak": 100.0 * median_ratio(achieved, sgemm),
        }
        out.append(row)
    order = {"mimo": 0, "ensemble": 1}
    return sorted(out, key=lambda r: (r["members"], order[r["kind"]]))


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's two targets at M = 3, per (network, threads, batch) that measured them."""
    out = []
    cells = sorted({(r["network"], r["threads"], r["batch"]) for r in rows}, key=str)
    for net, threads, batch in cells:
        cell = {
            (r["kind"], r["members"]): r
            for r in rows
            if (r["network"], r["threads"], r["batch"]) == (net, threads, batch)
        }
        mimo, ens = cell.get(("mimo", TARGET_M)), cell.get(("ensemble", TARGET_M))
        if mimo is None or mimo["ratio_to_m1"] is None or ens is None:
            continue
        out.append(
            {
                "network": net,
                "threads": threads,
                "batch": batch,
                "mimo3_over_m1": mimo["ratio_to_m1"],
                "mimo3_over_m1_max": MAX_MIMO_OVER_SINGLE,
                "mimo3_over_m1_met": mimo["ratio_to_m1"] <= MAX_MIMO_OVER_SINGLE,
                "ensemble3_over_mimo3": ens["ensemble_over_mimo"],
                "ensemble3_over_mimo3_min": MIN_ENSEMBLE_OVER_MIMO,
                "ensemble3_over_mimo3_met": ens["ensemble_over_mimo"] >= MIN_ENSEMBLE_OVER_MIMO,
            }
        )
    return out


# --- report ----------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    peak = result["peak_sgemm"]
    lines = [
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; "
        f"onnxruntime {result['machine']['onnxruntime']}; 1-minute load "
        f"{result['machine']['load_before']:.1f} before, {result['machine']['load_after']:.1f} "
        f"after. fp32 sgemm alone (torch, {result['settings']['peak_size']}^2): "
        + ", ".join(f"{float(v['gflops']):.0f} GFLOP/s at {t} thread(s)" for t, v in peak.items())
        + ". % of peak: against the sgemm run side by side (last column).",
        "",
        "| network | threads | batch | model | ms/batch | images/s | x M=1 | ensemble/MIMO "
        "| GFLOP/image | GFLOP/s | % of peak | sgemm GFLOP/s |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        model = f"MIMO M={r['members']}" if r["kind"] == "mimo" else f"ensemble {r['members']}xM=1"
        lines.append(
            f"| {r['network']} | {r['threads']} | {r['batch']} | {model} "
            f"| {fmt(r['ms_per_batch'], 3)} | {fmt(r['images_per_s'], 0)} "
            f"| {fmt(r['ratio_to_m1'])} | {fmt(r['ensemble_over_mimo'])} "
            f"| {fmt(r['gflop_per_image'], 4)} | {fmt(r['gflops_per_s'], 1)} "
            f"| {fmt(r['percent_of_peak'], 1)} | {fmt(r['sgemm_gflops_per_s'], 0)} |"
        )
    if result["targets"]:
        lines += [
            "",
            f"Targets: MIMO M=3 time <= {MAX_MIMO_OVER_SINGLE:.2f} x M=1; "
            f"ensemble of 3 time >= {MIN_ENSEMBLE_OVER_MIMO:.1f} x MIMO M=3.",
            "",
            "| network | threads | batch | MIMO M=3 / M=1 | met | ensemble 3 / MIMO M=3 | met |",
            "|---|---:|---:|---:|---|---:|---|",
        ]
        for t in result["targets"]:
            lines.append(
                f"| {t['network']} | {t['threads']} | {t['batch']} "
                f"| {t['mimo3_over_m1']:.3f} | {'yes' if t['mimo3_over_m1_met'] else 'NO'} "
                f"| {t['ensemble3_over_mimo3']:.2f} "
                f"| {'yes' if t['ensemble3_over_mimo3_met'] else 'NO'} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = benchmark(args)
    print(markdown(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
