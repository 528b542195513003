"""Checkpoints: everything needed to resume training, evaluate and export a model."""

from __future__ import annotations

import io
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from training.config import TrainConfig
from training.files import write_atomic
from training.models import MimoNetwork, build_network


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save, written atomically (training/files.py), so a crash never leaves half."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getvalue())


def config_from_dict(raw: dict[str, Any]) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in raw.items() if k in known}
    if "lr_decay_epochs" in values:
        values["lr_decay_epochs"] = tuple(values["lr_decay_epochs"])
    return TrainConfig(**values)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}: train one with `python -m training train`"
        )
    return torch.load(path, map_location="cpu", weights_only=False)


def model_from_checkpoint(checkpoint: dict[str, Any]) -> MimoNetwork:
    """The network of a checkpoint, in eval mode, on the CPU."""
    config = config_from_dict(checkpoint["config"])
    meta = checkpoint["meta"]
    model = build_network(
        config.arch,
        config.ensemble_size,
        input_shape=tuple(meta["shape"]),
        num_classes=len(meta["classes"]),
        mean=meta["mean"],
        std=meta["std"],
        width=config.width,
        depth=config.depth,
    )
    model.load_state_dict(checkpoint["model"])
    return model.eval()
