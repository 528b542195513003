"""How a training run updates the weights: the optimiser, the learning-rate schedule, and the
mixed precision of the forward pass."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from training.config import TrainConfig


def build_optimizer(
    config: TrainConfig, model: torch.nn.Module
) -> tuple[torch.optim.Optimizer, float]:
    """The optimiser of `config` and its peak learning rate."""
    lr = config.lr * config.batch_size / 128  # the reference scales lr by the unique batch
    if config.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            model.parameters(), lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay
        )
    elif config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr, weight_decay=config.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {config.optimizer!r}; choose sgd or adamw")
    # The schedule is built later, once a resumed run has loaded its state: checked here, so
    # that a misspelt schedule fails as early as a misspelt optimiser.
    if config.schedule not in ("onecycle", "step"):
        raise ValueError(f"unknown schedule {config.schedule!r}; choose onecycle or step")
    return optimizer, lr


def build_scheduler(
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    lr: float,
    steps_per_epoch: int,
    total_steps: int,
    step: int,
) -> LRScheduler:
    """The schedule of `config`, standing at `step` (0 for a fresh run)."""
    # The learning rate is a function of the step, so a resumed run rebuilds the schedule at its
    # step (last_epoch) instead of loading the saved one: a saved one-cycle schedule has the old
    # run's length baked in and raises once a run resumed with more epochs steps past it.
    last = min(step, total_steps) - 1  # -1: a fresh schedule
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=max(total_steps, 2), pct_start=0.15, last_epoch=last
        )
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(config, steps_per_epoch), last_epoch=last
    )


def lr_lambda(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Step schedule: linear warm-up, then multiply by the decay factor at each decay epoch."""
    warmup = max(1, int(config.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        epoch = step / steps_per_epoch
        return config.lr_decay_factor ** sum(epoch >= e for e in config.lr_decay_epochs)

    return factor


def autocast_for(precision: str, device: torch.device) -> tuple[Any, bool]:
    """The autocast context for a precision, and whether fp16 gradients need a scaler."""
    if precision == "auto":
        # On the 2-core AMX CPU measured here bf16 autocast was 2x SLOWER than fp32 for the
        # small CNN (conversions dominate), so auto keeps fp32 on CPU; --precision bf16 asks.
        if device.type == "cpu":
            precision = "fp32"
        else:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp32":
        return contextlib.nullcontext(), False
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device.type, dtype=dtype), precision == "fp16"
