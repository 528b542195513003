"""Train a MIMO classifier the reference way.

Reads top to bottom: set up (processes, seeds, data, model, optimiser), then one loop over
epochs whose steps build a MIMO batch from unique examples, take one forward/backward pass and
log; a checkpoint after every epoch makes every run resumable. Works as one process or under
`torchrun` (DDP: gloo on CPU, nccl on CUDA): each process trains on its share of every unique
batch and rank 0 writes checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from training.augment import augment
from training.batching import OUTLIER_LOSSES, mimo_batch, mimo_loss
from training.checkpoint import config_from_dict, load_checkpoint, save_atomic
from training.config import TrainConfig
from training.data import ImageDataset, load_dataset, preprocess_spec, split_validation
from training.models import MimoNetwork, build_network
from training.models.mimo import tile
from training.ood import ALL_FAMILIES, make_ood


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(name)


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


def lr_lambda(config: TrainConfig, steps_per_epoch: int):
    """Step schedule: linear warm-up, then multiply by the decay factor at each decay epoch."""
    warmup = max(1, int(config.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        epoch = step / steps_per_epoch
        return config.lr_decay_factor ** sum(epoch >= e for e in config.lr_decay_epochs)

    return factor


def to_float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [N, C, H, W] -> float32 in [0, 1]."""
    return torch.as_tensor(images).float().div_(255.0)


@torch.no_grad()
def validate(model: MimoNetwork, data: ImageDataset, device: torch.device) -> dict[str, Any]:
    """Ensemble and per-head accuracy on held-out data, the image tiled into every slot."""
    model.eval()
    correct, member_correct = 0, torch.zeros(model.ensemble_size)
    for start in range(0, len(data), 512):
        x = to_float(data.images[start : start + 512]).to(device)
        y = torch.as_tensor(data.labels[start : start + 512]).to(device)
        probs = torch.softmax(model(tile(x, model.ensemble_size)).float(), dim=-1)  # [B, M, K]
        correct += int((probs.mean(1).argmax(-1) == y).sum())
        member_correct += (probs.argmax(-1) == y[:, None]).sum(0).cpu()
    model.train()
    n = max(1, len(data))
    return {"val_accuracy": correct / n, "val_member_accuracy": (member_correct / n).tolist()}


def outlier_plan(
    config: TrainConfig,
) -> tuple[list[str], Callable[[torch.Tensor], torch.Tensor]]:
    """The outlier families taking turns and the outlier loss of `config`; ValueError for a
    name that does not exist or a loss that cannot work."""
    families = [f.strip() for f in config.outlier_families.split(",") if f.strip()]
    unknown = [f for f in families if f not in ALL_FAMILIES]
    if unknown or not families:
        raise ValueError(
            f"unknown outlier_families {unknown or config.outlier_families!r}: use one or more "
            f"of {', '.join(ALL_FAMILIES)}, comma-separated"
        )
    outlier_loss = OUTLIER_LOSSES.get(config.outlier_loss)
    if outlier_loss is None:
        raise ValueError(
            f"unknown outlier_loss {config.outlier_loss!r}: use {' or '.join(OUTLIER_LOSSES)}"
        )
    if (
        config.outlier_weight > 0
        and config.outlier_loss == "agreement"
        and config.ensemble_size < 2
    ):
        raise ValueError(
            "the agreement outlier loss needs two heads or more (ensemble_size >= 2); a single "
            "network takes --outlier-loss uniform (outlier exposure)"
        )
    return families, outlier_loss


def train(config: TrainConfig, resume: str | None = None) -> Path:
    """Train, checkpointing every epoch into config.out_dir; returns the final checkpoint."""
    # ---- processes: plain, or one of several under torchrun ----
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = resolve_device(config.device)
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
    else:
        rank, world = 0, 1
    main_process = rank == 0
    torch.set_num_threads(config.threads or max(1, (os.cpu_count() or 1) // world))

    # ---- resume: the checkpoint's config wins, except how long to train ----
    state: dict[str, Any] | None = None
    if resume:
        state = load_checkpoint(resume)
        saved = config_from_dict(state["config"])
        config = config_from_dict(
            {**asdict(saved), "epochs": config.epochs, "max_steps": config.max_steps}
        )
    families, outlier_loss = outlier_plan(config)  # the resumed run's own, not the caller's
    torch.manual_seed(config.seed)
    out_dir = Path(config.out_dir)

    # ---- data: uint8 tensors in memory; validation carved from train, never from test ----
    full = load_dataset(config.dataset, "train", config.data_dir, config.image_size, config.color)
    train_set, val_set = split_validation(full, config.val_size, seed=config.split_seed)
    images = torch.as_tensor(train_set.images)  # uint8 [N, C, H, W]
    labels = torch.as_tensor(train_set.labels)  # int64 [N]
    c, h, w = train_set.shape
    pixels = images.float().div(255.0)
    mean = pixels.mean(dim=(0, 2, 3)).tolist()
    std = pixels.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
    del pixels
    if state is not None:
        mean, std = state["meta"]["mean"], state["meta"]["std"]
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} must divide by {world} processes")
    local_batch = config.batch_size // world  # unique examples per process per step
    steps_per_epoch = len(train_set) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {config.batch_size} exceeds the {len(train_set)} examples")
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)

    # ---- model and optimiser ----
    M = config.ensemble_size
    model = build_network(
        config.arch, M, (c, h, w), len(train_set.classes), mean, std, config.width, config.depth
    ).to(device)
    # channels-last convolutions measured 1.4x faster than NCHW on this CPU (oneDNN).
    model.backbone.to(memory_format=torch.channels_last)
    net: torch.nn.Module = model
    if distributed:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.index else None)
    lr = config.lr * config.batch_size / 128  # the reference scales lr by the unique batch
    if config.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            model.parameters(), lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay
        )
    elif config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr, weight_decay=config.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {config.optimizer!r}; choose sgd or adamw")
    if config.schedule not in ("onecycle", "step"):
        raise ValueError(f"unknown schedule {config.schedule!r}; choose onecycle or step")
    autocast, needs_scaler = autocast_for(config.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=needs_scaler)

    start_epoch, step, history = 0, 0, []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step, history = state["epoch"] + 1, state["step"], state["history"]
    # The learning rate is a function of the step, so a resumed run rebuilds the schedule at its
    # step (last_epoch) instead of loading the saved one: a saved one-cycle schedule has the old
    # run's length baked in and raises once a run resumed with more epochs steps past it.
    last = min(step, total_steps) - 1  # -1: a fresh schedule
    if config.schedule == "onecycle":
        scheduler: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=max(total_steps, 2), pct_start=0.15, last_epoch=last
        )
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(config, steps_per_epoch), last_epoch=last
        )

    meta = {
        "classes": train_set.classes,
        "shape": [c, h, w],
        "mean": mean,
        "std": std,
        "dataset": config.dataset,
        "preprocess": preprocess_spec(config.dataset, (c, h, w), config.color),
        "world_size": world,
    }
    if main_process:
        n_params = sum(p.numel() for p in model.parameters())
        print(
            f"training {config.arch} M={M} rho={config.input_repetition} "
            f"r={config.batch_repetition} on {config.dataset} ({len(train_set)} train, "
            f"{len(val_set)} val), {n_params:,} parameters, {world} process(es) on {device}, "
            f"{total_steps} steps",
            flush=True,
        )

    # ---- the loop ----
    model.train()
    checkpoint: dict[str, Any] | None = None
    for epoch in range(start_epoch, config.epochs):
        if step >= total_steps:
            break
        # One generator per epoch, identical on every process: resuming replays the same batches.
        gen = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
        order = torch.randperm(len(train_set), generator=gen)
        began, losses = time.time(), []
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=not main_process or None,
            leave=False,
        )
        for i in bar:
            if step >= total_steps:
                break
            rows = order[i * config.batch_size : (i + 1) * config.batch_size]
            rows = rows[rank * local_batch : (rank + 1) * local_batch]
            x = augment(to_float(images[rows]), config.augment, config.shift, gen)  # [b, C, H, W]
            x, y = mimo_batch(
                x, labels[rows], M, config.input_repetition, config.batch_repetition, gen
            )  # [b*r, M, C, H, W], [b*r, M]
            n_rows = len(x)
            if config.outlier_weight > 0:
                n_out = max(1, round(n_rows * config.outlier_fraction))
                family = families[step % len(families)]
                seed = (config.seed * 1_000_003 + step) * world + rank
                outliers = torch.from_numpy(make_ood(family, n_out, (c, h, w), seed))
                x = torch.cat([x, tile(outliers, M)])
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast:
                logits = net(x)  # [rows (+ outliers), M, K]
            loss = mimo_loss(logits[:n_rows], y)
            if config.outlier_weight > 0:
                loss = loss + config.outlier_weight * outlier_loss(logits[n_rows:])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            losses.append(loss.item())
            if i % 10 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-10:]):.4f}")

        if main_process:
            record = {
                "epoch": epoch + 1,
                "step": step,
                "loss": float(np.mean(losses)) if losses else math.nan,
                "lr": scheduler.get_last_lr()[0],
                "seconds": round(time.time() - began, 1),
                **validate(model, val_set, device),
            }
            history.append(record)
            print(json.dumps(record), flush=True)
            checkpoint = {
                "config": asdict(config),
                "meta": meta,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "step": step,
                "history": history,
            }
            save_atomic(checkpoint, out_dir / "last.pt")
    if main_process and checkpoint is not None:
        save_atomic(checkpoint, out_dir / "model.pt")  # the finished model, beside last.pt
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return out_dir / "model.pt"
