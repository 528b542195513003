"""Which measure should raise the served `uncertain` flag? The evidence, on validation data.

A user asks the flag two questions: "is this answer likely wrong?" and "is this input unlike
anything the model was trained on?". For each measure of the contract that ranks images, at
its own threshold (the 95th percentile on validation digits: each flags 5 % of them), this
counts the share of wrong answers it flags on the validation split, clean and corrupted (7
corruptions x 5 severities), and the share of synthetic non-digits it flags (the evaluation's
families drawn with a seed of their own, and inverted validation digits). Nothing here reads
test data.

    python -m training flag --onnx models/mnist/1/model.onnx --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from service.contract import ModelContract, contract_of
from training.calibration import scored, uncertainty_scores
from training.corruptions import CORRUPTIONS, corrupt
from training.data import ImageDataset, load_dataset, split_validation
from training.evaluate import misclassification
from training.ood import EVALUATION_FAMILIES, TRAINING_FAMILIES, invert, make_ood
from training.predictor import OnnxPredictor, as_float

CANDIDATES = ("mutual_information", "predictive_entropy", "expected_entropy")
OOD_SEED = 7_000  # far from the evaluation's (0 ...) and training's seeds


def evidence(
    val: tuple[np.ndarray, np.ndarray],
    corrupted: tuple[np.ndarray, np.ndarray],
    outliers: dict[str, np.ndarray],
    temperature: float,
    thresholds: dict[str, float],
) -> dict[str, Any]:
    """Per candidate measure: wrong answers flagged (clean and corrupted), silent errors on
    corrupted digits, misclassification AUROC, and non-digits flagged, at its threshold.
    `val` and `corrupted` are (logits [N, M, K], labels); `outliers` logits by family."""
    found: dict[str, Any] = {}
    figures = {}  # clean / corrupted -> evaluate.misclassification's figures per signal
    for name, (logits, labels) in (("clean", val), ("corrupted", corrupted)):
        figures[name] = misclassification(*scored(logits, labels, temperature), thresholds)
    ood = {family: uncertainty_scores(z, temperature) for family, z in outliers.items()}
    for measure in CANDIDATES:
        if measure not in thresholds:
            continue
        t = thresholds[measure]
        entry: dict[str, Any] = {"threshold": t}
        for name, per_signal in figures.items():
            entry[f"{name}_errors_flagged"] = per_signal[measure]["errors_flagged"]
            entry[f"{name}_auroc"] = per_signal[measure]["auroc"]
        entry["corrupted_silent_errors"] = figures["corrupted"][measure]["silent_errors"]
        entry["ood_flagged"] = {family: float((s[measure] > t).mean()) for family, s in ood.items()}
        entry["ood_flagged_mean"] = float(np.mean(list(entry["ood_flagged"].values())))
        found[measure] = entry
    return found


def choose(found: dict[str, Any]) -> dict[str, Any]:
    """The measure that flags the most wrong corrupted answers and non-digits together (their
    mean), at the same 5 % false-alarm rate on clean digits; ties keep mutual information.
    Also names the best measure for each question alone."""

    def worth(measure: str) -> float:
        e = found[measure]
        return (e["corrupted_errors_flagged"] + e["ood_flagged_mean"]) / 2

    order = sorted(found, key=lambda m: (-round(worth(m), 4), m != "mutual_information"))
    return {
        "measure": order[0],
        "rule": "max of (corrupted validation errors flagged + non-digits flagged) / 2 at "
        "the measure's 95th-percentile threshold on validation digits",
        "worth": {m: worth(m) for m in found},
        "best_for_errors": max(found, key=lambda m: found[m]["corrupted_errors_flagged"]),
        "best_for_outliers": max(found, key=lambda m: found[m]["ood_flagged_mean"]),
    }


def validation_logits(
    predictor: OnnxPredictor, val: ImageDataset, corruption_limit: int, ood_count: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], dict[str, np.ndarray]]:
    """The logits `evidence` needs, from the validation split a run held out."""
    x = as_float(val.images)
    clean = (predictor(x), val.labels)
    subset = x[:corruption_limit]
    logits, labels = [], []
    for name in CORRUPTIONS:
        for severity in range(1, 6):
            logits.append(predictor(corrupt(subset, name, severity, seed=OOD_SEED)))
            labels.append(val.labels[:corruption_limit])
    corrupted = (np.concatenate(logits), np.concatenate(labels))
    families = [*EVALUATION_FAMILIES, *TRAINING_FAMILIES]
    outliers = {
        family: predictor(make_ood(family, ood_count, val.shape, seed=OOD_SEED + i))
        for i, family in enumerate(families)
    }
    outliers["inverted"] = predictor(invert(x[:ood_count]))
    return clean, corrupted, outliers


def decide(
    predictor: OnnxPredictor,
    val: ImageDataset,
    contract: ModelContract,
    corruption_limit: int = 1000,
    ood_count: int = 1000,
) -> dict[str, Any]:
    """The evidence on `val` for a model (its temperature and thresholds) and the choice."""
    clean, corrupted, outliers = validation_logits(predictor, val, corruption_limit, ood_count)
    found = evidence(clean, corrupted, outliers, contract.temperature, contract.thresholds)
    return {"measures": found, "choice": choose(found)}


def add_flag_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("flag", help="which measure should raise `uncertain`: the evidence")
    p.add_argument("--onnx", required=True, help="an exported MNIST model.onnx")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--val-size", type=int, default=5000, help="the run's held-out split size")
    p.add_argument(
        "--split-seed", type=int, default=0, help="its --val-seed (the grid's and default's: 0)"
    )
    p.add_argument("--corruption-limit", type=int, default=1000)
    p.add_argument("--ood-count", type=int, default=1000)
    p.add_argument("--out", type=Path, help="also write the evidence as JSON")
    p.set_defaults(run=run_flag)


def run_flag(args: argparse.Namespace) -> int:
    predictor = OnnxPredictor.from_bytes([args.onnx])
    contract = contract_of(predictor.sessions[0], args.onnx)
    full = load_dataset("mnist", "train", args.data_dir)
    val = split_validation(full, args.val_size, seed=args.split_seed)[1]
    result = {"model": str(args.onnx), **decide(predictor, val, contract)}
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0
