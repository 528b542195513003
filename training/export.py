"""Export a checkpoint to the contract's ONNX model, checked against torch, written atomically.

`models/<name>/<version>/model.onnx` appears only once the file is complete and has passed
the parity check (training/export_checks.py) and the contract reader: a failed export leaves
the repository as it was.

`precision` int8 or fp16 (training/quantize.py) converts the float32 graph after its own parity
check; the converted graph must then agree with torch on real images (the checkpoint's
validation split, tiled as served) within that precision's tolerance, or nothing is written.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from service.contract import DEFAULT_UNCERTAIN_MEASURE, FLAG_MEASURES, ModelContract
from training.calibration import calibrate_checkpoint, validation_split
from training.checkpoint import config_from_dict, load_checkpoint, model_from_checkpoint
from training.config import TrainConfig
from training.conversion import to_onnx_bytes
from training.data import load_dataset, split_validation
from training.export_checks import ExportError, check_agreement, check_parity, check_request
from training.files import write_atomic
from training.flag import decide
from training.metadata import build_contract, with_metadata
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

OUTLIER_CHECK_SEED = 1_000  # the outliers of the check are not those of the calibration
AGREEMENT_IMAGES = 1000  # validation images the lower-precision check runs on, at most


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
    target = check_request(repository, name, version, precision, force)
    checkpoint = load_checkpoint(checkpoint_path)
    if data_dir is not None:
        checkpoint["config"] = {**checkpoint["config"], "data_dir": str(data_dir)}
    model = model_from_checkpoint(checkpoint)
    if evaluation is None:
        evaluation = calibrate_checkpoint(checkpoint)
    contract = build_contract(checkpoint, evaluation)
    graph = to_onnx_bytes(model)
    contract = _flagged_by(contract, uncertain_measure, graph, checkpoint)
    data = with_metadata(graph, contract)
    worst = check_parity(model, data, str(target))
    if precision == "fp32":
        write_atomic(target, data, staging=target.parent.parent)
        print(f"wrote {target} ({len(data) / 1e6:.2f} MB, parity max |diff| {worst:.1e})")
        return target

    data, found = _lowered(model, data, contract, checkpoint, precision, int8, str(target))
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


def _flagged_by(
    contract: ModelContract, measure: str, graph: bytes, checkpoint: dict[str, Any]
) -> ModelContract:
    """`contract` raising `uncertain` on `measure`; `auto` picks the measure by the evidence on
    the validation split, read through the float32 `graph`, and keeps that evidence."""
    if measure == "auto":
        plain = with_metadata(graph, contract)
        found = decide(OnnxPredictor.from_bytes([plain]), validation_split(checkpoint), contract)
        choice = found["choice"]
        print(f"uncertain flag: {choice['measure']} (worth {choice['worth']})")
        evaluation_with = {**contract.evaluation, "flag": choice}
        return replace(contract, uncertain_measure=choice["measure"], evaluation=evaluation_with)
    if measure not in FLAG_MEASURES:
        raise ExportError(
            f"uncertain measure must be auto or one of {', '.join(FLAG_MEASURES)}, got {measure!r}"
        )
    return replace(contract, uncertain_measure=measure)


def _lowered(
    model: MimoNetwork,
    data: bytes,
    contract: ModelContract,
    checkpoint: dict[str, Any],
    precision: str,
    int8: Int8Settings | None,
    source: str,
) -> tuple[bytes, dict[str, float]]:
    """The float32 graph `data` converted to `precision` (int8 or fp16), with its metadata, and
    how it agrees with torch (check_agreement, which raises past the precision's tolerance)."""
    config = config_from_dict(checkpoint["config"])
    trained_on_outliers = config.outlier_weight > 0
    quantization: dict[str, Any] = {}
    if precision == "int8":
        converted, quantization = _quantized(data, config, int8 or Int8Settings())
    else:
        converted = to_fp16(data)
    lowered_contract = replace(contract, precision=precision, quantization=quantization)
    data = with_metadata(converted, lowered_contract)
    val = validation_split(checkpoint)
    images = val.images[:AGREEMENT_IMAGES].astype(np.float32) / 255.0
    outliers = (
        training_outliers(AGREEMENT_IMAGES // 4, val.shape, OUTLIER_CHECK_SEED)
        if trained_on_outliers
        else None
    )
    return data, check_agreement(model, data, contract, images, outliers, precision, source)


def _quantized(
    data: bytes, config: TrainConfig, settings: Int8Settings
) -> tuple[bytes, dict[str, Any]]:
    """The float32 graph `data` statically quantized to int8, calibrated on the run's training
    split (and on outliers of its training families, in the share it trained on them), and
    the settings to record in the model."""
    full = load_dataset(config.dataset, "train", config.data_dir, config.image_size, config.color)
    train_split = split_validation(full, config.val_size, seed=config.split_seed)[0]
    n_outliers = settings.outlier_images
    if n_outliers is None:
        share = config.outlier_fraction if config.outlier_weight > 0 else 0.0
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
    return converted, quantization


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
