"""What an export must pass before anything is written, and the error that says what failed.

The request itself (precision, name, version, an existing version); then the graph: float32
ONNX Runtime against torch on random inputs (`check_parity`), and a lower-precision graph
against torch on real images, tiled as served (`check_agreement`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from service.contract import NAME_PATTERN, ModelContract, contract_of
from service.uncertainty import ensemble_uncertainty
from training.metrics import softmax
from training.models import MimoNetwork
from training.quantize import PRECISIONS

PARITY_TOLERANCE = 1e-4  # max abs difference of logits between ONNX Runtime and torch


@dataclass(frozen=True)
class Tolerance:
    """How far a lower-precision graph may stray from torch on real images (tiled as served)."""

    agreement: float  # least share of images whose ensemble top-1 class is torch's
    probability: float  # largest |difference| of any head's probability of any class
    flags: float  # least share of images (and of outliers) whose `uncertain` flag is torch's


# Measured on the MNIST and digits models (docs/benchmarks.md), with room for other models.
TOLERANCES = {
    "int8": Tolerance(agreement=0.97, probability=0.5, flags=0.97),
    "fp16": Tolerance(agreement=0.995, probability=0.05, flags=0.99),
}


class ExportError(RuntimeError):
    pass


def check_request(
    repository: str | Path, name: str, version: int, precision: str, force: bool
) -> Path:
    """models/<name>/<version>/model.onnx, once the request is valid and would not overwrite a
    model unasked; ExportError otherwise."""
    if precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if not NAME_PATTERN.fullmatch(name):
        raise ExportError(f"model name {name!r} must match {NAME_PATTERN.pattern}")
    if version < 1:
        raise ExportError(f"version must be a positive integer, got {version}")
    target = Path(repository) / name / str(version) / "model.onnx"
    if target.exists() and not force:
        raise ExportError(f"{target} exists; pass --force to replace it or choose a new version")
    return target


def check_parity(model: MimoNetwork, data: bytes, source: str) -> float:
    """Max abs logit difference between ONNX Runtime and torch; raises past the tolerance."""
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    contract = contract_of(session, source)
    gen = torch.Generator().manual_seed(0)
    c, h, w = contract.input_shape
    worst = 0.0
    for batch in (1, 7, 32):
        x = torch.rand(batch, contract.ensemble_size, c, h, w, generator=gen)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(["logits"], {"images": x.numpy()})[0]
        worst = max(worst, float(np.abs(got - expected).max()))
    if not worst <= PARITY_TOLERANCE:
        raise ExportError(
            f"{source}: ONNX Runtime and torch differ by {worst:.2e} on the logits "
            f"(tolerance {PARITY_TOLERANCE:.0e}); the model was not written"
        )
    return worst


def _logits(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    runs = [session.run(["logits"], {"images": x[i : i + 250]})[0] for i in range(0, len(x), 250)]
    return np.concatenate(runs)


def check_agreement(
    model: MimoNetwork,
    data: bytes,
    contract: ModelContract,
    images: np.ndarray,
    outliers: np.ndarray | None,
    precision: str,
    source: str,
) -> dict[str, float]:
    """A lower-precision graph against torch on float32 [N, C, H, W] images in [0, 1], tiled.

    On the (validation) `images`: the top-1 agreement of the ensemble mean and of the heads, the
    largest difference of any probability, and the share of images whose `uncertain` flag (mutual
    information over the model's threshold, at its temperature) is torch's; on the `outliers`
    (the synthetic families a model trained with the outlier loss learnt to flag), the latter.
    Raises past the precision's tolerance.
    """
    tolerance = TOLERANCES[precision]
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    m, temperature = model.ensemble_size, contract.temperature
    threshold = contract.thresholds["mutual_information"]

    def compare(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        tiled = np.repeat(x.astype(np.float32)[:, None], m, axis=1)
        with torch.no_grad():
            expected = model(torch.from_numpy(tiled)).numpy()
        got = _logits(session, tiled)
        flags = [
            ensemble_uncertainty(z, temperature).mutual_information > threshold
            for z in (expected, got)
        ]
        return softmax(expected), softmax(got), flags[0], flags[1]

    expected, got, flagged, flagged_got = compare(images)
    found = {
        "images": len(images),
        "agreement": float(
            (got.mean(axis=1).argmax(axis=1) == expected.mean(axis=1).argmax(axis=1)).mean()
        ),
        "member_agreement": float((got.argmax(axis=2) == expected.argmax(axis=2)).mean()),
        "max_probability_difference": float(np.abs(got - expected).max()),
        "uncertain_agreement": float((flagged == flagged_got).mean()),
    }
    problems = []
    if not found["agreement"] >= tolerance.agreement:
        problems.append(
            f"top-1 agreement {found['agreement']:.4f} (at least {tolerance.agreement})"
        )
    if not found["max_probability_difference"] <= tolerance.probability:
        problems.append(
            f"max probability difference {found['max_probability_difference']:.3f} "
            f"(at most {tolerance.probability})"
        )
    if not found["uncertain_agreement"] >= tolerance.flags:
        problems.append(
            f"`uncertain` flags agreeing {found['uncertain_agreement']:.4f} "
            f"(at least {tolerance.flags})"
        )
    if outliers is not None and len(outliers):
        *_, flagged, flagged_got = compare(outliers)
        found["outliers"] = len(outliers)
        found["outlier_uncertain_agreement"] = float((flagged == flagged_got).mean())
        if not found["outlier_uncertain_agreement"] >= tolerance.flags:
            problems.append(
                f"`uncertain` flags agreeing {found['outlier_uncertain_agreement']:.4f} on "
                f"{len(outliers)} training-family outliers (at least {tolerance.flags})"
            )
    if problems:
        raise ExportError(
            f"{source}: the {precision} graph strays from torch on {len(images)} validation "
            f"images: {'; '.join(problems)}; the model was not written"
        )
    return found
