"""The human side of an evaluation: a markdown report and a reliability diagram."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from service.contract import DEFAULT_UNCERTAIN_MEASURE, MEASURE_WORDS
from service.uncertainty import softmax
from training.files import write_atomic
from training.metrics import reliability_bins


def reliability_diagram(probs: np.ndarray, labels: np.ndarray, path: Path, title: str) -> None:
    import matplotlib  # (here: the report's text needs none of it)

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    bins = reliability_bins(probs, labels, n_bins=15)
    centers = (bins.edges[:-1] + bins.edges[1:]) / 2
    width = bins.edges[1] - bins.edges[0]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    filled = bins.counts > 0
    top.bar(
        centers[filled], bins.accuracy[filled], width=width, edgecolor="black", label="accuracy"
    )
    top.bar(
        centers[filled],
        bins.confidence[filled] - bins.accuracy[filled],
        bottom=bins.accuracy[filled],
        width=width,
        color="tab:red",
        alpha=0.4,
        label="gap to confidence",
    )
    top.plot([0, 1], [0, 1], "k--", linewidth=1)
    top.set_ylabel("accuracy")
    top.set_title(title)
    top.legend(loc="upper left")
    bottom.bar(centers, bins.counts / max(1, bins.counts.sum()), width=width, color="gray")
    bottom.set_yscale("log")
    bottom.set_xlabel("confidence (top label, 15 bins)")
    bottom.set_ylabel("share")
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=100)
    plt.close(fig)
    write_atomic(path, image.getvalue())


def _row(name: str, r: dict[str, Any]) -> str:
    members = ", ".join(f"{a:.4f}" for a in r.get("member_accuracy", []))
    return (
        f"| {name} | {r['accuracy']:.4f} | {r['nll']:.4f} | {r['ece']:.4f} | {r['brier']:.4f} "
        f"| {members} |"
    )


def flagged_share(r: dict[str, Any], measure: str) -> float | None:
    """The share of a record's images (an OOD set, the clean test set, their mean) that the
    flag raises when it uses `measure`; None where the record does not say (records written
    before per-measure shares have mutual information's only, as `uncertain_fraction`)."""
    shares = r.get("flagged", {})
    if measure in shares:
        return float(shares[measure])
    return r.get("uncertain_fraction") if measure == DEFAULT_UNCERTAIN_MEASURE else None


def _share(r: dict[str, Any], measure: str) -> str:
    share = flagged_share(r, measure)
    return "–" if share is None else f"{share:.3f}"


def markdown(result: dict[str, Any], measure: str = DEFAULT_UNCERTAIN_MEASURE) -> str:
    """`measure`: the one the served flag uses (the exported file's `mimo.uncertain_measure`)."""
    lines = [
        f"# Evaluation on {result['dataset']} ({result['test_size']} test images)",
        "",
        f"Temperature fitted on the validation split: {result['temperature']:.4f}. "
        f"`uncertain` flags {MEASURE_WORDS[measure]} above {result['thresholds'][measure]:.3g}, "
        "the 95th percentile of its values on the validation split.",
        "",
        "| data | accuracy | NLL | ECE | Brier | member accuracies |",
        "|---|---|---|---|---|---|",
        _row("clean", result["clean"]),
        _row("clean, temperature-scaled", result["clean_calibrated"]),
        _row(
            f"corrupted (mean of {len(result['corrupted']['by_corruption'])} x 5 severities, "
            f"{result['corrupted']['images']} images)",
            {**result["corrupted"]["mean"], "member_accuracy": []},
        ),
        "",
        "## Corruptions (accuracy by severity 1-5)",
        "",
        "| corruption | 1 | 2 | 3 | 4 | 5 |",
        "|---|---|---|---|---|---|",
    ]
    for name, by_severity in result["corrupted"]["by_corruption"].items():
        accs = " | ".join(f"{by_severity[str(s)]['accuracy']:.3f}" for s in range(1, 6))
        lines.append(f"| {name} | {accs} |")
    lines += [
        "",
        "## Out of distribution (AUROC / AUPR / FPR@95 by score; share flagged `uncertain`)",
        "",
        f"`uncertain`: {MEASURE_WORDS[measure]} above its threshold.",
        "",
        "| OOD set | mutual information | predictive entropy | 1 - max prob | uncertain |",
        "|---|---|---|---|---|",
    ]
    for name, r in result["ood"].items():
        cells = " | ".join(
            f"{r[s]['auroc']:.3f} / {r[s]['aupr']:.3f} / {r[s]['fpr_at_95_tpr']:.3f}"
            for s in ("mutual_information", "predictive_entropy", "max_probability")
        )
        lines.append(f"| {name} | {cells} | {_share(r, measure)} |")
    lines.append(f"| in-distribution test | | | | {_share(result['clean'], measure)} |")
    inf = result["inference"]
    lines += [
        "",
        f"Inference (ONNX Runtime, CPU): {inf['ms_per_image_batch_1']:.3f} ms per image at "
        f"batch 1, {inf['ms_per_image_batch_256']:.3f} ms per image at batch 256, "
        f"{inf['forward_passes']} forward pass(es) per image.",
        "",
        "![reliability diagram](reliability.png)",
        "",
    ]
    return "\n".join(lines)


def write_report(
    result: dict[str, Any],
    logits: np.ndarray,
    labels: np.ndarray,
    out: Path,
    measure: str = DEFAULT_UNCERTAIN_MEASURE,
) -> None:
    write_atomic(out / "report.md", markdown(result, measure))
    probs = softmax(logits, result["temperature"]).mean(axis=1)
    reliability_diagram(
        probs, labels, out / "reliability.png", f"{result['dataset']}, temperature-scaled"
    )
