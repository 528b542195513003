"""Evaluate MIMO models like the paper: clean, corrupted and out-of-distribution data.

Every model is evaluated through ONNX Runtime, the engine that serves it: a checkpoint is
converted in memory first. A deep ensemble is several checkpoints whose heads are pooled (one
forward pass each). The temperature and the `uncertain` thresholds are fitted on the training
run's validation split, never on test data.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from service.contract import DEFAULT_UNCERTAIN_MEASURE, contract_of
from service.uncertainty import ensemble_uncertainty
from training import metrics
from training.calibration import calibrate, scored, uncertainty_scores, validation_split
from training.checkpoint import config_from_dict, load_checkpoint, model_from_checkpoint
from training.conversion import to_onnx_bytes
from training.corruptions import CORRUPTIONS, corrupt
from training.data import ImageDataset, load_dataset
from training.files import write_atomic
from training.ood import EVALUATION_FAMILIES, TRAINING_FAMILIES, invert, make_ood
from training.predictor import OnnxPredictor, as_float

SCORES = ("mutual_information", "predictive_entropy", "expected_entropy", "max_probability")


def classification_metrics(
    logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0
) -> dict[str, Any]:
    """Ensemble and per-member accuracy, NLL, ECE, Brier, and mean uncertainty, [N, M, K]."""
    u = ensemble_uncertainty(logits, temperature)
    member_nll = [
        metrics.ensemble_nll(logits[:, m : m + 1], labels, temperature)
        for m in range(logits.shape[1])
    ]
    return {
        "accuracy": metrics.accuracy(u.probabilities, labels),
        "nll": metrics.ensemble_nll(logits, labels, temperature),
        "ece": metrics.ece(u.probabilities, labels),
        "brier": metrics.brier(u.probabilities, labels),
        "member_accuracy": [
            metrics.accuracy(u.member_probabilities[:, m], labels) for m in range(logits.shape[1])
        ],
        "member_nll": member_nll,
        "disagreement": float(u.disagreement.mean()),
        "mutual_information": float(u.mutual_information.mean()),
    }


def misclassification(
    scores: dict[str, np.ndarray], correct: np.ndarray, thresholds: dict[str, float]
) -> dict[str, Any]:
    """Per signal: how it ranks wrong answers (metrics.selective_metrics) and, at the threshold
    that flags 5 % of validation images, the share of answers wrong and not flagged (silent
    errors) and the share of wrong answers flagged."""
    out: dict[str, Any] = {}
    for score in SCORES:
        found = metrics.selective_metrics(scores[score], correct)
        if score in thresholds:
            flagged = scores[score] > thresholds[score]
            found["silent_errors"] = float((~correct & ~flagged).mean())
            found["errors_flagged"] = float(flagged[~correct].mean()) if (~correct).any() else 1.0
        out[score] = found
    return out


def evaluate(
    predictor: OnnxPredictor,
    test: ImageDataset,
    calibration: dict[str, Any],
    corruption_limit: int = 2000,
    ood_count: int = 2000,
    seed: int = 0,
    test_logits: np.ndarray | None = None,
) -> dict[str, Any]:
    """All metrics of one model (or ensemble) on a test set; see the module docstring.

    `test_logits` ([N, M, K], already computed by the caller) saves a pass over the test set.
    """
    temperature = calibration["temperature"]
    mi_threshold = calibration["thresholds"]["mutual_information"]
    x_test = as_float(test.images)
    logits = predictor(x_test) if test_logits is None else test_logits
    result: dict[str, Any] = {
        "dataset": test.name,
        "test_size": len(test),
        **calibration,
        "clean": classification_metrics(logits, test.labels),
        "clean_calibrated": classification_metrics(logits, test.labels, temperature),
    }
    in_scores, correct = scored(logits, test.labels, temperature)
    result["clean"]["uncertain_fraction"] = float(
        (in_scores["mutual_information"] > mi_threshold).mean()
    )
    # (an exported model's contract has the measures' thresholds only: no max-probability one)
    flag_at = calibration.get("score_thresholds", calibration["thresholds"])
    result["clean"]["flagged"] = metrics.flagged_shares(in_scores, flag_at)
    result["misclassification"] = {"clean": misclassification(in_scores, correct, flag_at)}

    # Corrupted: every corruption at 5 severities on the same (first) test images.
    subset = slice(0, min(corruption_limit, len(test)))
    result["corrupted"], result["misclassification"]["corrupted"] = corrupted_metrics(
        predictor, x_test[subset], test.labels[subset], temperature, flag_at, seed
    )

    # Out of distribution: synthetic families never used for training, and inverted test images.
    ood_sets = {
        name: make_ood(name, ood_count, test.shape, seed=seed + i)
        for i, name in enumerate(EVALUATION_FAMILIES)
    }
    ood_sets["inverted"] = invert(x_test[:ood_count])
    for name in TRAINING_FAMILIES:  # reported apart: seen by the outlier loss, if used
        ood_sets[f"{name} (training family)"] = make_ood(
            name, ood_count, test.shape, seed=seed + 99
        )
    result["ood"] = {
        name: ood_entry(predictor(x), in_scores, temperature, mi_threshold, flag_at)
        for name, x in ood_sets.items()
    }
    result["ood_mean"] = ood_mean(result["ood"])

    result["inference"] = {
        "forward_passes": predictor.forward_passes,
        "ms_per_image_batch_1": 1e3 * predictor.seconds_per_image(test.shape, 1, repeats=50),
        "ms_per_image_batch_256": 1e3 * predictor.seconds_per_image(test.shape, 256, repeats=5),
    }
    return result


def corrupted_metrics(
    predictor: OnnxPredictor,
    x: np.ndarray,
    labels: np.ndarray,
    temperature: float,
    flag_at: dict[str, float],
    seed: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every corruption at 5 severities of float32 images x [N, C, H, W]: the metrics per
    corruption and severity with their mean, and misclassification over all of them pooled."""
    by_corruption: dict[str, dict[str, Any]] = {}
    rows = []
    pooled_scores: dict[str, list[np.ndarray]] = {score: [] for score in SCORES}
    pooled_correct = []
    for name in tqdm(CORRUPTIONS, desc="corruptions", leave=False):
        by_corruption[name] = {}
        for severity in range(1, 6):
            z = predictor(corrupt(x, name, severity, seed=seed))
            r = classification_metrics(z, labels)
            by_corruption[name][str(severity)] = r
            rows.append(r)
            scores, right = scored(z, labels, temperature)
            for score, values in scores.items():
                pooled_scores[score].append(values)
            pooled_correct.append(right)
    corrupted = {
        "images": len(x),
        "mean": {
            k: float(np.mean([r[k] for r in rows])) for k in ("accuracy", "nll", "ece", "brier")
        },
        "by_corruption": by_corruption,
    }
    pooled = misclassification(
        {score: np.concatenate(v) for score, v in pooled_scores.items()},
        np.concatenate(pooled_correct),
        flag_at,
    )
    return corrupted, pooled


def ood_entry(
    logits: np.ndarray,
    in_scores: dict[str, np.ndarray],
    temperature: float,
    mi_threshold: float,
    flag_at: dict[str, float],
) -> dict[str, Any]:
    """One OOD set's logits [N, M, K] against the test set's scores: how well each signal tells
    them apart, and the share flagged."""
    out_scores = uncertainty_scores(logits, temperature)
    entry: dict[str, Any] = {
        score: metrics.ood_metrics(in_scores[score], out_scores[score]) for score in SCORES
    }
    entry["uncertain_fraction"] = float((out_scores["mutual_information"] > mi_threshold).mean())
    entry["flagged"] = metrics.flagged_shares(out_scores, flag_at)
    return entry


def ood_mean(ood: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The mean over the held-out OOD sets (not the training families)."""
    held_out = [k for k in ood if "training family" not in k]
    mean: dict[str, Any] = {
        score: {
            m: float(np.mean([ood[k][score][m] for k in held_out]))
            for m in ("auroc", "aupr", "fpr_at_95_tpr")
        }
        for score in SCORES
    }
    mean["uncertain_fraction"] = float(np.mean([ood[k]["uncertain_fraction"] for k in held_out]))
    mean["flagged"] = {
        score: float(np.mean([ood[k]["flagged"][score] for k in held_out]))
        for score in ood[held_out[0]]["flagged"]
    }
    return mean


# ---- loading what to evaluate ----


def load_checkpoints(paths: Sequence[str | Path]) -> tuple[list[dict[str, Any]], OnnxPredictor]:
    checkpoints = [load_checkpoint(p) for p in paths]
    splits = {_split_of(c) for c in checkpoints}
    if len(splits) > 1:
        raise ValueError(
            f"the checkpoints hold out different validation splits {sorted(splits)}: an "
            "ensemble would be calibrated on data some members trained on; train them with "
            "the same --val-seed"
        )
    graphs = [to_onnx_bytes(model_from_checkpoint(c)) for c in checkpoints]
    return checkpoints, OnnxPredictor.from_bytes(graphs)


def _split_of(checkpoint: dict[str, Any]) -> tuple[str, int, int]:
    config = config_from_dict(checkpoint["config"])
    return config.dataset, config.val_size, config.split_seed


def add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="accuracy, NLL, ECE, Brier, corrupted and OOD metrics")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--checkpoint", nargs="+", help="model.pt; several M=1 checkpoints form a deep ensemble"
    )
    what.add_argument("--onnx", help="an exported model.onnx (its temperature and thresholds)")
    p.add_argument("--dataset", help="with --onnx: dataset name (default: the model's)")
    p.add_argument("--data-dir", help="dataset folder (default: the one used for training)")
    p.add_argument(
        "--out", required=True, help="folder for metrics.json, report.md, reliability.png"
    )
    p.add_argument("--corruption-limit", type=int, default=2000, help="test images per corruption")
    p.add_argument("--ood-count", type=int, default=2000, help="images per OOD family")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from training.report import write_report  # matplotlib: loaded only to write a report

    if args.onnx:
        predictor = OnnxPredictor.from_bytes([str(Path(args.onnx))])
        session = predictor.sessions[0]
        contract = contract_of(session, args.onnx)
        dataset = args.dataset or contract.training.get("dataset")
        calibration = {"temperature": contract.temperature, "thresholds": contract.thresholds}
        describe: dict[str, Any] = {"onnx": args.onnx, "training": contract.training}
        measure = contract.uncertain_measure
        data_dir = args.data_dir
        # The test images must have the model's input format (imagefolder is resized to it).
        channels, image_size, _ = contract.input_shape
        color = "L" if channels == 1 else "RGB"
    else:
        checkpoints, predictor = load_checkpoints(args.checkpoint)
        val = validation_split(checkpoints[0])
        calibration = calibrate(predictor(as_float(val.images)), val.labels)
        first = checkpoints[0]["config"]
        dataset, data_dir = first["dataset"], args.data_dir or first["data_dir"]
        image_size, color = first.get("image_size"), first.get("color")
        measure = DEFAULT_UNCERTAIN_MEASURE  # export chooses the served one later
        describe = {
            "checkpoints": [str(p) for p in args.checkpoint],
            "config": first,
            "history": checkpoints[0].get("history", [])[-1:],
        }
    test = load_dataset(dataset, "test", data_dir, image_size, color)
    logits = predictor(as_float(test.images))
    result = evaluate(
        predictor, test, calibration, args.corruption_limit, args.ood_count, args.seed, logits
    )
    result["model"] = describe
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "metrics.json", json.dumps(result, indent=2))
    write_report(result, logits, test.labels, out, measure)
    c = result["clean"]
    print(
        f"{out}: accuracy {c['accuracy']:.4f} nll {c['nll']:.4f} ece {c['ece']:.4f} "
        f"members {[round(a, 4) for a in c['member_accuracy']]} "
        f"corrupted accuracy {result['corrupted']['mean']['accuracy']:.4f} "
        f"OOD AUROC(MI) {result['ood_mean']['mutual_information']['auroc']:.3f}"
    )
    return 0
