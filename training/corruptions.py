"""Deterministic image corruptions for distribution-shift evaluation.

Every corruption maps float32 images ``[N, C, H, W]`` in [0, 1] to images of the same shape and
dtype, clipped to [0, 1], at one of five severities. Random parts draw from
``np.random.default_rng(seed)``, so a (name, severity, seed) triple always gives the same set.
Pixel quantities in :data:`SEVERITIES` are for 28 px images and are scaled by ``H / 28``, so
32 px images get a similar relative strength.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

__all__ = [
    "CORRUPTIONS",
    "SEVERITIES",
    "brightness",
    "contrast",
    "corrupt",
    "gaussian_blur",
    "gaussian_noise",
    "impulse_noise",
    "rotation",
    "translation",
]

Corruption = Callable[[np.ndarray, int, int], np.ndarray]

# One parameter per severity 1..5, each row getting harsher from left to right.
SEVERITIES: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.08, 0.14, 0.20, 0.28, 0.38),  # noise std
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),  # fraction of salt-and-pepper pixels
    "gaussian_blur": (0.5, 1.0, 1.5, 2.0, 2.5),  # sigma in px at 28 px
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),  # remaining fraction of the deviation from the mean
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),  # added intensity
    "rotation": (15.0, 30.0, 45.0, 60.0, 75.0),  # angle magnitude in degrees
    "translation": (2.0, 4.0, 6.0, 8.0, 10.0),  # shift length in px at 28 px
}


def _param(name: str, severity: int) -> float:
    count = len(SEVERITIES[name])
    valid_type = isinstance(severity, int | np.integer) and not isinstance(severity, bool)
    if not valid_type or not 1 <= severity <= count:
        raise ValueError(f"severity must be an integer in 1..{count}, got {severity!r}")
    return SEVERITIES[name][severity - 1]


def _as_batch(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images [N, C, H, W] with C in (1, 3), got {x.shape}")
    return x


def _finish(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 1.0).astype(np.float32, copy=False)


def _px_scale(x: np.ndarray) -> float:
    return x.shape[2] / 28.0


def gaussian_noise(images: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """Additive i.i.d. Gaussian noise."""
    std = _param("gaussian_noise", severity)
    x = _as_batch(images)
    rng = np.random.default_rng(seed)
    return _finish(x + rng.normal(0.0, std, size=x.shape).astype(np.float32))


def impulse_noise(images: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """Salt-and-pepper noise: a fraction of values set to 0 or 1 with equal odds."""
    amount = _param("impulse_noise", severity)
    x = _as_batch(images).copy()
    rng = np.random.default_rng(seed)
    hit = rng.random(x.shape) < amount
    x[hit] = (rng.random(x.shape) < 0.5)[hit]
    return _finish(x)


def gaussian_blur(images: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """Gaussian blur over H and W only (never across images or channels); ``seed`` is unused."""
    x = _as_batch(images)
    sigma = _param("gaussian_blur", severity) * _px_scale(x)
    return _finish(ndimage.gaussian_filter(x, sigma=(0.0, 0.0, sigma, sigma)))


def contrast(images: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """Pull every pixel toward its image's mean; ``seed`` is unused."""
    factor = _param("contrast", severity)
    x = _as_batch(images)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return _finish(mean + factor * (x - mean))


def brightness(images: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """Add a constant intensity; ``seed`` is unused."""
    return _finish(_as_batch(images) + _param("brightness", severity))


def rotation(images: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """Rotate each image by the severity's angle with a random sign, zero fill outside."""
    angle = _param("rotation", severity)
    x = _as_batch(images)
    signs = np.random.default_rng(seed).choice((-1.0, 1.0), size=len(x))
    out = np.empty_like(x)
    for i, sign in enumerate(signs):
        out[i] = ndimage.rotate(x[i], sign * angle, axes=(2, 1), reshape=False, order=1, cval=0.0)
    return _finish(out)


def translation(images: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """Shift each image by the severity's length in a random direction, zero fill outside."""
    x = _as_batch(images)
    length = _param("translation", severity) * _px_scale(x)
    theta = np.random.default_rng(seed).uniform(0.0, 2.0 * np.pi, size=len(x))
    out = np.empty_like(x)
    for i, t in enumerate(theta):
        offset = (0.0, length * np.sin(t), length * np.cos(t))
        out[i] = ndimage.shift(x[i], offset, order=1, cval=0.0)
    return _finish(out)


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "impulse_noise": impulse_noise,
    "gaussian_blur": gaussian_blur,
    "contrast": contrast,
    "brightness": brightness,
    "rotation": rotation,
    "translation": translation,
}


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Apply the corruption ``name`` at ``severity`` (1..5)."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; valid names: {', '.join(CORRUPTIONS)}")
    return CORRUPTIONS[name](images, severity, seed)
