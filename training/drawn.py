"""How an exported model answers drawings made as on the web page (training/strokes.py): the
share of drawn digits answered right and left unflagged, and the share of drawn non-digits
flagged `uncertain` by the model's own flag (its measure and threshold), for the shapes trained
on as outliers (`pen_strokes`) and for the held-out ones.

    python -m training drawn --model models/mnist/1/model.onnx --out drawn.json

The page test (tests/service/test_page.py) draws some of the same shapes with a pointer in a
real browser; this draws many hands of each, offline, through the same preprocessing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from service.contract import FLAG_MEASURES, contract_of
from service.uncertainty import ensemble_uncertainty
from training.glyphs import DIGITS, HELD_OUT, NON_DIGITS, Shape
from training.predictor import OnnxPredictor
from training.strokes import drawn

GROUPS: dict[str, dict[str, Shape]] = {
    "digits": DIGITS,
    "non_digits": NON_DIGITS,
    "held_out": HELD_OUT,
}


def drawn_rates(model: Path, hands: int = 20, seed: int = 0) -> dict[str, Any]:
    """Per group and per shape: flagged share; for digits also right, and right unflagged.
    `by_measure`: the group rates had the flag used each measure the file has a threshold for."""
    predictor = OnnxPredictor.from_bytes([str(model)])
    contract = contract_of(predictor.sessions[0], model.name)
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {
        "model": str(model),
        "hands_per_shape": hands,
        "seed": seed,
        "measure": contract.uncertain_measure,
        "threshold": contract.threshold,
    }
    # a single network's heads cannot disagree: its mutual information is 0 up to rounding
    measures = [
        m
        for m in FLAG_MEASURES
        if m in contract.thresholds and (contract.ensemble_size > 1 or m != "mutual_information")
    ]
    by_measure: dict[str, dict[str, float]] = {m: {} for m in measures}
    for group, shapes in GROUPS.items():
        names = sorted(shapes)
        images = np.stack(
            [drawn(shapes[name], contract.preprocess, rng) for name in names for _ in range(hands)]
        )  # [shapes * hands, C, H, W]
        u = ensemble_uncertainty(predictor(images), contract.temperature)
        flagged = (getattr(u, contract.uncertain_measure) > contract.threshold).reshape(-1, hands)
        predicted = u.probabilities.argmax(axis=1).reshape(-1, hands)
        # [shapes, hands]: answered right (digits only: a digit shape's name is its label)
        right = None
        if group == "digits":
            right = predicted == np.array([int(n) for n in names])[:, None]
        for m in measures:
            other = (getattr(u, m) > contract.thresholds[m]).reshape(-1, hands)
            if right is not None:
                by_measure[m]["digits_right_unflagged"] = float((right & ~other).mean())
            else:
                by_measure[m][f"{group}_flagged"] = float(other.mean())
        shape_rows = {}
        for i, name in enumerate(names):
            row = {"flagged": float(flagged[i].mean())}
            if right is not None:
                row["right"] = float(right[i].mean())
                row["right_unflagged"] = float((right[i] & ~flagged[i]).mean())
            else:
                counts = np.bincount(predicted[i], minlength=len(contract.labels))
                row["answered_as"] = contract.labels[int(counts.argmax())]
            shape_rows[name] = row
        summary = {"flagged": float(flagged.mean()), "shapes": shape_rows}
        if group == "digits":
            summary["right"] = float(np.mean([r["right"] for r in shape_rows.values()]))
            summary["right_unflagged"] = float(
                np.mean([r["right_unflagged"] for r in shape_rows.values()])
            )
        out[group] = summary
    out["by_measure"] = by_measure
    return out


def summary_line(rates: dict[str, Any]) -> str:
    """The headline of `drawn_rates`' answer (or the page's, benchmarks/page_drawings.py)."""
    digits, non, held = rates["digits"], rates["non_digits"], rates["held_out"]
    return (
        f"drawn digits right {digits['right']:.1%}, right and unflagged "
        f"{digits['right_unflagged']:.1%}; drawn non-digits flagged {non['flagged']:.1%} "
        f"(held-out shapes {held['flagged']:.1%})"
    )


def add_drawn_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("drawn", help="drawn digits and non-digits, as the web page draws them")
    p.add_argument("--model", type=Path, required=True, help="an exported model.onnx")
    p.add_argument("--hands", type=int, default=20, help="drawings of each shape")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the rates here as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    rates = drawn_rates(args.model, args.hands, args.seed)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rates, indent=1) + "\n")
    print(f"{args.model}: {summary_line(rates)}")
    for group in ("non_digits", "held_out"):
        missed = {
            name: row["answered_as"]
            for name, row in rates[group]["shapes"].items()
            if row["flagged"] < 0.9
        }
        print(f"  {group} flagged under 90 %, answered as: {missed}")
    for measure, rates_by in rates["by_measure"].items():
        print(f"  by {measure}: " + ", ".join(f"{k} {v:.1%}" for k, v in rates_by.items()))
