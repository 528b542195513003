"""Reproducible experiment pipelines: train, evaluate, export, and record the metrics.

    python -m training.experiments default-model --data-dir ../shared/data/mnist
    python -m training.experiments grid --data-dir ../shared/data/mnist --widths 1 --seeds 0
    python -m training.experiments results --data-dir ../shared/data/mnist   # everything
    python -m training.experiments table   # re-render docs/results.md from the records

Every step is skipped when its output exists, so an interrupted run continues where it stopped.
Runs (checkpoints, logs) go under --runs; the metrics worth keeping are recorded under
docs/results/ (small JSON files, committed), which is all `table` reads.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from itertools import product
from pathlib import Path
from typing import Any

from training.experiments.default_model import DEFAULT_RECIPE, default_model
from training.experiments.grid import WIDTHS, GridPoint, points
from training.experiments.records import RECORDS, ROOT
from training.experiments.rendering import render
from training.experiments.steps import (
    FULL_EVAL_FLAGS,
    evaluate,
    train_and_evaluate,
    train_log,
    write_record,
)

GRID_EVAL_FLAGS = ("--corruption-limit", "2000", "--ood-count", "1000")


def trained_record(
    out: Path, data_dir: str, flags: Sequence[str], eval_flags: Sequence[str], **extra: Any
) -> dict[str, Any]:
    metrics = train_and_evaluate(out, data_dir, flags, eval_flags)
    seconds, parameters = train_log(out / "train.log")
    return {**extra, "train_seconds": seconds, "parameters": parameters, "metrics": metrics}


def grid_point(
    point: GridPoint,
    runs: Path,
    data_dir: str,
    epochs: int,
    threads: int,
    records: Path = RECORDS / "grid",
    extra: Sequence[str] = (),
) -> Path:
    """Train and evaluate one grid point; record it under `records` (docs/results/grid/).
    `extra`: more training flags (the GPU grid's device; a test's tiny size)."""
    record = records / f"{point.name}.json"
    if record.exists():
        return record
    flags = (*point.flags(), "--epochs", str(epochs), "--threads", str(threads), *extra)
    out = runs / records.name / point.name
    data = trained_record(
        out, data_dir, flags, GRID_EVAL_FLAGS, point=asdict(point), epochs=epochs, threads=threads
    )
    write_record(record, data)
    print(f"done {point.name}", flush=True)
    return record


def grid_ensembles(runs: Path, width: float, seeds: Sequence[int], oe: bool = False) -> None:
    """Deep ensembles of 3 deterministic networks (`oe`: trained with outlier exposure):
    consecutive triples of the seeds given."""
    for i in range(0, len(seeds) - 2, 3):
        triple = seeds[i : i + 3]
        name = f"w{width:g}-{'oe-' if oe else ''}ensemble3-" + "".join(str(s) for s in triple)
        record = RECORDS / "grid" / f"{name}.json"
        if record.exists():
            continue
        members = [
            runs / "grid" / GridPoint(width, 1, outlier=oe, seed=s, oe=oe).name / "model.pt"
            for s in triple
        ]
        missing = [str(m) for m in members if not m.exists()]
        if missing:
            print(f"skip {name}: no {missing}", flush=True)
            continue
        metrics = evaluate(runs / "grid" / name / "eval", members, GRID_EVAL_FLAGS)
        ensemble = {"width": width, "seeds": list(triple), "oe": oe}
        write_record(record, {"ensemble": ensemble, "metrics": metrics})
        print(f"done {name}", flush=True)


def grid(args: argparse.Namespace) -> None:
    runs = Path(args.runs)
    chosen = [
        p
        for p in points(tuple(args.widths), tuple(args.seeds))
        if not args.only or p.config in args.only
    ]
    print(f"{len(chosen)} grid points, {args.jobs} at a time", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        done = [
            pool.submit(grid_point, p, runs, args.data_dir, args.epochs, args.threads)
            for p in chosen
        ]
        for future in done:
            future.result()
    if args.ensembles:
        for width, oe in product(args.widths, (False, True)):
            grid_ensembles(runs, width, args.ensemble_seeds, oe)


def baseline(args: argparse.Namespace) -> None:
    """The deterministic network at the default model's budget (12 epochs), evaluated alike."""
    record = RECORDS / "baseline" / "det12-s0.json"
    if record.exists():
        return
    point = GridPoint(1.0, 1)
    flags = (*point.flags(), "--epochs", "12", "--threads", str(args.threads))
    out = Path(args.runs) / "baseline" / "det12-s0"
    data = trained_record(out, args.data_dir, flags, FULL_EVAL_FLAGS, point=asdict(point))
    write_record(record, {**data, "epochs": 12})


def results(args: argparse.Namespace) -> None:
    """Everything docs/results.md shows: the grid, the deep ensembles, the 12-epoch baseline."""
    args.ensembles = True
    grid(args)
    args.threads = 0  # the baseline trains alone: all cores
    baseline(args)
    table(args)


def table(args: argparse.Namespace) -> None:
    render(Path(args.output), Path(args.notes))


def command_line() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.experiments", description=__doc__)
    parser.add_argument("--runs", default="runs", help="where runs are written")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("default-model", help="train, evaluate and export models/mnist/<version>")
    p.add_argument("--data-dir", required=True)
    # Each option left out takes the default model's value (DEFAULT_RECIPE), outliers and drawn
    # digits included: a grid row as the grid trained it needs `--outlier-families smooth_noise
    # --drawn-digit-fraction 0`.
    p.add_argument("--config", help="a grid configuration name (default: the default model's)")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seed", type=int)
    p.add_argument("--version", type=int)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument(
        "--outlier-families",
        help="the outlier loss's families, comma-separated (default: the default model's, "
        "smooth_noise,pen_strokes: smooth noise and drawings made as on the web page; the grid "
        "trains on smooth_noise alone)",
    )
    p.add_argument(
        "--drawn-digit-fraction",
        type=float,
        help="labelled digits drawn as on the web page, as a share of each step's images "
        "(default: the default model's, 0.1; the grid's is 0)",
    )
    p.add_argument(
        "--repository",
        default=str(ROOT / "models"),
        help="the model repository exported into (another one to try a candidate first)",
    )
    p.set_defaults(run=default_model, **DEFAULT_RECIPE)  # any option given replaces its part

    for name, fn in (("grid", grid), ("results", results)):
        p = sub.add_parser(name, help=(fn.__doc__ or "").split("\n")[0])
        p.add_argument("--data-dir", required=True)
        p.add_argument("--widths", type=float, nargs="+", default=list(WIDTHS))
        p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
        p.add_argument("--only", nargs="+", help="configuration names (w1-m3-rho0.5-outlier ...)")
        p.add_argument("--epochs", type=int, default=3)
        p.add_argument("--jobs", type=int, default=2, help="trainings at a time")
        p.add_argument("--threads", type=int, default=1, help="torch threads per training")
        p.add_argument("--ensembles", action="store_true", help="deep ensembles of the M=1 seeds")
        p.add_argument("--ensemble-seeds", type=int, nargs="+", default=[0, 1, 2])
        p.set_defaults(run=fn)

    rendered = sub.add_parser("table", help="render docs/results.md from docs/results/ only")
    rendered.set_defaults(run=table)
    for p in (sub.choices["results"], rendered):
        p.add_argument("--output", default=str(ROOT / "docs" / "results.md"))
        p.add_argument(
            "--notes",
            default=str(ROOT / "docs" / "results-notes.md"),
            help="hand-written discussion appended to the tables",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = command_line().parse_args(argv)
    args.run(args)
    return 0
