"""The model card (README.md) of the default model, from its evaluation's metrics."""

from __future__ import annotations

from typing import Any

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
