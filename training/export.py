"""Export a checkpoint to the contract's ONNX model, checked against torch, written atomically.

`models/<name>/<version>/model.onnx` appears only once the file is complete and has passed
the parity check and the contract reader: a failed export leaves the repository as it was.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from service.contract import NAME_PATTERN, ModelContract, contract_of
from training.checkpoint import config_from_dict, load_checkpoint, model_from_checkpoint
from training.models import MimoNetwork

OPSET = 17
PARITY_TOLERANCE = 1e-4  # max abs difference of logits between ONNX Runtime and torch


class ExportError(RuntimeError):
    pass


def to_onnx_bytes(model: MimoNetwork) -> bytes:
    """The bare graph: input `images` [batch, M, C, H, W], output `logits` [batch, M, K]."""
    model = model.eval()
    c, h, w = model.input_shape
    dummy = torch.rand(2, model.ensemble_size, c, h, w)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            model,
            (dummy,),
            buffer,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


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


def build_contract(checkpoint: dict[str, Any], evaluation: dict[str, Any]) -> ModelContract:
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


def write_atomic(data: bytes, target: Path) -> None:
    """Write beside the repository (hidden temp file), fsync, then rename into place."""
    target.parent.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent.parent, prefix=".export-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp makes the file private (0600): a service running as another user could
            # not read the model. Give it the mode of an ordinary file.
            os.fchmod(f.fileno(), 0o644)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        target.parent.mkdir(exist_ok=True)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def export(
    checkpoint_path: str | Path,
    repository: str | Path,
    name: str,
    version: int,
    evaluation: dict[str, Any] | None = None,
    force: bool = False,
) -> Path:
    if not NAME_PATTERN.fullmatch(name):
        raise ExportError(f"model name {name!r} must match {NAME_PATTERN.pattern}")
    if version < 1:
        raise ExportError(f"version must be a positive integer, got {version}")
    target = Path(repository) / name / str(version) / "model.onnx"
    if target.exists() and not force:
        raise ExportError(f"{target} exists; pass --force to replace it or choose a new version")
    checkpoint = load_checkpoint(checkpoint_path)
    model = model_from_checkpoint(checkpoint)
    if evaluation is None:
        from training.evaluate import calibrate_checkpoint

        evaluation = calibrate_checkpoint(checkpoint)
    data = with_metadata(to_onnx_bytes(model), build_contract(checkpoint, evaluation))
    worst = check_parity(model, data, str(target))
    write_atomic(data, target)
    print(f"wrote {target} ({len(data) / 1e6:.2f} MB, parity max |diff| {worst:.1e})")
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
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    evaluation = json.loads(Path(args.evaluation).read_text()) if args.evaluation else None
    export(args.checkpoint, args.repository, args.name, args.version, evaluation, args.force)
    return 0
