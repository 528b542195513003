"""Drawings as the web page makes them: the page's crop, shapes apart, and the families."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from training.glyphs import DIGITS, HELD_OUT, NON_DIGITS, TRAIN_DIGITS
from training.ood import make_ood
from training.strokes import CANVAS, INK_SHARE, canvas, drawn, drawn_digits, hand, page_crop

SPEC = {"color": "L", "resize": [28, 28], "resample": "bilinear"}


def test_the_sets_are_apart() -> None:
    assert not set(NON_DIGITS) & set(HELD_OUT)
    assert set(DIGITS) == {str(d) for d in range(10)}
    # letters a hand draws like a digit are in no set of non-digits
    assert not {"O", "I", "S", "Z", "B", "G"} & (set(NON_DIGITS) | set(HELD_OUT))


def test_page_crop_is_the_pages() -> None:
    """A 100 x 50 block of ink: cropped, in a square it fills 20/28 of (the longer side),
    centred by its mass, as app.js's drawingBlob sends it."""
    image = Image.new("L", (CANVAS, CANVAS), 0)
    image.paste(255, (30, 40, 130, 90))
    crop = page_crop(image)
    assert crop is not None
    side = int(np.ceil(100 / INK_SHARE))
    assert crop.size == (side, side)
    pixels = np.asarray(crop)
    ys, xs = np.nonzero(pixels)
    assert (xs.min(), xs.max() + 1, ys.max() + 1 - ys.min()) == (20, 120, 50)
    assert abs((ys.min() + ys.max()) / 2 - side / 2) <= 1  # centred by its mass
    assert page_crop(Image.new("L", (CANVAS, CANVAS), 0)) is None


def test_strokes_are_the_pens() -> None:
    """A dot is a disc as wide as the pen (20 px), white on black."""
    dot = np.asarray(canvas([[(140.0, 140.0)]]))
    ys, xs = np.nonzero(dot)
    assert dot.max() == 255 and 19 <= xs.max() - xs.min() + 1 <= 21
    assert 19 <= ys.max() - ys.min() + 1 <= 21


def test_hands_differ_and_repeat_from_a_seed() -> None:
    one = drawn(NON_DIGITS["A"], SPEC, np.random.default_rng(1))
    again = drawn(NON_DIGITS["A"], SPEC, np.random.default_rng(1))
    other = drawn(NON_DIGITS["A"], SPEC, np.random.default_rng(2))
    assert one.shape == (1, 28, 28) and one.dtype == np.float32
    np.testing.assert_array_equal(one, again)
    assert np.abs(one - other).max() > 0.1
    assert one.min() >= 0.0 and one.max() <= 1.0
    # the page's framing: ink in the middle, none on the border
    assert one[0, 0].max() == 0 and one[0, -1].max() == 0 and one[0, 10:18, 10:18].max() > 0
    points = hand(NON_DIGITS["A"], np.random.default_rng(3))
    assert all(0 <= x <= CANVAS and 0 <= y <= CANVAS for s in points for x, y in s)


@pytest.mark.parametrize("name", ["pen_strokes", "drawn_held_out"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_families(name: str, shape: tuple[int, int, int]) -> None:
    images = make_ood(name, 5, shape, seed=4)
    assert images.shape == (5, *shape) and images.dtype == np.float32
    np.testing.assert_array_equal(images, make_ood(name, 5, shape, seed=4))
    assert images.max() > 0.9  # white ink


def test_training_digits_are_labelled_and_other_glyphs() -> None:
    """The drawn digits a model may train on are every digit, in glyphs of their own: the
    DIGITS that measure drawn digits stay unseen."""
    assert set(TRAIN_DIGITS) == set(DIGITS)
    for label, glyphs in TRAIN_DIGITS.items():
        assert all(glyph != DIGITS[label] for glyph in glyphs)
    images, labels = drawn_digits(40, (1, 28, 28), np.random.default_rng(3))
    assert images.shape == (40, 1, 28, 28) and images.dtype == np.float32
    assert labels.dtype == np.int64 and set(labels.tolist()) <= set(range(10))
    assert images.min() >= 0.0 and images.max() <= 1.0 and images.mean() > 0.05
    again, same = drawn_digits(40, (1, 28, 28), np.random.default_rng(3))
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(labels, same)
