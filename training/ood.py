"""Synthetic out-of-distribution image families.

Each family is ``fn(n, shape, rng) -> float32 [n, C, H, W]`` in [0, 1], with ``shape = (C, H, W)``.
``smooth_noise`` is the only family meant for training an outlier-exposure loss; the others are
held out for evaluation, so a detector is never scored on the kind of outlier it was trained on.
Pixel sizes are chosen for 28 px images and scaled by ``H / 28``.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from training import strokes

__all__ = [
    "ALL_FAMILIES",
    "DRAWN_FAMILIES",
    "EVALUATION_FAMILIES",
    "OOD_FAMILIES",
    "TRAINING_FAMILIES",
    "blank",
    "blobs",
    "checkerboard",
    "gaussian_noise",
    "invert",
    "letters",
    "make_ood",
    "smooth_noise",
    "stripes",
    "uniform_noise",
]

Shape = tuple[int, int, int]
Family = Callable[[int, Shape, np.random.Generator], np.ndarray]


def _scale(shape: Shape) -> float:
    return shape[1] / 28.0


def _broadcast(gray: np.ndarray, shape: Shape) -> np.ndarray:
    """``[n, H, W]`` gray images to ``[n, C, H, W]`` float32 in [0, 1]."""
    out = np.repeat(gray[:, None], shape[0], axis=1)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _grid(shape: Shape) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    return yy.astype(np.float64), xx.astype(np.float64)


def uniform_noise(n: int, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """I.i.d. uniform pixels."""
    return rng.random((n, *shape), dtype=np.float32)


def gaussian_noise(n: int, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """I.i.d. Gaussian pixels around 0.5 with a random std per image, clipped."""
    std = rng.uniform(0.1, 0.4, size=(n, 1, 1, 1))
    return np.clip(0.5 + std * rng.standard_normal((n, *shape)), 0.0, 1.0).astype(np.float32)


def smooth_noise(n: int, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Uniform noise blurred at a random scale, then given a random contrast and offset.

    The spread of scales and intensities is what lets an outlier loss trained on it generalise
    beyond one texture.
    """
    noise = rng.random((n, *shape))
    sigmas = rng.uniform(0.0, 3.0, size=n) * _scale(shape)
    contrasts = rng.uniform(0.0, 1.0, size=n)
    offsets = rng.uniform(0.0, 1.0, size=n) * (1.0 - contrasts)
    out = np.empty((n, *shape), dtype=np.float32)
    for i in range(n):
        img = ndimage.gaussian_filter(noise[i], sigma=(0.0, sigmas[i], sigmas[i]))
        lo, hi = img.min(), img.max()
        unit = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        out[i] = offsets[i] + contrasts[i] * unit
    return np.clip(out, 0.0, 1.0)


def blank(n: int, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Constant images; the extremes 0 and 1 get a fifth of the draws each, as edge cases."""
    levels = rng.uniform(0.0, 1.0, size=n)
    pick = rng.random(n)
    levels[pick < 0.2] = 0.0
    levels[pick > 0.8] = 1.0
    return np.broadcast_to(levels[:, None, None, None], (n, *shape)).astype(np.float32)


def checkerboard(n: int, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Two-level checkerboards with a random square size, phase and pair of levels."""
    yy, xx = _grid(shape)
    max_size = max(2, shape[1] // 2)
    out = np.empty((n, shape[1], shape[2]))
    for i in range(n):
        size = int(rng.integers(2, max_size + 1))
        dy, dx = rng.integers(0, size, size=2)
        parity = ((yy + dy) // size + (xx + dx) // size) % 2
        low, high = rng.uniform(0.0, 0.4), rng.uniform(0.6, 1.0)
        out[i] = np.where(parity == 1, high, low)
    return _broadcast(out, shape)


def blobs(n: int, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """A few Gaussian blobs of random position, width and brightness on black."""
    yy, xx = _grid(shape)
    out = np.zeros((n, shape[1], shape[2]))
    for i in range(n):
        for _ in range(int(rng.integers(1, 5))):
            cy, cx = rng.uniform(0, shape[1]), rng.uniform(0, shape[2])
            sigma = rng.uniform(1.5, 5.0) * _scale(shape)
            amplitude = rng.uniform(0.5, 1.0)
            out[i] += amplitude * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    return _broadcast(out, shape)


@cache
def _glyph(letter: str) -> Image.Image:
    """The letter rendered large and cropped to its ink, so it can be scaled to any size."""
    size = 64
    try:
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont = ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):
        # Older Pillow, or no FreeType: the small bitmap font, upscaled later, still works.
        font = ImageFont.load_default()
    canvas = Image.new("L", (2 * size, 2 * size), 0)
    ImageDraw.Draw(canvas).text((size // 2, size // 2), letter, fill=255, font=font)
    return canvas.crop(canvas.getbbox())


def letters(n: int, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Random capital letters, white on black, filling 60-80% of the image, slightly shifted."""
    _, h, w = shape
    chosen = rng.choice(list(string.ascii_uppercase), size=n)
    fills = rng.uniform(0.6, 0.8, size=n)
    max_shift = max(1, round(2 * _scale(shape)))
    shifts = rng.integers(-max_shift, max_shift + 1, size=(n, 2))
    out = np.empty((n, h, w))
    for i in range(n):
        glyph = _glyph(str(chosen[i]))
        ratio = fills[i] * min(h, w) / max(glyph.size)
        gw, gh = (max(1, round(d * ratio)) for d in glyph.size)
        canvas = Image.new("L", (w, h), 0)
        corner = ((w - gw) // 2 + int(shifts[i, 1]), (h - gh) // 2 + int(shifts[i, 0]))
        canvas.paste(glyph.resize((gw, gh), Image.Resampling.BILINEAR), corner)
        out[i] = np.asarray(canvas, dtype=np.float64) / 255.0
    return _broadcast(out, shape)


def stripes(n: int, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Sinusoidal gratings with random orientation, period and phase."""
    yy, xx = _grid(shape)
    theta = rng.uniform(0.0, np.pi, size=n)
    period = rng.uniform(3.0, 14.0, size=n) * _scale(shape)
    phase = rng.uniform(0.0, 2.0 * np.pi, size=n)
    along = np.cos(theta)[:, None, None] * xx + np.sin(theta)[:, None, None] * yy
    wave = np.sin(2.0 * np.pi * along / period[:, None, None] + phase[:, None, None])
    return _broadcast(0.5 + 0.5 * wave, shape)


def invert(images: np.ndarray) -> np.ndarray:
    """Photographic negative of real images, for an 'inverted in-distribution' OOD set."""
    return (1.0 - np.asarray(images, dtype=np.float32)).astype(np.float32)


OOD_FAMILIES: dict[str, Family] = {
    "uniform_noise": uniform_noise,
    "gaussian_noise": gaussian_noise,
    "smooth_noise": smooth_noise,
    "blank": blank,
    "checkerboard": checkerboard,
    "blobs": blobs,
    "letters": letters,
    "stripes": stripes,
}
TRAINING_FAMILIES: tuple[str, ...] = ("smooth_noise",)
EVALUATION_FAMILIES: tuple[str, ...] = tuple(k for k in OOD_FAMILIES if k not in TRAINING_FAMILIES)


# Drawings made as on the web page (training.strokes): an outlier family for training and its
# held-out twin, kept out of OOD_FAMILIES so that the evaluation's mean over families stays
# comparable with the committed records.
DRAWN_FAMILIES: dict[str, Family] = {
    "pen_strokes": strokes.pen_strokes,
    "drawn_held_out": strokes.drawn_held_out,
}
ALL_FAMILIES: dict[str, Family] = {**OOD_FAMILIES, **DRAWN_FAMILIES}


def make_ood(name: str, n: int, shape: Shape, seed: int) -> np.ndarray:
    """``n`` images of family ``name`` with shape ``(C, H, W)``, reproducible from ``seed``."""
    if name not in ALL_FAMILIES:
        raise ValueError(f"unknown OOD family {name!r}; valid names: {', '.join(ALL_FAMILIES)}")
    if n < 0 or len(shape) != 3:
        raise ValueError(f"expected n >= 0 and shape (C, H, W), got n={n}, shape={shape}")
    c, h, w = (int(d) for d in shape)
    return ALL_FAMILIES[name](n, (c, h, w), np.random.default_rng(seed))
