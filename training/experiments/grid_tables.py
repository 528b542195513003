"""The tables of the capacity grid in docs/results.md: every configuration, each against the
deterministic network of its width, under corruption and out of distribution, and every
uncertainty signal."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.experiments.records import Config, Ensemble, Runs


def stat(values: Sequence[float] | np.ndarray, digits: int = 4, scale: float = 1.0) -> str:
    """mean ± sample standard deviation (just the value for one run)."""
    v = np.asarray(values, dtype=float) * scale
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _clean_cells(runs: Runs) -> list[str]:
    return [
        stat(runs.values("clean", "accuracy"), 2, 100),
        stat(runs.values("clean", "nll")),
        stat(runs.values("clean", "ece")),
        stat(runs.values("clean_calibrated", "nll")),
        stat(runs.values("clean_calibrated", "ece")),
        f"{100 * runs.member_accuracy():.2f}",
        f"{runs.ensemble_gain():.4f}",
        stat(runs.values("clean", "disagreement")),
    ]


def grid_section(configs: list[Config], ensembles: list[Ensemble]) -> list[str]:
    if not configs:
        return []
    epochs = {r["epochs"] for c in configs for r in c.records}
    out = [
        "## The capacity grid: width x M x rho x outlier loss",
        "",
        f"The `mnist` preset, {'/'.join(map(str, sorted(epochs)))} epochs for every run, one "
        "thread per training (two at a time on 2 cores); MIMO with batch repetition r = 2, the "
        "deterministic network (M = 1) with r = 1. Width multiplies every channel count of the "
        "small CNN. Mean ± sample standard deviation over the seeds (`runs`). `(T)`: after "
        "temperature scaling on the validation split. `ensemble gain`: mean member NLL minus "
        "the ensemble's NLL, 0 when the heads are copies of each other: the larger, the more "
        "independent the subnetworks. Records: `docs/results/grid/`.",
        "",
        line(
            [
                "width",
                "configuration",
                "runs",
                "parameters",
                "train s/epoch",
                "accuracy %",
                "NLL",
                "ECE",
                "NLL (T)",
                "ECE (T)",
                "members % (mean)",
                "ensemble gain (NLL)",
                "disagreement",
            ]
        ),
        line(["---"] * 13),
    ]
    for c in configs:
        seconds = [r["train_seconds"] / r["epochs"] for r in c.records]
        out.append(
            line(
                [
                    f"{c.point.width:g}",
                    c.label,
                    str(len(c.records)),
                    f"{c.records[0].get('parameters', 0):,}",
                    f"{np.mean(seconds):.0f}",
                    *_clean_cells(c),
                ]
            )
        )
    for e in ensembles:
        out.append(
            line(
                [
                    f"{e.width:g}",
                    e.label.replace("of 3", "of 3 deterministic"),
                    f"{len(e.records)} ensembles",
                    "3 x",
                    "3 x",
                    *_clean_cells(e),
                ]
            )
        )
    out += ["", *against_deterministic(configs), "", *robustness_section(configs, ensembles)]
    out += ["", *signals_section(configs, ensembles)]
    return out


SIGNALS = {
    "mutual_information": "mutual information",
    "predictive_entropy": "predictive entropy",
    "expected_entropy": "expected entropy",
    "max_probability": "1 - max probability",
}


def signals_section(configs: list[Config], ensembles: list[Ensemble]) -> list[str]:
    """Every signal of every model that was scored with all of them (records from session 8
    on): which one spots wrong answers, which one unfamiliar inputs."""
    rows: list[tuple[str, str, Runs, int]] = [
        (f"{c.point.width:g}", c.label, c, c.point.ensemble_size) for c in configs
    ]
    rows += [(f"{e.width:g}", e.label, e, 3) for e in ensembles]
    body = []
    for width, label, runs, heads in rows:
        scored = Runs([r for r in runs.records if "misclassification" in r["metrics"]])
        if not scored.records:
            continue
        for signal, name in SIGNALS.items():
            if heads == 1 and signal in ("mutual_information", "expected_entropy"):
                continue  # 0, and the predictive entropy, for a single network
            clean, corrupted = (
                ("misclassification", "clean", signal),
                (
                    "misclassification",
                    "corrupted",
                    signal,
                ),
            )
            body.append(
                line(
                    [
                        width,
                        label,
                        name,
                        str(len(scored.records)),
                        stat(scored.values(*clean, "auroc"), 3),
                        stat(scored.values(*corrupted, "auroc"), 3),
                        stat(scored.values(*clean, "aurc"), 2, 1000),
                        stat(scored.values(*corrupted, "augrc"), 2, 1000),
                        stat(scored.values(*corrupted, "silent_errors"), 2, 100),
                        stat(scored.values(*corrupted, "accuracy_at_90"), 2, 100),
                        stat(scored.values("ood_mean", signal, "auroc"), 3),
                        stat(scored.values("ood_mean", "flagged", signal), 3),
                    ]
                )
            )
    if not body:
        return []
    return [
        "### Every signal: spotting wrong answers, and unfamiliar inputs",
        "",
        "Each model scored with each signal it has (a single network's mutual information is 0; "
        "its expected entropy is its predictive entropy). Misclassification AUROC: how often a "
        "wrong answer scores above a right one. AURC and AUGRC (x1000, lower = better): the "
        "risk-coverage curve answering the surest first, its mean selective risk and mean "
        "generalised risk (Traub et al., 2024). `silent errors %`: corrupted digits answered "
        "wrong and not flagged at the signal's threshold that flags 5 % of validation digits; "
        "`acc @90 %`: accuracy of the surest 90 % of corrupted digits. OOD: mean over the "
        "held-out families, AUROC and the share flagged at that same threshold. Records scored "
        "this way only (from session 8 on): `runs` may be fewer than above.",
        "",
        line(["width", "configuration", "signal", "runs", "misclass. AUROC clean",
              "misclass. AUROC corrupted", "AURC clean", "AUGRC corrupted", "silent errors %",
              "acc @90 % corrupted", "OOD AUROC", "OOD flagged"]),
        line(["---"] * 12),
        *body,
    ]  # fmt: skip


def against_deterministic(configs: list[Config]) -> list[str]:
    """Each MIMO configuration minus the deterministic network of its width (means)."""
    det = {c.point.width: c for c in configs if c.point.is_deterministic}
    out = [
        "### Against the deterministic network of the same width",
        "",
        "Differences of the means (negative NLL and ECE: MIMO is better). `beats` when both the "
        "clean NLL and ECE are lower, raw or after temperature scaling.",
        "",
        line(["width", "configuration", "Δ accuracy (points)", "Δ NLL", "Δ ECE", "Δ NLL (T)",
              "Δ ECE (T)", "beats?"]),
        line(["---"] * 8),
    ]  # fmt: skip
    for c in configs:
        base = det.get(c.point.width)
        if c.point.is_deterministic or base is None:
            continue

        def delta(*path: str) -> float:
            return float(c.values(*path).mean() - base.values(*path).mean())  # noqa: B023

        raw = delta("clean", "nll") < 0 and delta("clean", "ece") < 0
        scaled = delta("clean_calibrated", "nll") < 0 and delta("clean_calibrated", "ece") < 0
        verdict = "raw and (T)" if raw and scaled else "raw" if raw else "(T)" if scaled else "no"
        out.append(
            line(
                [
                    f"{c.point.width:g}",
                    c.label,
                    f"{100 * delta('clean', 'accuracy'):+.2f}",
                    f"{delta('clean', 'nll'):+.4f}",
                    f"{delta('clean', 'ece'):+.4f}",
                    f"{delta('clean_calibrated', 'nll'):+.4f}",
                    f"{delta('clean_calibrated', 'ece'):+.4f}",
                    verdict,
                ]
            )
        )
    return out


def robustness_section(configs: list[Config], ensembles: list[Ensemble]) -> list[str]:
    out = [
        "### Corrupted data and out of distribution",
        "",
        "Corrupted: mean over the corruptions x 5 severities on the first "
        f"{configs[0].records[0]['metrics']['corrupted']['images']} test images. OOD: mean over "
        "the held-out families; `flagged` is the share above the mutual-information threshold "
        "(95th percentile on validation digits), `test flagged` the share of real test digits "
        "above it.",
        "",
        line(["width", "configuration", "corrupted accuracy %", "corrupted NLL", "corrupted ECE",
              "OOD AUROC MI", "OOD flagged", "test flagged"]),
        line(["---"] * 8),
    ]  # fmt: skip
    rows: list[tuple[str, str, Runs]] = [(f"{c.point.width:g}", c.label, c) for c in configs]
    rows += [(f"{e.width:g}", e.label, e) for e in ensembles]
    for width, label, c in rows:
        out.append(
            line(
                [
                    width,
                    label,
                    stat(c.values("corrupted", "mean", "accuracy"), 2, 100),
                    stat(c.values("corrupted", "mean", "nll"), 3),
                    stat(c.values("corrupted", "mean", "ece"), 3),
                    stat(c.values("ood_mean", "mutual_information", "auroc"), 3),
                    stat(c.values("ood_mean", "uncertain_fraction"), 3),
                    stat(c.values("clean", "uncertain_fraction"), 3),
                ]
            )
        )
    return out
