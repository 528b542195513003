"""docs/results.md and its plot, from the metrics recorded under docs/results/ (no training).

Every grid run left docs/results/grid/<config>-s<seed>.json; deep ensembles left
docs/results/grid/w<width>-ensemble3-<seeds>.json; the 12-epoch deterministic baseline
docs/results/baseline/det12-s0.json; the default model its models/mnist/1/metrics.json.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.experiments.grid import GridPoint, parse
from training.files import write_atomic

ROOT = Path(__file__).resolve().parents[2]
RECORDS = ROOT / "docs" / "results"


@dataclass
class Runs:
    """Runs of one kind (seeds of a configuration, or deep ensembles) and their metrics."""

    records: list[dict[str, Any]]

    def values(self, *path: str | int) -> np.ndarray:
        return np.array([_dig(r["metrics"], path) for r in self.records], dtype=float)


@dataclass
class Config(Runs):
    """One configuration of the grid; `point` is seed 0's (the seed is not part of it)."""

    point: GridPoint

    @property
    def label(self) -> str:
        p = self.point
        loss = (" +OE" if p.oe else " +outlier") if p.outlier else ""
        if p.is_deterministic:
            return "deterministic" + loss
        return f"M={p.ensemble_size} rho={p.rho:g}" + loss


@dataclass
class Ensemble(Runs):
    """Deep ensembles of 3 deterministic networks of one width, one record per triple; `oe`:
    of networks trained with outlier exposure."""

    width: float
    oe: bool = False

    @property
    def label(self) -> str:
        return "deep ensemble of 3" + (" +OE" if self.oe else "")


def _dig(d: Any, path: Iterable[str | int]) -> Any:
    for key in path:
        d = d[key]
    return d


def stat(values: Sequence[float] | np.ndarray, digits: int = 4, scale: float = 1.0) -> str:
    """mean ± sample standard deviation (just the value for one run)."""
    v = np.asarray(values, dtype=float) * scale
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def load_grid(root: Path = RECORDS / "grid") -> tuple[list[Config], list[Ensemble]]:
    configs: dict[str, Config] = {}
    ensembles: dict[tuple[float, bool], Ensemble] = {}
    for path in sorted(root.glob("*.json")):
        record = json.loads(path.read_text())
        if "ensemble" in record:
            width, oe = float(record["ensemble"]["width"]), bool(record["ensemble"].get("oe"))
            ensembles.setdefault((width, oe), Ensemble([], width, oe)).records.append(record)
            continue
        point = parse(path.stem)
        key = point.config
        if key not in configs:
            configs[key] = Config([], GridPoint(**{**record["point"], "seed": 0}))
        configs[key].records.append(record)
    ordered = sorted(configs.values(), key=lambda c: c.point)
    return ordered, sorted(ensembles.values(), key=lambda e: (e.width, e.oe))


def _members(config: Runs) -> float:
    accuracies = [np.mean(r["metrics"]["clean"]["member_accuracy"]) for r in config.records]
    return float(np.mean(accuracies))


def _gain(config: Runs) -> float:
    """How much averaging the heads lowers the NLL: 0 when the heads are copies of each other
    (or there is one head), larger the more independent their errors are."""
    gains = [
        np.mean(r["metrics"]["clean"]["member_nll"]) - r["metrics"]["clean"]["nll"]
        for r in config.records
    ]
    return float(np.mean(gains))


def _clean_cells(runs: Runs) -> list[str]:
    return [
        stat(runs.values("clean", "accuracy"), 2, 100),
        stat(runs.values("clean", "nll")),
        stat(runs.values("clean", "ece")),
        stat(runs.values("clean_calibrated", "nll")),
        stat(runs.values("clean_calibrated", "ece")),
        f"{100 * _members(runs):.2f}",
        f"{_gain(runs):.4f}",
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


def plot_grid(configs: list[Config], ensembles: list[Ensemble], target: Path) -> None:
    """Clean NLL, ECE and member accuracy against width, one line per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        (("clean", "nll"), "clean NLL"),
        (("clean", "ece"), "clean ECE"),
        (None, "member accuracy % (mean of heads)"),
        ("gain", "ensemble gain: mean member NLL - ensemble NLL"),
    )
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.6))
    labels = sorted({c.label for c in configs}, key=lambda s: (s != "deterministic", s))
    for ax, (path, title) in zip(axes, panels, strict=True):
        for label in labels:
            series = sorted((c for c in configs if c.label == label), key=lambda c: c.point.width)
            widths = [c.point.width for c in series]
            if path is None:
                means = [100 * _members(c) for c in series]
                errors = [0.0] * len(series)
            elif path == "gain":
                means = [_gain(c) for c in series]
                errors = [0.0] * len(series)
            else:
                means = [float(c.values(*path).mean()) for c in series]
                errors = [float(c.values(*path).std(ddof=1)) if len(c.records) > 1 else 0.0
                          for c in series]  # fmt: skip
            style = "--" if "outlier" in label else "-"
            width = 2.5 if label == "deterministic" else 1.2
            ax.errorbar(widths, means, yerr=errors, fmt="o" + style, lw=width, capsize=3,
                        label=label)  # fmt: skip
        plain = [e for e in ensembles if not e.oe]  # (the plot follows the plain grid)
        if isinstance(path, tuple) and plain:
            ax.plot(
                [e.width for e in plain],
                [float(e.values(*path).mean()) for e in plain],
                "k*",
                markersize=11,
                label="deep ensemble of 3",
            )
        ax.set_xscale("log", base=2)
        ticks = sorted({c.point.width for c in configs})
        ax.set_xticks(ticks, [f"{w:g}" for w in ticks])
        ax.minorticks_off()
        ax.set_xlabel("width (channel multiplier)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, dpi=110, format="png")
    plt.close(fig)
    write_atomic(target, png.getvalue())


def headline_section(baseline: Path, default: Path) -> list[str]:
    """The default model against a deterministic network trained as long (one seed each)."""
    pairs = [
        ("deterministic (M=1), 12 epochs", baseline),
        ("default model (models/mnist/1): MIMO M=3 + outlier loss, 12 epochs", default),
    ]
    found = []
    for title, path in pairs:
        if path.exists():
            record = json.loads(path.read_text())
            found.append((title, record.get("metrics", record)))
    if len(found) < 2:
        return []
    out = [
        "## At the default model's budget (12 epochs, seed 0, all 10,000 corrupted images)",
        "",
        line(["model", "accuracy %", "NLL", "ECE", "members %", "corrupted acc % / NLL / ECE",
              "OOD AUROC MI", "OOD flagged", "test flagged"]),
        line(["---"] * 9),
    ]  # fmt: skip
    for title, r in found:
        c, k = r["clean"], r["corrupted"]["mean"]
        out.append(
            line(
                [
                    title,
                    f"{100 * c['accuracy']:.2f}",
                    f"{c['nll']:.4f}",
                    f"{c['ece']:.4f}",
                    ", ".join(f"{100 * a:.2f}" for a in c["member_accuracy"]),
                    f"{100 * k['accuracy']:.2f} / {k['nll']:.3f} / {k['ece']:.3f}",
                    f"{r['ood_mean']['mutual_information']['auroc']:.3f}",
                    f"{r['ood_mean']['uncertain_fraction']:.3f}",
                    f"{c['uncertain_fraction']:.3f}",
                ]
            )
        )
    return out


def render(output: Path, notes: Path, records: Path = RECORDS) -> None:
    """Write docs/results.md (and docs/results/grid.png) from the records."""
    configs, ensembles = load_grid(records / "grid")
    if not configs:
        raise SystemExit(f"no grid records under {records / 'grid'}")
    plot = records / "grid.png"
    plot_grid(configs, ensembles, plot)
    link = os.path.relpath(plot, output.parent)
    out = [
        "# Results: MIMO on MNIST",
        "",
        "Generated by `python -m training.experiments table` from the records under "
        "`docs/results/` (`make results` trains and evaluates whatever is missing, then renders "
        "this page). Every model is evaluated through ONNX Runtime on the CPU, as it is "
        "served, on the 10,000 MNIST test images; all runs hold out the same 5,000 validation "
        "images (`--val-seed 0`), where temperatures and `uncertain` thresholds are fitted.",
        "",
        *grid_section(configs, ensembles),
        "",
        f"![clean NLL, ECE and member accuracy against width]({link})",
        "",
        *headline_section(
            records / "baseline" / "det12-s0.json", ROOT / "models" / "mnist" / "1" / "metrics.json"
        ),
    ]
    text = "\n".join(out) + "\n"
    if notes.exists():
        text += "\n" + notes.read_text()
    write_atomic(output, text)
    print(f"wrote {output} and {plot}")


OUTLIER_WORDS = {
    "smooth_noise": "synthetic smooth-noise images",
    "pen_strokes": "letters, symbols and doodles drawn as on the web page (training/strokes.py)",
}


def model_card(metrics: dict[str, Any], version: int, reproduce: str, minutes: int) -> str:
    config = metrics["model"]["config"]
    clean, corrupted = metrics["clean"], metrics["corrupted"]["mean"]
    ood = metrics["ood_mean"]
    members = ", ".join(f"{100 * a:.2f}%" for a in clean["member_accuracy"])
    families = config.get("outlier_families", "smooth_noise").split(",")
    outlier = (
        f", and the outlier-disagreement loss (weight {config['outlier_weight']}) on "
        + " and ".join(OUTLIER_WORDS.get(f, f) for f in families)
        if config["outlier_weight"]
        else ""
    )
    return f"""# mnist / {version}

A MIMO ensemble of M={config["ensemble_size"]} subnetworks in one small CNN
({config["arch"]}, width {config["width"]:g}) for 28x28 grayscale digits, light on dark (MNIST
polarity). One forward pass gives {config["ensemble_size"]} predictions.

- Trained on the 55,000 MNIST training images left after a 5,000-image validation split, with
  the `mnist` preset, {config["epochs"]} epochs, rho={config["input_repetition"]},
  r={config["batch_repetition"]}, seed {config["seed"]}{outlier}.
- Reproduce: `{reproduce}`, about {minutes} minutes on 2 idle CPU cores.
- Temperature {metrics["temperature"]:.4f} and the `uncertain` threshold (mutual information >
  {metrics["thresholds"]["mutual_information"]:.4g}) were fitted on the validation split.

| MNIST test (10,000) | value |
|---|---|
| accuracy | {100 * clean["accuracy"]:.2f}% (members {members}) |
| NLL / ECE / Brier | {clean["nll"]:.4f} / {clean["ece"]:.4f} / {clean["brier"]:.4f} |
| temperature-scaled NLL / ECE | {metrics["clean_calibrated"]["nll"]:.4f} / \
{metrics["clean_calibrated"]["ece"]:.4f} |
| corrupted accuracy / NLL / ECE | {100 * corrupted["accuracy"]:.2f}% / {corrupted["nll"]:.4f} \
/ {corrupted["ece"]:.4f} |
| test digits flagged `uncertain` | {100 * clean["uncertain_fraction"]:.1f}% |
| held-out OOD flagged `uncertain` (mean over families) | {100 * ood["uncertain_fraction"]:.1f}% |
| OOD AUROC by mutual information (mean) | {ood["mutual_information"]["auroc"]:.3f} |

Per family and per corruption: [report.md](report.md); calibration:
[reliability.png](reliability.png).

Limits: trained on centred MNIST digits; other handwriting styles, dark-on-light scans (invert
them first) and natural images are out of distribution, which is what the `uncertain` flag is
for, but no detector catches every shift.
"""
