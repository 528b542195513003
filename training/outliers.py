"""The synthetic outliers a training step appends to its batch when config.outlier_weight > 0:
which families take turns, the loss on them (training/batching.py), and each step's images."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from training.batching import OUTLIER_LOSSES
from training.config import TrainConfig
from training.ood import ALL_FAMILIES, make_ood
from training.strokes import drawn_digits


class Outliers(NamedTuple):
    families: list[str]  # the synthetic outlier families, taking turns by step
    loss: Callable[[torch.Tensor], torch.Tensor]  # on the outliers' logits [n, M, K]


def outlier_plan(config: TrainConfig) -> Outliers:
    """The outlier families and loss of `config`; ValueError for a name that does not exist or
    a loss that cannot work."""
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
    return Outliers(families, outlier_loss)


def with_drawn_digits(
    config: TrainConfig,
    x: torch.Tensor,
    labels: torch.Tensor,
    step: int,
    world: int,
    rank: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's examples x [b, C, H, W] and labels [b] with config.drawn_digit_fraction * b
    labelled digits drawn as on the page appended (training.strokes.drawn_digits)."""
    n = max(1, round(len(x) * config.drawn_digit_fraction))
    seed = (config.seed * 1_000_003 + step) * world + rank + 7_919  # apart from the outliers'
    images, drawn_labels = drawn_digits(n, tuple(x.shape[1:]), np.random.default_rng(seed))
    return (
        torch.cat([x, torch.from_numpy(images).to(x.dtype)]),
        torch.cat([labels, torch.from_numpy(drawn_labels).to(labels.dtype)]),
    )


def step_outliers(
    config: TrainConfig,
    families: list[str],
    step: int,
    rows: int,
    shape: tuple[int, int, int],
    world: int,
    rank: int,
) -> torch.Tensor:
    """The outlier images [n, C, H, W] of one step of `rows` MIMO rows, in [0, 1]: a share
    config.outlier_fraction of the rows, of the family whose turn it is."""
    n_out = max(1, round(rows * config.outlier_fraction))
    family = families[step % len(families)]
    # A seed per step and process: every step and every process draws images of its own.
    seed = (config.seed * 1_000_003 + step) * world + rank
    return torch.from_numpy(make_ood(family, n_out, shape, seed))
