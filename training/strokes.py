"""Drawings made the way the web page makes them: pen strokes on a 280 x 280 canvas, white, 20
px wide with round ends, on black; the ink cropped, scaled to fill 20/28 of a square and
centred by its mass (service/static/app.js, `drawingBlob`); then the service's own
preprocessing (service.preprocess.to_input) down to the model's input.

Shapes are strokes in a unit box (x right, y down), drawn with a hand's variation: a random
slant, stretch, rotation and wobble. Three sets, apart:
- `NON_DIGITS`: letters, symbols and doodles, the `pen_strokes` outlier family for training;
- `HELD_OUT`: other letters, symbols and doodles, never trained on (`drawn_held_out`);
- `DIGITS`: 0-9 drawn the same way, to check that drawn digits stay right and unflagged.
Letters and shapes that a hand makes like a digit (O, I, S, Z, B, G, a circle) are in none.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from service.preprocess import to_input

Point = tuple[float, float]
Stroke = list[Point]
Shape = list[Stroke]

CANVAS = 280  # the page's canvas, px
PEN = 20  # its line width, px
INK_SHARE = 20 / 28  # of the square the ink fills (app.js INK_SHARE)
INK_LEVEL = 16  # a pixel at or above this is ink (app.js drawingBlob)


def arc(
    cx: float, cy: float, rx: float, ry: float, start: float, end: float, points: int = 12
) -> Stroke:
    """An elliptic arc from angle `start` to `end` (degrees; 0 = right, 90 = down)."""
    angles = np.radians(np.linspace(start, end, points))
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]


def line(*points: Point) -> Stroke:
    return list(points)


NON_DIGITS: dict[str, Shape] = {
    "A": [line((0.0, 1.0), (0.5, 0.0), (1.0, 1.0)), line((0.22, 0.6), (0.78, 0.6))],
    "E": [line((0.8, 0.0), (0.1, 0.0), (0.1, 1.0), (0.8, 1.0)), line((0.1, 0.5), (0.6, 0.5))],
    "F": [line((0.8, 0.0), (0.1, 0.0), (0.1, 1.0)), line((0.1, 0.5), (0.6, 0.5))],
    "H": [line((0.1, 0.0), (0.1, 1.0)), line((0.9, 0.0), (0.9, 1.0)), line((0.1, 0.5), (0.9, 0.5))],
    "K": [line((0.15, 0.0), (0.15, 1.0)), line((0.85, 0.0), (0.15, 0.55), (0.85, 1.0))],
    "M": [line((0.0, 1.0), (0.1, 0.0), (0.5, 0.6), (0.9, 0.0), (1.0, 1.0))],
    "N": [line((0.1, 1.0), (0.1, 0.0), (0.9, 1.0), (0.9, 0.0))],
    "R": [
        line((0.15, 1.0), (0.15, 0.0), (0.55, 0.0)),
        arc(0.55, 0.25, 0.3, 0.25, -90, 90, 8),
        line((0.55, 0.5), (0.15, 0.5), (0.85, 1.0)),
    ],
    "V": [line((0.0, 0.0), (0.5, 1.0), (1.0, 0.0))],
    "W": [line((0.0, 0.0), (0.25, 1.0), (0.5, 0.35), (0.75, 1.0), (1.0, 0.0))],
    "X": [line((0.0, 0.0), (1.0, 1.0)), line((1.0, 0.0), (0.0, 1.0))],
    "Y": [line((0.0, 0.0), (0.5, 0.5), (1.0, 0.0)), line((0.5, 0.5), (0.5, 1.0))],
    "#": [
        line((0.35, 0.0), (0.25, 1.0)),
        line((0.75, 0.0), (0.65, 1.0)),
        line((0.0, 0.33), (1.0, 0.33)),
        line((0.0, 0.67), (1.0, 0.67)),
    ],
    "+": [line((0.5, 0.0), (0.5, 1.0)), line((0.0, 0.5), (1.0, 0.5))],
    "*": [
        line((0.5, 0.0), (0.5, 1.0)),
        line((0.07, 0.25), (0.93, 0.75)),
        line((0.93, 0.25), (0.07, 0.75)),
    ],
    "=": [line((0.0, 0.3), (1.0, 0.3)), line((0.0, 0.7), (1.0, 0.7))],
    "arrow": [line((0.0, 0.5), (1.0, 0.5)), line((0.65, 0.15), (1.0, 0.5), (0.65, 0.85))],
    "house": [
        line((0.1, 0.45), (0.1, 1.0), (0.9, 1.0), (0.9, 0.45)),
        line((0.0, 0.5), (0.5, 0.0), (1.0, 0.5)),
    ],
    "square": [line((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0), (0.0, 0.0))],
    "triangle": [line((0.5, 0.0), (1.0, 1.0), (0.0, 1.0), (0.5, 0.0))],
    "star": [
        line(
            *[
                (
                    0.5 + 0.5 * math.cos(math.radians(-90 + 144 * k)),
                    0.52 + 0.5 * math.sin(math.radians(-90 + 144 * k)),
                )
                for k in range(6)
            ]
        )
    ],
    "heart": [
        [*arc(0.27, 0.3, 0.25, 0.22, 150, 360, 10), (0.5, 0.32)],
        [(0.5, 0.32), *arc(0.73, 0.3, 0.25, 0.22, 180, 390, 10)],
        line((0.04, 0.4), (0.5, 1.0), (0.96, 0.4)),
    ],
    "zigzag": [line((0.0, 0.2), (0.25, 0.8), (0.5, 0.2), (0.75, 0.8), (1.0, 0.2))],
    "box-x": [
        line((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0), (0.0, 0.0)),
        line((0.0, 0.0), (1.0, 1.0)),
        line((1.0, 0.0), (0.0, 1.0)),
    ],
}

HELD_OUT: dict[str, Shape] = {
    "C": [arc(0.55, 0.5, 0.45, 0.5, -50, -310, 14)],
    "J": [
        line((0.3, 0.0), (0.9, 0.0)),
        line((0.7, 0.0), (0.7, 0.75)) + arc(0.45, 0.75, 0.25, 0.25, 0, 180, 8),
    ],
    "P": [
        line((0.15, 1.0), (0.15, 0.0), (0.5, 0.0)),
        [*arc(0.5, 0.25, 0.35, 0.25, -90, 90, 8), (0.15, 0.5)],
    ],
    "U": [line((0.1, 0.0), (0.1, 0.6)) + arc(0.5, 0.6, 0.4, 0.4, 180, 0, 10) + [(0.9, 0.0)]],
    "T": [line((0.0, 0.0), (1.0, 0.0)), line((0.5, 0.0), (0.5, 1.0))],
    "&": [
        line((0.95, 1.0), (0.25, 0.35))
        + arc(0.45, 0.2, 0.2, 0.2, 150, -150, 10)
        + line((0.6, 0.35), (0.15, 0.65))
        + arc(0.4, 0.75, 0.28, 0.25, 200, 90, 8)
        + [(0.85, 0.55)]
    ],
    "smiley": [
        arc(0.5, 0.5, 0.5, 0.5, 0, 360, 20),
        line((0.35, 0.32), (0.35, 0.38)),
        line((0.65, 0.32), (0.65, 0.38)),
        arc(0.5, 0.55, 0.25, 0.2, 20, 160, 8),
    ],
    "tree": [
        line((0.5, 1.0), (0.5, 0.0)),
        line((0.5, 0.3), (0.15, 0.1)),
        line((0.5, 0.5), (0.85, 0.25)),
        line((0.5, 0.7), (0.2, 0.5)),
    ],
    "lightning": [line((0.65, 0.0), (0.25, 0.55), (0.6, 0.5), (0.3, 1.0))],
    "spiral": [
        [
            (
                0.5 + (0.05 + 0.45 * t) * math.cos(6 * math.pi * t),
                0.5 + (0.05 + 0.45 * t) * math.sin(6 * math.pi * t),
            )
            for t in np.linspace(0, 1, 40)
        ]
    ],
    "ladder": [
        line((0.2, 0.0), (0.2, 1.0)),
        line((0.8, 0.0), (0.8, 1.0)),
        *[line((0.2, y), (0.8, y)) for y in (0.2, 0.45, 0.7, 0.95)],
    ],
}

DIGITS: dict[str, Shape] = {
    "0": [arc(0.5, 0.5, 0.4, 0.5, -90, 270, 20)],
    "1": [line((0.3, 0.2), (0.55, 0.0), (0.55, 1.0))],
    "2": [[*arc(0.5, 0.3, 0.4, 0.3, 200, 380, 10), (0.1, 1.0), (0.95, 1.0)]],
    "3": [arc(0.45, 0.26, 0.38, 0.26, 210, 450, 10) + arc(0.45, 0.74, 0.42, 0.26, -90, 150, 10)],
    "4": [line((0.65, 1.0), (0.65, 0.0), (0.05, 0.7), (0.95, 0.7))],
    "5": [line((0.85, 0.0), (0.2, 0.0), (0.15, 0.45)) + arc(0.47, 0.68, 0.4, 0.32, -140, 150, 12)],
    "6": [arc(0.6, 0.45, 0.45, 0.45, -60, -180, 8) + arc(0.5, 0.72, 0.35, 0.28, 180, 540, 16)],
    "7": [line((0.05, 0.0), (0.95, 0.0), (0.35, 1.0))],
    "8": [arc(0.5, 0.27, 0.3, 0.26, 90, 450, 16), arc(0.5, 0.74, 0.38, 0.26, -90, 270, 16)],
    "9": [arc(0.5, 0.3, 0.35, 0.3, 0, 360, 16), line((0.85, 0.3), (0.75, 1.0))],
}


# Digits as other hands write them, for training (config.drawn_digit_fraction): other glyphs
# than DIGITS, which stay the measure of drawn digits and are never trained on.
TRAIN_DIGITS: dict[str, list[Shape]] = {
    "0": [[arc(0.5, 0.5, 0.32, 0.5, 60, 420, 20)], [arc(0.5, 0.5, 0.45, 0.5, -120, 240, 18)]],
    "1": [
        [line((0.5, 0.0), (0.5, 1.0))],
        [line((0.35, 0.15), (0.55, 0.0), (0.55, 1.0)), line((0.3, 1.0), (0.8, 1.0))],
    ],
    "2": [
        [line((0.1, 0.2), (0.5, 0.0), (0.9, 0.2), (0.1, 1.0), (0.9, 1.0))],
        [
            [
                *arc(0.5, 0.32, 0.38, 0.32, 180, 400, 10),
                (0.15, 0.95),
                *arc(0.55, 0.95, 0.4, 0.08, 180, 360, 5),
            ]
        ],
    ],
    "3": [
        [line((0.1, 0.0), (0.9, 0.0), (0.45, 0.4)), arc(0.45, 0.7, 0.42, 0.3, -90, 150, 12)],
        [arc(0.45, 0.26, 0.35, 0.26, 180, 450, 10), arc(0.45, 0.74, 0.4, 0.26, -90, 180, 10)],
    ],
    "4": [
        [line((0.15, 0.0), (0.05, 0.6), (0.95, 0.6)), line((0.7, 0.2), (0.7, 1.0))],
        [line((0.75, 1.0), (0.75, 0.0), (0.1, 0.65), (0.9, 0.65))],
    ],
    "5": [
        [
            line((0.2, 0.0), (0.15, 0.45)) + arc(0.47, 0.68, 0.4, 0.32, -140, 150, 12),
            line((0.2, 0.0), (0.85, 0.0)),
        ],
        [
            line(
                (0.8, 0.0),
                (0.25, 0.0),
                (0.2, 0.4),
                (0.7, 0.45),
                (0.85, 0.75),
                (0.5, 1.0),
                (0.1, 0.9),
            )
        ],
    ],
    "6": [
        [line((0.7, 0.0), (0.2, 0.6)) + arc(0.5, 0.72, 0.32, 0.28, 180, 540, 14)],
        [arc(0.55, 0.5, 0.4, 0.5, -80, -180, 6) + arc(0.5, 0.75, 0.32, 0.25, 180, 540, 14)],
    ],
    "7": [
        [line((0.05, 0.0), (0.95, 0.0), (0.4, 1.0)), line((0.35, 0.5), (0.85, 0.5))],
        [line((0.05, 0.15), (0.1, 0.0), (0.95, 0.0), (0.5, 1.0))],
    ],
    "8": [
        [arc(0.5, 0.27, 0.28, 0.27, 90, 450, 14), arc(0.5, 0.73, 0.35, 0.27, -90, 270, 14)],
        [
            line((0.2, 0.0), (0.8, 1.0))
            + arc(0.5, 0.75, 0.3, 0.25, 0, 180, 8)
            + line((0.2, 1.0), (0.8, 0.0))
            + arc(0.5, 0.25, 0.3, 0.25, 0, -180, 8)
        ],
    ],
    "9": [
        [arc(0.5, 0.3, 0.35, 0.3, 0, 360, 16), line((0.85, 0.3), (0.85, 1.0))],
        [arc(0.5, 0.3, 0.38, 0.3, 0, 360, 16) + arc(0.4, 0.55, 0.45, 0.45, 0, 110, 8)],
    ],
}


def drawn_digits(
    n: int, shape: tuple[int, int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """`n` digits of TRAIN_DIGITS drawn as on the page: float32 [n, C, H, W], labels [n]."""
    c, h, w = shape
    spec = {"color": "L" if c == 1 else "RGB", "resize": [w, h], "resample": "bilinear"}
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
        spec = {"color": "L" if c == 1 else "RGB", "resize": [w, h], "resample": "bilinear"}
        out = np.empty((n, c, h, w), np.float32)
        for i in range(n):
            out[i] = drawn(shapes[names[rng.integers(len(names))]], spec, rng)
        return out

    return make


pen_strokes = family(NON_DIGITS)
drawn_held_out = family(HELD_OUT)
