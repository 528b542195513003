"""Augmentation of a batch of unique examples, before the MIMO gather."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to +-max_shift pixels in x and y, filling with zeros.

    images [B, C, H, W] -> same shape.
    """
    if max_shift <= 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=generator).tolist()
    return torch.stack(
        [padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)]
    )


def random_crop_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The CIFAR recipe: pad 4, random 32x32 crop, horizontal flip with probability 1/2."""
    shifted = random_shift(images, 4, generator)
    flip = torch.rand(len(images), generator=generator) < 0.5
    shifted[flip] = shifted[flip].flip(-1)
    return shifted


def augment(
    images: torch.Tensor, kind: str, shift: int, generator: torch.Generator
) -> torch.Tensor:
    if kind == "none":
        return images
    if kind == "shift":
        return random_shift(images, shift, generator)
    if kind == "crop_flip":
        return random_crop_flip(images, generator)
    raise ValueError(f"unknown augmentation {kind!r}; choose none, shift or crop_flip")
