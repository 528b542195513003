"""MIMO batch construction, exactly as the reference (uncertainty-baselines' cifar/mimo.py).

From b unique (already augmented) examples and batch repetition r:
  idx  = shuffle(tile(arange(b), r))           # b*r rows, each example r times
  n    = int(b*r * (1 - rho))
  head m reads concat(shuffle_m(idx[:n]), idx[n:])
The trailing rho fraction of rows is shared by every head (input repetition); the rest is
reshuffled independently per head, so each head sees its own pairing of examples. Gathering
after augmentation keeps shared rows pixel-identical across heads.
"""

from __future__ import annotations

import math

import torch


def mimo_indices(
    batch: int, ensemble_size: int, rho: float, repetitions: int, generator: torch.Generator
) -> torch.Tensor:
    """Row indices into the unique batch for every head: [M, batch * repetitions]."""
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"input repetition rho must be in [0, 1], got {rho}")
    if repetitions < 1:
        raise ValueError(f"batch repetition must be >= 1, got {repetitions}")
    tiled = torch.arange(batch).repeat(repetitions)
    main = tiled[torch.randperm(len(tiled), generator=generator)]
    n = int(len(main) * (1.0 - rho))
    heads = [
        torch.cat([main[:n][torch.randperm(n, generator=generator)], main[n:]])
        for _ in range(ensemble_size)
    ]
    return torch.stack(heads)


def mimo_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    ensemble_size: int,
    rho: float,
    repetitions: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """images [b, C, H, W], labels [b] -> images [b*r, M, C, H, W], labels [b*r, M]."""
    idx = mimo_indices(len(images), ensemble_size, rho, repetitions, generator).T  # [b*r, M]
    return images[idx], labels[idx]


def mimo_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Batch mean of the SUM over heads of cross-entropy (the reference, not the head mean).

    logits [N, M, K], labels [N, M].
    """
    per_head = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1).float(), labels.flatten(), reduction="none"
    ).view(labels.shape)
    return per_head.sum(dim=1).mean()


def agreement_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean probability that two different heads pick the same class, on outlier inputs.

    For heads m != m', sum_k p_m(k) p_m'(k) is the chance they agree; pushing it down on
    synthetic outliers teaches the heads to disagree off the data manifold, so mutual
    information rises there. logits [N, M, K].
    """
    p = torch.softmax(logits.float(), dim=-1)  # [N, M, K]
    m = p.shape[1]
    if m < 2:
        return logits.new_zeros(())
    gram = torch.einsum("nik,njk->nij", p, p)  # [N, M, M]
    off_diagonal = gram.sum(dim=(1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(dim=1)
    return (off_diagonal / (m * (m - 1))).mean()


def uniform_loss(logits: torch.Tensor) -> torch.Tensor:
    """Outlier exposure (Hendrycks, Mazeika & Dietterich, 2019): each head's cross-entropy to
    the uniform distribution on outlier inputs, less its least value log K (0 when a head's
    prediction is uniform), averaged over inputs and heads. logits [N, M, K]."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    return (-log_p.mean(dim=-1) - math.log(logits.shape[-1])).mean()


OUTLIER_LOSSES = {"agreement": agreement_loss, "uniform": uniform_loss}
