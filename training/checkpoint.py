"""Checkpoints: everything needed to resume training, evaluate and export a model."""

from __future__ import annotations

import io
from dataclasses import asdict, fields
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


def resumed_config(config: TrainConfig, checkpoint: dict[str, Any]) -> TrainConfig:
    """A resumed run's config: the checkpoint's, except how long to train (`config`'s)."""
    saved = config_from_dict(checkpoint["config"])
    return config_from_dict(
        {**asdict(saved), "epochs": config.epochs, "max_steps": config.max_steps}
    )


def restore(
    checkpoint: dict[str, Any] | None, model: MimoNetwork, optimizer: torch.optim.Optimizer
) -> tuple[int, int, list[dict[str, Any]]]:
    """The first epoch, the step and the history to go on from, the checkpoint's weights and
    optimiser state loaded; a fresh run's (0, 0, []) without a checkpoint."""
    if checkpoint is None:
        return 0, 0, []
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    return checkpoint["epoch"] + 1, checkpoint["step"], checkpoint["history"]


def checkpoint_of(
    config: TrainConfig,
    meta: dict[str, Any],
    model: MimoNetwork,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
    step: int,
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    """What a run saves after every epoch: `epoch` counts from 0, `step` is the steps taken."""
    return {
        "config": asdict(config),
        "meta": meta,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "step": step,
        "history": history,
    }
