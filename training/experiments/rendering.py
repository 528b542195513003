"""docs/results.md and its plot, from the metrics recorded under docs/results/ (no training):
records.py reads them, grid_tables.py lays out the grid's tables."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from training.experiments.grid_tables import grid_section, line
from training.experiments.records import RECORDS, ROOT, Config, Ensemble, load_grid
from training.files import write_atomic


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
                means = [100 * c.member_accuracy() for c in series]
                errors = [0.0] * len(series)
            elif path == "gain":
                means = [c.ensemble_gain() for c in series]
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
        ("models/mnist/1 (the first default): MIMO M=3 + outlier loss, 12 epochs", default),
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
