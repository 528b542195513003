"""docs/results.md from hand-made records whose comparisons are known."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training.experiments.grid import GridPoint
from training.experiments.grid_tables import stat
from training.experiments.model_card import model_card
from training.experiments.records import load_grid
from training.experiments.rendering import render


def metrics(nll: float, ece: float, accuracy: float = 0.99, heads: int = 1) -> dict[str, Any]:
    clean = {
        "accuracy": accuracy,
        "nll": nll,
        "ece": ece,
        "brier": 0.01,
        "member_accuracy": [accuracy - 0.001] * heads,
        "member_nll": [nll + 0.001 * (heads > 1)] * heads,
        "disagreement": 0.01 * (heads > 1),
        "uncertain_fraction": 0.04,
    }
    return {
        "temperature": 1.0,
        "thresholds": {"mutual_information": 0.01},
        "clean": clean,
        "clean_calibrated": {**clean, "nll": nll * 0.9, "ece": ece * 0.9},
        "corrupted": {"images": 2000, "mean": {"accuracy": 0.5, "nll": 3.0, "ece": 0.2}},
        "ood_mean": {"mutual_information": {"auroc": 0.98}, "uncertain_fraction": 0.96},
        "model": {
            "config": {
                "arch": "cnn",
                "width": 1.0,
                "ensemble_size": heads,
                "epochs": 3,
                "input_repetition": 0.0,
                "batch_repetition": 2,
                "seed": 0,
                "outlier_weight": 1.0,
            }
        },
    }


def write(root: Path, point: GridPoint, m: dict[str, Any]) -> None:
    from dataclasses import asdict

    record = {
        "point": asdict(point),
        "epochs": 3,
        "threads": 1,
        "train_seconds": 300.0,
        "parameters": 471_166,
        "metrics": m,
    }
    (root / "grid").mkdir(parents=True, exist_ok=True)
    (root / "grid" / f"{point.name}.json").write_text(json.dumps(record))


def test_stat_is_mean_and_sample_deviation() -> None:
    assert stat([0.5]) == "0.5000"
    assert stat([1.0, 3.0], digits=1) == "2.0 ± 1.4"
    assert stat([0.991, 0.993], 2, 100) == "99.20 ± 0.14"


def test_configurations_group_seeds(tmp_path: Path) -> None:
    write(tmp_path, GridPoint(1.0, 3, seed=0), metrics(0.02, 0.002, heads=3))
    write(tmp_path, GridPoint(1.0, 3, seed=1), metrics(0.04, 0.004, heads=3))
    write(tmp_path, GridPoint(1.0, 1), metrics(0.03, 0.003))
    configs, ensembles = load_grid(tmp_path / "grid")
    assert [c.point.config for c in configs] == ["w1-m1-rho0-plain", "w1-m3-rho0-plain"]
    assert list(configs[1].values("clean", "nll")) == [0.02, 0.04]
    assert ensembles == []


def test_results_page_says_which_configuration_beats_the_deterministic_network(
    tmp_path: Path,
) -> None:
    write(tmp_path, GridPoint(1.0, 1), metrics(0.020, 0.002))
    write(tmp_path, GridPoint(1.0, 3, 0.5), metrics(0.015, 0.001, heads=3))  # better
    write(tmp_path, GridPoint(1.0, 2), metrics(0.030, 0.001, heads=2))  # worse NLL
    ensemble = {"ensemble": {"width": 1.0, "seeds": [0, 1, 2]}, "metrics": metrics(0.01, 0.001)}
    (tmp_path / "grid" / "w1-ensemble3-012.json").write_text(json.dumps(ensemble))
    notes = tmp_path / "notes.md"
    notes.write_text("## What the numbers say\n")
    output = tmp_path / "results.md"
    render(output, notes, records=tmp_path)
    text = output.read_text()
    against = text.split("### Against")[1].split("###")[0]
    rows = {r.split(" | ")[1]: r for r in against.splitlines() if r.startswith("| 1 | M=")}
    assert "-0.0050 | -0.0010 |" in rows["M=3 rho=0.5"]
    assert rows["M=3 rho=0.5"].endswith("raw and (T) |")
    assert rows["M=2 rho=0"].endswith("no |")
    assert "deep ensemble of 3 deterministic" in text
    clean = text.split("### Against")[0]
    assert "| 0.0010 |" in clean.split("M=3 rho=0.5")[1].splitlines()[0]  # the ensemble gain
    assert "471,166" in text
    assert text.rstrip().endswith("## What the numbers say")
    assert (tmp_path / "grid.png").stat().st_size > 10_000
    assert "](grid.png)" in text


def test_model_card_states_the_recipe_and_the_numbers() -> None:
    card = model_card(metrics(0.0165, 0.0041, 0.9948, heads=3), 2, "make default-model", 30)
    assert card.startswith("# mnist / 2")
    assert "M=3" in card and "99.48%" in card and "0.0165 / 0.0041" in card
    assert "outlier-disagreement loss" in card
    assert "about 30 minutes" in card
    assert "mutual information (the heads' disagreement)" in card
    assert "| test digits flagged `uncertain` | 4.0% |" in card  # (an old record: MI's share)


def test_model_card_follows_the_loss_the_flag_and_the_drawings() -> None:
    m = metrics(0.0120, 0.0015, 0.9964)
    m["thresholds"]["predictive_entropy"] = 0.25
    m["ood_mean"]["predictive_entropy"] = {"auroc": 0.99}
    m["model"]["config"] |= {"outlier_loss": "uniform", "drawn_digit_fraction": 0.1}
    drawn = {
        "digits": {"right": 0.98, "right_unflagged": 0.82},
        "non_digits": {"flagged": 1.0},
        "held_out": {"flagged": 0.967},
    }
    card = model_card(m, 2, "make default-model", 30, "predictive_entropy", drawn)
    assert "A single network (M=1)" in card and "1 prediction." in card
    assert "outlier exposure" in card and "disagreement loss" not in card
    assert "10 % more of each step are digits drawn" in card
    assert "predictive entropy (of the heads' mean)\n  > 0.25" in card
    assert "| 98.0% / 82.0% |" in card and "| 100.0% / 96.7% |" in card
    # Shares flagged by the flag's own measure: never mutual information's under its name.
    assert "| test digits flagged `uncertain` | not measured |" in card
    m["clean"]["flagged"] = {"predictive_entropy": 0.045}
    m["ood_mean"]["flagged"] = {"predictive_entropy": 0.97}
    card = model_card(m, 2, "make default-model", 30, "predictive_entropy", drawn)
    assert "| test digits flagged `uncertain` | 4.5% |" in card
    assert "| held-out OOD flagged `uncertain` (mean over families) | 97.0% |" in card


def scored(m: dict[str, Any], wrong_auroc: float, ood_auroc: float) -> dict[str, Any]:
    """`m` with every signal's misclassification and OOD figures (session 8's records)."""
    signals = ("mutual_information", "predictive_entropy", "expected_entropy", "max_probability")
    each = {
        "auroc": wrong_auroc,
        "aurc": 0.004,
        "augrc": 0.02,
        "silent_errors": 0.05,
        "accuracy_at_90": 0.6,
    }
    m = json.loads(json.dumps(m))
    m["misclassification"] = {"clean": dict.fromkeys(signals, each)}
    m["misclassification"]["corrupted"] = dict.fromkeys(signals, each)
    m["ood_mean"] |= {s: {"auroc": ood_auroc} for s in signals}
    m["ood_mean"]["flagged"] = dict.fromkeys(signals, 0.9)
    return m


def test_every_signal_of_the_scored_models_is_tabled(tmp_path: Path) -> None:
    write(tmp_path, GridPoint(1.0, 1), metrics(0.02, 0.002))  # an older record: not scored
    oe = GridPoint(1.0, 1, outlier=True, oe=True)
    write(tmp_path, oe, scored(metrics(0.02, 0.002), 0.91, 0.97))
    write(
        tmp_path,
        GridPoint(1.0, 3, 0.5, outlier=True),
        scored(metrics(0.02, 0.002, heads=3), 0.93, 0.99),
    )
    ensemble = {
        "ensemble": {"width": 1.0, "seeds": [0, 1, 2], "oe": True},
        "metrics": scored(metrics(0.01, 0.001), 0.92, 0.98),
    }
    (tmp_path / "grid" / "w1-oe-ensemble3-012.json").write_text(json.dumps(ensemble))
    notes = tmp_path / "notes.md"
    notes.write_text("")
    output = tmp_path / "results.md"
    render(output, notes, records=tmp_path)
    assert "| 1 | deep ensemble of 3 deterministic +OE | 1 ensembles |" in output.read_text()
    section = output.read_text().split("### Every signal")[1]
    rows = [r for r in section.splitlines() if r.startswith("| 1 |")]
    # the single network: its two signals; MIMO: all four; the unscored record: none
    assert [r.split(" | ")[1:3] for r in rows] == [
        ["deterministic +OE", "predictive entropy"],
        ["deterministic +OE", "1 - max probability"],
        ["M=3 rho=0.5 +outlier", "mutual information"],
        ["M=3 rho=0.5 +outlier", "predictive entropy"],
        ["M=3 rho=0.5 +outlier", "expected entropy"],
        ["M=3 rho=0.5 +outlier", "1 - max probability"],
        *(
            ["deep ensemble of 3 +OE", name]
            for name in (
                "mutual information",
                "predictive entropy",
                "expected entropy",
                "1 - max probability",
            )
        ),
    ]
    assert rows[0].split(" | ")[4:6] == ["0.910", "0.910"] and "| 4.00 |" in rows[0]
