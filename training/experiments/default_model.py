"""The shipped default model: train its recipe for 12 epochs, evaluate it on everything, export
it as models/mnist/<version> with its report, drawn-digit rates and model card."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from training.drawn import drawn_rates
from training.experiments.grid import parse
from training.experiments.model_card import model_card
from training.experiments.steps import (
    FULL_EVAL_FLAGS,
    run,
    train_and_evaluate,
    train_log,
    write_record,
)
from training.files import write_atomic
from training.report import markdown as report_markdown

# The default model's recipe: models/mnist/2, a single network with outlier exposure on smooth
# noise and pen strokes, 10 % drawn digits, 12 epochs, seed 1 (docs/results.md, "Session 13").
# models/mnist/1 was `--config w1-m3-rho0-outlier --seed 0 --version 1 --outlier-families
# smooth_noise --drawn-digit-fraction 0`.
DEFAULT_RECIPE = {
    "config": "w1-m1-rho0-oe",
    "seed": 1,
    "version": 2,
    "outlier_families": "smooth_noise,pen_strokes",
    "drawn_digit_fraction": 0.1,
}


def default_model(args: argparse.Namespace) -> None:
    """Train `--config` for `--epochs`, evaluate on everything, export models/mnist/<version>."""
    point = parse(f"{args.config}-s{args.seed}")
    extra: tuple[str, ...] = ()  # the recipe's options beyond the grid point's, as passed on
    if args.outlier_families:
        extra += ("--outlier-families", args.outlier_families)
    if args.drawn_digit_fraction:
        extra += ("--drawn-digit-fraction", f"{args.drawn_digit_fraction:g}")
    suffix = "".join("-" + value.replace(",", "+") for value in extra[1::2])
    runs = Path(args.runs) / f"default-{args.config}{suffix}-e{args.epochs}-s{args.seed}"
    flags = (*point.flags(), "--epochs", str(args.epochs), *extra)
    if args.threads:
        flags += ("--threads", str(args.threads))
    metrics = train_and_evaluate(runs, args.data_dir, flags, FULL_EVAL_FLAGS)
    repository = Path(args.repository)
    target = repository / "mnist" / str(args.version)
    run(
        [
            "export",
            "--checkpoint",
            str(runs / "model.pt"),
            "--evaluation",
            str(runs / "eval" / "metrics.json"),
            "--repository",
            str(repository),
            "--name",
            "mnist",
            "--version",
            str(args.version),
            "--force",
            "--uncertain-measure",
            "auto",  # the served flag's measure, by the evidence on the validation split
        ],
        runs / "export.log",
    )
    for name in ("metrics.json", "reliability.png"):
        shutil.copyfile(runs / "eval" / name, target / name)
    drawn = drawn_rates(target / "model.onnx")  # its `measure`: the one the export chose
    write_record(target / "drawn.json", drawn)
    write_atomic(target / "report.md", report_markdown(metrics, drawn["measure"]))
    seconds, _ = train_log(runs / "train.log")
    reproduce = (
        f"python -m training.experiments default-model --data-dir <mnist> --config {args.config} "
        f"--epochs {args.epochs} --seed {args.seed} --version {args.version} " + " ".join(extra)
    ).rstrip()
    minutes = round(seconds / 60 + 5)  # + evaluation and export
    card = model_card(metrics, args.version, reproduce, minutes, drawn["measure"], drawn)
    write_atomic(target / "README.md", card)
    print(f"model: {target / 'model.onnx'}")
