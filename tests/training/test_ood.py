"""Synthetic OOD families: format, reproducibility and the look each family promises."""

from __future__ import annotations

import numpy as np
import pytest

from training.ood import (
    EVALUATION_FAMILIES,
    OOD_FAMILIES,
    TRAINING_FAMILIES,
    invert,
    make_ood,
)

SHAPES = [(1, 28, 28), (3, 32, 32)]


def test_training_and_evaluation_families_partition_the_registry() -> None:
    assert TRAINING_FAMILIES == ("smooth_noise",)
    assert set(TRAINING_FAMILIES).isdisjoint(EVALUATION_FAMILIES)
    assert set(TRAINING_FAMILIES) | set(EVALUATION_FAMILIES) == set(OOD_FAMILIES)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", sorted(OOD_FAMILIES))
def test_format_and_determinism(name: str, shape: tuple[int, int, int]) -> None:
    images = make_ood(name, 6, shape, seed=3)
    assert images.shape == (6, *shape)
    assert images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    np.testing.assert_array_equal(images, make_ood(name, 6, shape, seed=3))


@pytest.mark.parametrize("name", sorted(set(OOD_FAMILIES) - {"blank"}))
def test_images_differ_within_a_batch(name: str) -> None:
    images = make_ood(name, 4, (1, 28, 28), seed=0)
    assert not np.array_equal(images[0], images[1])


@pytest.mark.parametrize("shape", SHAPES)
def test_letters_have_ink_on_black(shape: tuple[int, int, int]) -> None:
    images = make_ood("letters", 20, shape, seed=0)
    assert np.all(images.min(axis=(1, 2, 3)) < 0.05)
    assert np.all(images.max(axis=(1, 2, 3)) > 0.9)
    ink = (images > 0.5).mean(axis=(1, 2, 3))
    assert np.all((ink > 0.03) & (ink < 0.6)), ink


def test_checkerboard_has_two_levels() -> None:
    for image in make_ood("checkerboard", 10, (3, 28, 28), seed=0):
        assert len(np.unique(image)) == 2


def test_blank_is_constant_and_reaches_the_extremes() -> None:
    images = make_ood("blank", 50, (1, 8, 8), seed=0)
    levels = images[:, 0, 0, 0]
    assert np.all(images == levels[:, None, None, None])
    assert (levels == 0.0).any() and (levels == 1.0).any()


def test_invert() -> None:
    images = np.array([[[[0.0, 0.25], [1.0, 0.5]]]], dtype=np.float32)
    out = invert(images)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, 1.0 - images)


def test_unknown_family_raises() -> None:
    with pytest.raises(ValueError, match="letters"):
        make_ood("clouds", 1, (1, 28, 28), seed=0)
