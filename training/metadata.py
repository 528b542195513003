"""What an exported model carries in its ONNX metadata: the service's contract (labels, input
format, temperature, thresholds), built from a checkpoint and its evaluation, with where the
model came from and its headline metrics.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import onnx

from service.contract import ModelContract
from training.checkpoint import config_from_dict


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
