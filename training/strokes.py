"""Drawings made the way the web page makes them: pen strokes on a 280 x 280 canvas, white, 20
px wide with round ends, on black; the ink cropped, scaled to fill 20/28 of a square and
centred by its mass (service/static/app.js, `drawingBlob`); then the service's own
preprocessing (service.preprocess.to_input) down to the model's input. The shapes are
training.glyphs', drawn with a hand's variation: a random slant, stretch, rotation and wobble.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from service.preprocess import to_input
from training.glyphs import HELD_OUT, NON_DIGITS, TRAIN_DIGITS, Shape

CANVAS = 280  # the page's canvas, px
PEN = 20  # its line width, px
INK_SHARE = 20 / 28  # of the square the ink fills (app.js INK_SHARE)
INK_LEVEL = 16  # a pixel at or above this is ink (app.js drawingBlob)


def input_spec(shape: tuple[int, int, int]) -> dict:
    """The preprocessing (a model's mimo.preprocess) down to an input of `shape` [C, H, W]."""
    c, h, w = shape
    return {"color": "L" if c == 1 else "RGB", "resize": [w, h], "resample": "bilinear"}


def drawn_digits(
    n: int, shape: tuple[int, int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """`n` digits of TRAIN_DIGITS drawn as on the page: float32 [n, C, H, W], labels [n]."""
    c, h, w = shape
    spec = input_spec(shape)
    labels = rng.integers(10, size=n)
    out = np.empty((n, c, h, w), np.float32)
    for i, label in enumerate(labels.tolist()):
        glyphs = TRAIN_DIGITS[str(label)]
        out[i] = drawn(glyphs[rng.integers(len(glyphs))], spec, rng)
    return out, labels.astype(np.int64)


def hand(shape: Shape, rng: np.random.Generator) -> Shape:
    """`shape` as a hand draws it: slanted, stretched, turned a little, each point off by a
    little, placed somewhere on the canvas at some size."""
    angle = math.radians(rng.uniform(-15, 15))
    shear = rng.uniform(-0.25, 0.25)
    sx, sy = rng.uniform(0.75, 1.2), rng.uniform(0.8, 1.2)
    cos, sin = math.cos(angle), math.sin(angle)
    size = rng.uniform(0.45, 0.8) * CANVAS
    cx, cy = CANVAS / 2 + rng.uniform(-0.12, 0.12, 2) * CANVAS
    wobble = 0.025
    out = []
    for stroke in shape:
        points = []
        for x, y in stroke:
            x, y = (x - 0.5 + rng.normal(0, wobble)) * sx, (y - 0.5 + rng.normal(0, wobble)) * sy
            x = x + shear * y
            x, y = cos * x - sin * y, sin * x + cos * y
            points.append((cx + size * x, cy + size * y))
        out.append(points)
    return out


def canvas(shape: Shape) -> Image.Image:
    """The page's canvas after drawing `shape` (canvas pixels): white round-ended strokes."""
    image = Image.new("L", (CANVAS, CANVAS), 0)
    draw = ImageDraw.Draw(image)
    r = PEN / 2
    for stroke in shape:
        if len(stroke) > 1:
            draw.line(stroke, fill=255, width=PEN, joint="curve")
        for x, y in (stroke[0], stroke[-1]):  # round ends
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    return image


def page_crop(image: Image.Image) -> Image.Image | None:
    """What the page sends: the ink cropped, in a square it fills INK_SHARE of, centred by
    its mass (None for an empty canvas)."""
    pixels = np.asarray(image, dtype=np.float64)
    ink = pixels >= INK_LEVEL
    if not ink.any():
        return None
    ys, xs = np.nonzero(ink)
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    w, h = x1 - x0 + 1, y1 - y0 + 1
    mass = pixels[ink].sum()
    mx = (pixels[ink] * xs).sum() / mass
    my = (pixels[ink] * ys).sum() / mass
    side = math.ceil(max(w, h) / INK_SHARE)
    dx = min(side - w, max(0, round(side / 2 - (mx - x0))))
    dy = min(side - h, max(0, round(side / 2 - (my - y0))))
    out = Image.new("L", (side, side), 0)
    out.paste(image.crop((x0, y0, x1 + 1, y1 + 1)), (dx, dy))
    return out


def drawn(shape: Shape, spec: dict, rng: np.random.Generator) -> np.ndarray:
    """float32 [C, H, W]: `shape` drawn by hand on the page and preprocessed as the service
    does (`spec`: the model's mimo.preprocess)."""
    crop = page_crop(canvas(hand(shape, rng)))
    assert crop is not None  # (every shape has ink)
    return to_input(crop, spec)


def family(
    shapes: dict[str, Shape],
) -> Callable[[int, tuple[int, int, int], np.random.Generator], np.ndarray]:
    """An outlier family (training.ood's signature) drawing random shapes of `shapes`."""
    names = sorted(shapes)

    def make(n: int, shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
        c, h, w = shape
        spec = input_spec(shape)
        out = np.empty((n, c, h, w), np.float32)
        for i in range(n):
            out[i] = drawn(shapes[names[rng.integers(len(names))]], spec, rng)
        return out

    return make


pen_strokes = family(NON_DIGITS)
drawn_held_out = family(HELD_OUT)
