"""Export a checkpoint to the contract's ONNX model, checked against torch, written atomically.

`models/<name>/<version>/model.onnx` appears only once the file is complete and has passed
the parity check and the contract reader: a failed export leaves the repository as it was.

`precision` int8 or fp16 (training/quantize.py) converts the float32 graph after its own parity
check; the converted graph must then agree with torch on real images (the checkpoint's
validation split, tiled as served) within that precision's tolerance, or nothing is written.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from service.contract import (
    DEFAULT_UNCERTAIN_MEASURE,
    FLAG_MEASURES,
    NAME_PATTERN,
    ModelContract,
    contract_of,
)
from service.uncertainty import ensemble_uncertainty
from training.calibration import calibrate_checkpoint, validation_split
from training.checkpoint import config_from_dict, load_checkpoint, model_from_checkpoint
from training.conversion import to_onnx_bytes
from training.data import load_dataset, split_validation
from training.files import write_atomic
from training.flag import decide
from training.metrics import softmax
from training.models import MimoNetwork
from training.predictor import OnnxPredictor
from training.quantize import (
    PRECISIONS,
    Int8Settings,
    calibration_inputs,
    quantize_int8,
    to_fp16,
    training_outliers,
)

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
OUTLIER_CHECK_SEED = 1_000  # the outliers of the check are not those of the calibration
AGREEMENT_IMAGES = 1000  # validation images the lower-precision check runs on, at most


class ExportError(RuntimeError):
    pass


def code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=10,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def build_contract(
    checkpoint: dict[str, Any],
    evaluation: dict[str, Any],
    precision: str = "fp32",
    quantization: dict[str, Any] | None = None,
) -> ModelContract:
    config = config_from_dict(checkpoint["config"])
    meta = checkpoint["meta"]
    return ModelContract(
        ensemble_size=config.ensemble_size,
        input_shape=tuple(meta["shape"]),  # type: ignore[arg-type]
        labels=tuple(meta["classes"]),
        preprocess=meta["preprocess"],
        temperature=float(evaluation["temperature"]),
        thresholds=evaluation["thresholds"],
        training={
            "dataset": config.dataset,
            "architecture": config.arch,
            "width": config.width,
            "depth": config.depth if config.arch == "wrn" else None,
            "ensemble_size": config.ensemble_size,
            "input_repetition": config.input_repetition,
            "batch_repetition": config.batch_repetition,
            "batch_size": config.batch_size,
            "epochs": checkpoint["epoch"] + 1,
            "steps": checkpoint["step"],
            "optimizer": config.optimizer,
            "lr": config.lr,
            "outlier_weight": config.outlier_weight,
            "precision": config.precision,
            "seed": config.seed,
            "code_version": code_version(),
        },
        evaluation=summary(evaluation),
        precision=precision,
        quantization=quantization or {},
    )


def summary(evaluation: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of an evaluation, small enough for the model's metadata."""
    out: dict[str, Any] = {}
    for key in ("dataset", "temperature", "clean", "clean_calibrated"):
        if key in evaluation:
            out[key] = evaluation[key]
    if "corrupted" in evaluation:
        out["corrupted"] = evaluation["corrupted"]["mean"]
    if "ood" in evaluation:
        out["ood"] = {
            family: {
                "auroc_mutual_information": r["mutual_information"]["auroc"],
                "uncertain_fraction": r["uncertain_fraction"],
            }
            for family, r in evaluation["ood"].items()
        }
    return out


def with_metadata(graph: bytes, contract: ModelContract) -> bytes:
    proto = onnx.load_from_string(graph)
    del proto.metadata_props[:]
    for key, value in contract.metadata().items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "mimo-serve"
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


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


def export(
    checkpoint_path: str | Path,
    repository: str | Path,
    name: str,
    version: int,
    evaluation: dict[str, Any] | None = None,
    force: bool = False,
    precision: str = "fp32",
    int8: Int8Settings | None = None,
    data_dir: str | Path | None = None,
    uncertain_measure: str = DEFAULT_UNCERTAIN_MEASURE,
) -> Path:
    """Write models/<name>/<version>/model.onnx; `data_dir` overrides the checkpoint's
    dataset folder (int8 calibration and the lower-precision check read its images).
    `uncertain_measure` raises the served flag; `auto` chooses it by the evidence on the
    validation split (training/flag.py) and keeps that evidence in the file."""
    if precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if not NAME_PATTERN.fullmatch(name):
        raise ExportError(f"model name {name!r} must match {NAME_PATTERN.pattern}")
    if version < 1:
        raise ExportError(f"version must be a positive integer, got {version}")
    target = Path(repository) / name / str(version) / "model.onnx"
    if target.exists() and not force:
        raise ExportError(f"{target} exists; pass --force to replace it or choose a new version")
    checkpoint = load_checkpoint(checkpoint_path)
    if data_dir is not None:
        checkpoint["config"] = {**checkpoint["config"], "data_dir": str(data_dir)}
    model = model_from_checkpoint(checkpoint)
    if evaluation is None:
        evaluation = calibrate_checkpoint(checkpoint)
    contract = build_contract(checkpoint, evaluation)
    graph = to_onnx_bytes(model)
    if uncertain_measure == "auto":
        plain = with_metadata(graph, contract)
        found = decide(OnnxPredictor.from_bytes([plain]), validation_split(checkpoint), contract)
        choice = found["choice"]
        print(f"uncertain flag: {choice['measure']} (worth {choice['worth']})")
        evaluation_with = {**contract.evaluation, "flag": choice}
        contract = replace(
            contract, uncertain_measure=choice["measure"], evaluation=evaluation_with
        )
    elif uncertain_measure not in FLAG_MEASURES:
        raise ExportError(
            f"uncertain measure must be auto or one of {', '.join(FLAG_MEASURES)}, got "
            f"{uncertain_measure!r}"
        )
    else:
        contract = replace(contract, uncertain_measure=uncertain_measure)
    data = with_metadata(graph, contract)
    worst = check_parity(model, data, str(target))
    if precision == "fp32":
        write_atomic(target, data, staging=target.parent.parent)
        print(f"wrote {target} ({len(data) / 1e6:.2f} MB, parity max |diff| {worst:.1e})")
        return target

    config = config_from_dict(checkpoint["config"])
    trained_on_outliers = config.outlier_weight > 0
    quantization: dict[str, Any] = {}
    if precision == "int8":
        settings = int8 or Int8Settings()
        full = load_dataset(
            config.dataset, "train", config.data_dir, config.image_size, config.color
        )
        train_split = split_validation(full, config.val_size, seed=config.split_seed)[0]
        n_outliers = settings.outlier_images
        if n_outliers is None:
            share = config.outlier_fraction if trained_on_outliers else 0.0
            n_outliers = round(settings.calibration_images * share)
        inputs = calibration_inputs(
            train_split.images,
            config.ensemble_size,
            settings.calibration_images,
            settings.mixed_slots,
            settings.seed,
            training_outliers(n_outliers, train_split.shape, settings.seed),
        )
        converted = quantize_int8(data, inputs, settings)
        quantization = {
            **settings.describe(),
            "outlier_images": n_outliers,
            "calibration_inputs": len(inputs),
        }
    else:
        converted = to_fp16(data)
    lowered = replace(contract, precision=precision, quantization=quantization)
    data = with_metadata(converted, lowered)
    val = validation_split(checkpoint)
    images = val.images[:AGREEMENT_IMAGES].astype(np.float32) / 255.0
    outliers = (
        training_outliers(AGREEMENT_IMAGES // 4, val.shape, OUTLIER_CHECK_SEED)
        if trained_on_outliers
        else None
    )
    found = check_agreement(model, data, contract, images, outliers, precision, str(target))
    write_atomic(target, data, staging=target.parent.parent)
    on_outliers = (
        f", on {found['outliers']} outliers {found['outlier_uncertain_agreement']:.4f}"
        if "outliers" in found
        else ""
    )
    print(
        f"wrote {target} ({precision}, {len(data) / 1e6:.2f} MB; against torch on "
        f"{found['images']} validation images: top-1 agreement {found['agreement']:.4f}, "
        f"heads {found['member_agreement']:.4f}, max probability difference "
        f"{found['max_probability_difference']:.3f}, `uncertain` flags "
        f"{found['uncertain_agreement']:.4f}{on_outliers})"
    )
    return target


def add_export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint to models/<name>/<version>/model.onnx")
    p.add_argument("--checkpoint", required=True, help="model.pt written by `train`")
    p.add_argument(
        "--evaluation",
        help="metrics.json written by `evaluate` (temperature, thresholds, test metrics); "
        "without it the temperature and thresholds are fitted on the validation split",
    )
    p.add_argument("--repository", default="models")
    p.add_argument("--name", required=True)
    p.add_argument("--version", type=int, required=True)
    p.add_argument("--force", action="store_true", help="replace an existing version")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="arithmetic inside the graph (input and output stay float32): fp32; int8 (static "
        "quantization calibrated on training images); fp16 (float16 weights and compute)",
    )
    p.add_argument(
        "--data-dir", help="the dataset's folder, if not where the checkpoint was trained from"
    )
    defaults = Int8Settings()
    p.add_argument(
        "--calibration-images",
        type=int,
        default=defaults.calibration_images,
        help="int8: training images to calibrate on (each tiled, and in mixed slots)",
    )
    p.add_argument(
        "--calibration-outliers",
        type=int,
        help="int8: synthetic outliers of the training families to calibrate on, too "
        "(default: the training's outlier share if it used the outlier loss, else 0)",
    )
    p.add_argument(
        "--quant-format",
        choices=("qdq", "qoperator"),
        default=defaults.quant_format,
        help="int8: QuantizeLinear/DequantizeLinear pairs (qdq) or quantized operators",
    )
    p.add_argument(
        "--per-channel",
        action=argparse.BooleanOptionalAction,
        default=defaults.per_channel,
        help="int8: one weight scale per output channel",
    )
    p.add_argument(
        "--reduce-range",
        action=argparse.BooleanOptionalAction,
        default=defaults.reduce_range,
        help="int8: 7-bit weights (no int16 saturation on x86 without VNNI)",
    )
    p.add_argument(
        "--uncertain-measure",
        default=DEFAULT_UNCERTAIN_MEASURE,
        choices=["auto", *FLAG_MEASURES],
        help="the measure whose threshold raises `uncertain`; auto: the one that flags the most "
        "wrong answers and non-digits on the validation split (python -m training flag)",
    )
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    evaluation = json.loads(Path(args.evaluation).read_text()) if args.evaluation else None
    try:
        int8 = Int8Settings(
            quant_format=args.quant_format,
            per_channel=args.per_channel,
            reduce_range=args.reduce_range,
            calibration_images=args.calibration_images,
            outlier_images=args.calibration_outliers,
        )
    except ValueError as error:
        raise ExportError(str(error)) from None
    export(
        args.checkpoint,
        args.repository,
        args.name,
        args.version,
        evaluation,
        args.force,
        precision=args.precision,
        int8=int8,
        data_dir=args.data_dir,
        uncertain_measure=args.uncertain_measure,
    )
    return 0
