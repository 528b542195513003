"""The model card (README.md) of the default model, from its evaluation's metrics, the measure
its export chose for the `uncertain` flag, and (optionally) how it answers drawings."""

from __future__ import annotations

from typing import Any

from service.contract import DEFAULT_UNCERTAIN_MEASURE, MEASURE_WORDS
from training.report import flagged_share

OUTLIER_WORDS = {
    "smooth_noise": "synthetic smooth-noise images",
    "pen_strokes": "letters, symbols and doodles drawn as on the web page (training/strokes.py)",
}
LOSS_WORDS = {
    "agreement": "the outlier-disagreement loss",
    "uniform": "outlier exposure (each head's cross-entropy to the uniform distribution)",
}


def recipe(config: dict[str, Any]) -> str:
    """What beyond the preset it was trained with: the outlier loss and drawn digits."""
    words = ""
    if config["outlier_weight"]:
        families = config.get("outlier_families", "smooth_noise").split(",")
        loss = LOSS_WORDS[config.get("outlier_loss", "agreement")]
        words += f", and {loss} (weight {config['outlier_weight']}) on " + " and ".join(
            OUTLIER_WORDS.get(f, f) for f in families
        )
    if config.get("drawn_digit_fraction"):
        words += (
            f"; {100 * config['drawn_digit_fraction']:g} % more of each step are digits drawn "
            "as on the web page, labelled (training/glyphs.py TRAIN_DIGITS)"
        )
    return words


def drawn_lines(drawn: dict[str, Any] | None) -> str:
    if drawn is None:
        return ""
    digits = drawn["digits"]
    return f"""| drawn digits (as on the page) right / right and not flagged | \
{100 * digits["right"]:.1f}% / {100 * digits["right_unflagged"]:.1f}% |
| drawn non-digits flagged: trained shapes / held-out shapes | \
{100 * drawn["non_digits"]["flagged"]:.1f}% / {100 * drawn["held_out"]["flagged"]:.1f}% |
"""


def model_card(
    metrics: dict[str, Any],
    version: int,
    reproduce: str,
    minutes: int,
    measure: str = DEFAULT_UNCERTAIN_MEASURE,
    drawn: dict[str, Any] | None = None,
) -> str:
    """`measure`: the one the exported file flags by; `drawn`: training.drawn.drawn_rates."""
    config = metrics["model"]["config"]
    clean, corrupted = metrics["clean"], metrics["corrupted"]["mean"]
    ood = metrics["ood_mean"]
    members = ", ".join(f"{100 * a:.2f}%" for a in clean["member_accuracy"])
    m = config["ensemble_size"]
    what = (
        f"A MIMO ensemble of M={m} subnetworks in one small CNN"
        if m > 1
        else "A single network (M=1), a small CNN"
    )
    flagged, digits_flagged = (
        "not measured" if share is None else f"{100 * share:.1f}%"
        for share in (flagged_share(ood, measure), flagged_share(clean, measure))
    )
    auroc = ood.get(measure, ood["mutual_information"])["auroc"]
    wrong = metrics.get("misclassification", {}).get("corrupted", {}).get(measure)
    wrong_lines = (
        f"| corrupted digits: misclassification AUROC / wrong and not flagged | "
        f"{wrong['auroc']:.3f} / {100 * wrong['silent_errors']:.2f}% |\n"
        if wrong
        else ""
    )
    return f"""# mnist / {version}

{what}
({config["arch"]}, width {config["width"]:g}) for 28x28 grayscale digits, light on dark (MNIST
polarity). One forward pass gives {m} prediction{"s" if m > 1 else ""}.

- Trained on the 55,000 MNIST training images left after a 5,000-image validation split, with
  the `mnist` preset, {config["epochs"]} epochs, rho={config["input_repetition"]},
  r={config["batch_repetition"]}, seed {config["seed"]}{recipe(config)}.
- Reproduce: `{reproduce}`, about {minutes} minutes on 2 idle CPU cores.
- Temperature {metrics["temperature"]:.4f} and the `uncertain` threshold ({MEASURE_WORDS[measure]}
  > {metrics["thresholds"][measure]:.4g}, chosen at export by the validation split's evidence)
  were fitted on the validation split.

| MNIST test (10,000) | value |
|---|---|
| accuracy | {100 * clean["accuracy"]:.2f}% (members {members}) |
| NLL / ECE / Brier | {clean["nll"]:.4f} / {clean["ece"]:.4f} / {clean["brier"]:.4f} |
| temperature-scaled NLL / ECE | {metrics["clean_calibrated"]["nll"]:.4f} / \
{metrics["clean_calibrated"]["ece"]:.4f} |
| corrupted accuracy / NLL / ECE | {100 * corrupted["accuracy"]:.2f}% / {corrupted["nll"]:.4f} \
/ {corrupted["ece"]:.4f} |
{wrong_lines}| test digits flagged `uncertain` | {digits_flagged} |
| held-out OOD flagged `uncertain` (mean over families) | {flagged} |
| OOD AUROC by the flag's measure (mean) | {auroc:.3f} |
{drawn_lines(drawn)}
Per family and per corruption: [report.md](report.md); calibration:
[reliability.png](reliability.png).

Limits: trained on centred MNIST digits; other handwriting styles, dark-on-light scans (invert
them first) and natural images are out of distribution, which is what the `uncertain` flag is
for, but no detector catches every shift.
"""
