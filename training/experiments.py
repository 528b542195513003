"""Reproducible experiment pipelines: the embedded default model and docs/results.md.

    python -m training.experiments default-model --data-dir ../shared/data/mnist
    python -m training.experiments results --data-dir ../shared/data/mnist --seeds 0 1 2
    python -m training.experiments table          # rewrite docs/results.md from runs/

Every step is skipped when its output exists, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Variant:
    name: str
    title: str
    flags: tuple[str, ...]


# The MNIST recipe at a short, equal budget for every variant; M=1 is an ordinary network, so it
# trains without batch repetition (the paper's deterministic baseline).
VARIANTS = (
    Variant("det", "deterministic (M=1)", ("--ensemble-size", "1", "--batch-repetition", "1")),
    Variant("mimo2", "MIMO M=2", ("--ensemble-size", "2")),
    Variant("mimo3", "MIMO M=3", ("--ensemble-size", "3")),
    Variant("mimo4", "MIMO M=4", ("--ensemble-size", "4")),
    Variant(
        "mimo3-outlier",
        "MIMO M=3 + outlier disagreement",
        ("--ensemble-size", "3", "--outlier-weight", "1.0"),
    ),
)
DEFAULT_MODEL_FLAGS = ("--ensemble-size", "3", "--outlier-weight", "1.0", "--epochs", "12")


def run(args: Sequence[str], log: Path) -> None:
    """Run `python -m training ...`, appending its output to a log; fail loudly."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print("$ python -m training " + " ".join(args), flush=True)
    with log.open("a") as f:
        done = subprocess.run(
            [sys.executable, "-m", "training", *args], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT
        )
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}); see {log}")


def _threads(args: argparse.Namespace) -> tuple[str, ...]:
    return ("--threads", str(args.threads)) if args.threads else ()


def train_and_evaluate(
    out: Path, data_dir: str, flags: Sequence[str], eval_flags: Sequence[str]
) -> dict[str, Any]:
    if not (out / "model.pt").exists():
        command = ["train", "--preset", "mnist", "--data-dir", data_dir, "--out-dir", str(out)]
        command += flags
        if (out / "last.pt").exists():
            command += ["--resume", str(out / "last.pt")]
        run(command, out / "train.log")
    return evaluate(out / "eval", [out / "model.pt"], eval_flags)


def evaluate(out: Path, checkpoints: Sequence[Path], eval_flags: Sequence[str]) -> dict[str, Any]:
    if not (out / "metrics.json").exists():
        run(
            ["evaluate", "--checkpoint", *map(str, checkpoints), "--out", str(out), *eval_flags],
            out.parent / "evaluate.log",
        )
    return json.loads((out / "metrics.json").read_text())


def default_model(args: argparse.Namespace) -> None:
    runs = Path(args.runs) / "default"
    flags = (*DEFAULT_MODEL_FLAGS, "--seed", str(args.seed), *_threads(args))
    eval_flags = ("--corruption-limit", "10000", "--ood-count", "2000")
    train_and_evaluate(runs, args.data_dir, flags, eval_flags)
    target = ROOT / "models" / "mnist" / str(args.version)
    run(
        [
            "export",
            "--checkpoint",
            str(runs / "model.pt"),
            "--evaluation",
            str(runs / "eval" / "metrics.json"),
            "--repository",
            str(ROOT / "models"),
            "--name",
            "mnist",
            "--version",
            str(args.version),
            "--force",
        ],
        runs / "export.log",
    )
    for name in ("metrics.json", "report.md", "reliability.png"):
        shutil.copyfile(runs / "eval" / name, target / name)
    metrics = json.loads((runs / "eval" / "metrics.json").read_text())
    (target / "README.md").write_text(model_card(metrics, args))
    print(f"default model: {target / 'model.onnx'}")


def model_card(metrics: dict[str, Any], args: argparse.Namespace) -> str:
    config = metrics["model"]["config"]
    clean, corrupted = metrics["clean"], metrics["corrupted"]["mean"]
    ood = metrics["ood_mean"]
    members = ", ".join(f"{100 * a:.2f}%" for a in clean["member_accuracy"])
    return f"""# mnist / {args.version}: the embedded default model

A MIMO ensemble of M={config["ensemble_size"]} subnetworks in one small CNN
({config["arch"]}, width {config["width"]}) for 28x28 grayscale digits, light on dark (MNIST
polarity). One forward pass gives {config["ensemble_size"]} predictions.

- Trained on the 55,000 MNIST training images left after a 5,000-image validation split, with
  the `mnist` preset, {config["epochs"]} epochs, rho={config["input_repetition"]},
  r={config["batch_repetition"]}, seed {config["seed"]}, and the outlier-disagreement loss
  (weight {config["outlier_weight"]}) on synthetic smooth-noise images.
- Reproduce: `make default-model` (`python -m training.experiments default-model
  --data-dir <mnist>`), about 25 minutes on 2 idle CPU cores (training 12 x ~100 s,
  evaluation ~4 min).
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


def results(args: argparse.Namespace) -> None:
    root = Path(args.runs) / "results"
    eval_flags = ("--corruption-limit", str(args.corruption_limit), "--ood-count", "1000")
    epochs = ("--epochs", str(args.epochs))
    # Seeds outer: an interrupted run still has every variant, with fewer seeds.
    variants = [v for v in VARIANTS if not args.variants or v.name in args.variants]
    for seed in args.seeds:
        for variant in variants:
            # One validation split for every run, so a deep ensemble of them is calibrated on
            # data none of its members trained on.
            flags = (*variant.flags, *epochs, "--seed", str(seed), "--val-seed", "0")
            flags += _threads(args)
            train_and_evaluate(root / f"{variant.name}-s{seed}", args.data_dir, flags, eval_flags)
    # The deterministic network at the default model's budget (12 epochs), evaluated alike.
    det12 = ("--ensemble-size", "1", "--batch-repetition", "1", "--epochs", "12", "--seed", "0")
    train_and_evaluate(
        Path(args.runs) / "baseline" / "det12-s0",
        args.data_dir,
        (*det12, "--val-seed", "0", *_threads(args)),
        ("--corruption-limit", "10000", "--ood-count", "2000"),
    )
    # Deep ensembles of 3: consecutive triples of the deterministic seeds.
    det = [root / f"det-s{s}" / "model.pt" for s in args.seeds]
    for i in range(0, len(det) - 2, 3):
        evaluate(root / f"ensemble3-{i // 3}" / "eval", det[i : i + 3], eval_flags)
    table(args)


def _stat(values: Sequence[float], digits: int = 4, scale: float = 1.0) -> str:
    v = np.asarray(values, dtype=float) * scale
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def _collect(root: Path) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(root.glob("*/eval/metrics.json")):
        group = path.parent.parent.name.rsplit("-", 1)[0]
        groups.setdefault(group, []).append(json.loads(path.read_text()))
    return groups


def table(args: argparse.Namespace) -> None:
    root = Path(args.runs) / "results"
    groups = _collect(root)
    titles = {v.name: v.title for v in VARIANTS} | {"ensemble3": "deep ensemble (3 x M=1)"}
    order = [*(v.name for v in VARIANTS), "ensemble3"]
    rows = [(name, groups[name]) for name in order if name in groups]
    if not rows:
        raise SystemExit(f"no evaluations under {root}")

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    out = [
        "# Results: MIMO on MNIST",
        "",
        "Generated by `python -m training.experiments results` (`make results`); numbers are",
        "mean ± sample standard deviation over the runs listed (seeds), on the 10,000 MNIST test",
        "images.",
        "Every model is evaluated through ONNX Runtime on the CPU, as it is served.",
        "",
        "## Clean test set",
        "",
        line(
            ["method", "runs", "accuracy %", "NLL", "ECE", "Brier", "member accuracy % (min-max)"]
        ),
        line(["---"] * 7),
    ]
    for name, rs in rows:
        members = [a for r in rs for a in r["clean"]["member_accuracy"]]
        out.append(
            line(
                [
                    titles[name],
                    str(len(rs)),
                    _stat([r["clean"]["accuracy"] for r in rs], 2, 100),
                    _stat([r["clean"]["nll"] for r in rs]),
                    _stat([r["clean"]["ece"] for r in rs]),
                    _stat([r["clean"]["brier"] for r in rs]),
                    f"{100 * min(members):.2f}-{100 * max(members):.2f}",
                ]
            )
        )
    out += [
        "",
        "## Corrupted test sets",
        "",
        "Mean over the corruptions x 5 severities (`training/corruptions.py`), on the first "
        f"{rows[0][1][0]['corrupted']['images']} test images.",
        "",
        line(["method", "accuracy %", "NLL", "ECE", "Brier"]),
        line(["---"] * 5),
    ]
    for name, rs in rows:
        c = [r["corrupted"]["mean"] for r in rs]
        out.append(
            line(
                [
                    titles[name],
                    _stat([x["accuracy"] for x in c], 2, 100),
                    _stat([x["nll"] for x in c]),
                    _stat([x["ece"] for x in c]),
                    _stat([x["brier"] for x in c]),
                ]
            )
        )
    out += [
        "",
        "## Out of distribution",
        "",
        "AUROC of each score, mean over the held-out synthetic families and inverted digits "
        "(none of them used in training); `uncertain` is the share of OOD images above the "
        "mutual-information threshold (95th percentile on validation digits), `test flagged` the "
        "share of real test digits above it.",
        "",
        line(
            [
                "method",
                "AUROC MI",
                "AUROC entropy",
                "AUROC 1-max p",
                "OOD flagged uncertain",
                "test flagged",
                "head disagreement (test)",
            ]
        ),
        line(["---"] * 7),
    ]
    for name, rs in rows:
        out.append(
            line(
                [
                    titles[name],
                    _stat([r["ood_mean"]["mutual_information"]["auroc"] for r in rs], 3),
                    _stat([r["ood_mean"]["predictive_entropy"]["auroc"] for r in rs], 3),
                    _stat([r["ood_mean"]["max_probability"]["auroc"] for r in rs], 3),
                    _stat([r["ood_mean"]["uncertain_fraction"] for r in rs], 3),
                    _stat([r["clean"]["uncertain_fraction"] for r in rs], 3),
                    _stat([r["clean"]["disagreement"] for r in rs], 4),
                ]
            )
        )
    families = list(rows[0][1][0]["ood"])
    out += [
        "",
        "### AUROC (mutual information) by OOD family",
        "",
        line(["method", *families]),
        line(["---"] * (len(families) + 1)),
    ]
    for name, rs in rows:
        out.append(
            line(
                [
                    titles[name],
                    *(
                        _stat([r["ood"][f]["mutual_information"]["auroc"] for r in rs], 3)
                        for f in families
                    ),
                ]
            )
        )
    out += [
        "",
        "## Inference cost per image (ONNX Runtime, 2 CPU cores)",
        "",
        line(["method", "forward passes", "ms at batch 1", "ms per image at batch 256"]),
        line(["---"] * 4),
    ]
    for name, rs in rows:
        out.append(
            line(
                [
                    titles[name],
                    str(rs[0]["inference"]["forward_passes"]),
                    _stat([r["inference"]["ms_per_image_batch_1"] for r in rs], 3),
                    _stat([r["inference"]["ms_per_image_batch_256"] for r in rs], 4),
                ]
            )
        )
    out += headline(Path(args.runs), line)
    target = Path(args.output)
    target.parent.mkdir(parents=True, exist_ok=True)
    notes = Path(args.notes)
    text = "\n".join(out) + "\n"
    if notes.exists():
        text += "\n" + notes.read_text()
    target.write_text(text)
    print(f"wrote {target}")


def headline(runs: Path, line: Callable[[Sequence[str]], str]) -> list[str]:
    """The default model against a deterministic network trained as long (one seed each)."""
    pairs = [
        ("deterministic (M=1), 12 epochs", runs / "baseline" / "det12-s0" / "eval"),
        ("default model: MIMO M=3 + outlier disagreement, 12 epochs", runs / "default" / "eval"),
    ]
    found = [(t, json.loads((d / "metrics.json").read_text())) for t, d in pairs if d.exists()]
    if len(found) < 2:
        return []
    out = [
        "",
        "## At the default model's budget (12 epochs, seed 0, all 10,000 corrupted images)",
        "",
        line(
            [
                "model",
                "accuracy %",
                "NLL",
                "ECE",
                "members %",
                "corrupted acc % / NLL / ECE",
                "OOD AUROC MI",
                "OOD flagged",
                "test flagged",
            ]
        ),
        line(["---"] * 9),
    ]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.experiments", description=__doc__)
    parser.add_argument("--runs", default="runs", help="where runs are written")
    parser.add_argument(
        "--threads", type=int, help="torch threads per training (run two queues with 1 each)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("default-model", help="train, evaluate and export models/mnist/<version>")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--version", type=int, default=1)
    p.set_defaults(run=default_model)
    for name, fn in (("results", results), ("table", table)):
        p = sub.add_parser(name, help=f"{name} for docs/results.md")
        if name == "results":
            p.add_argument("--data-dir", required=True)
            p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
            p.add_argument(
                "--variants", nargs="+", choices=[v.name for v in VARIANTS], help="default: all"
            )
            p.add_argument("--epochs", type=int, default=3)
            p.add_argument("--corruption-limit", type=int, default=2000)
        p.add_argument("--output", default=str(ROOT / "docs" / "results.md"))
        p.add_argument(
            "--notes",
            default=str(ROOT / "docs" / "results-notes.md"),
            help="hand-written discussion appended to the table",
        )
        p.set_defaults(run=fn)
    args = parser.parse_args(argv)
    args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
