"""Corruptions are reproducible, keep the image format, and get harsher with severity."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.datasets import load_digits

from training.corruptions import CORRUPTIONS, SEVERITIES, corrupt

NAMES = sorted(CORRUPTIONS)


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """MNIST-like [N, 1, 28, 28]: 8x8 digits upsampled to 20x20 and padded by 4 px."""
    small = load_digits().images[:12] / 16.0
    big = np.stack([ndimage.zoom(d, 2.5, order=1) for d in small])
    padded = np.pad(big, ((0, 0), (4, 4), (4, 4)))
    return np.clip(padded, 0.0, 1.0).astype(np.float32)[:, None]


@pytest.fixture(scope="module")
def colour() -> np.ndarray:
    return np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)


def test_registry_matches_severity_table() -> None:
    assert set(CORRUPTIONS) == set(SEVERITIES)
    assert all(len(v) == 5 for v in SEVERITIES.values())


@pytest.mark.parametrize("name", NAMES)
def test_format_is_preserved(name: str, digits: np.ndarray, colour: np.ndarray) -> None:
    for images in (digits, colour):
        out = corrupt(images, name, 3, seed=1)
        assert out.shape == images.shape
        assert out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_output(name: str, digits: np.ndarray) -> None:
    np.testing.assert_array_equal(
        corrupt(digits, name, 4, seed=7), corrupt(digits, name, 4, seed=7)
    )


@pytest.mark.parametrize("name", ["gaussian_noise", "impulse_noise", "rotation", "translation"])
def test_seed_changes_random_corruptions(name: str, digits: np.ndarray) -> None:
    assert not np.array_equal(corrupt(digits, name, 4, seed=1), corrupt(digits, name, 4, seed=2))


@pytest.mark.parametrize("name", NAMES)
def test_distance_grows_with_severity(name: str, digits: np.ndarray) -> None:
    distances = [np.abs(corrupt(digits, name, s, seed=0) - digits).mean() for s in range(1, 6)]
    assert distances[0] > 0.0
    assert np.all(np.diff(distances) > 0), distances


def test_bad_inputs_raise(digits: np.ndarray) -> None:
    with pytest.raises(ValueError, match="gaussian_noise"):
        corrupt(digits, "fog", 1)
    for severity in (0, 6):
        with pytest.raises(ValueError, match=r"1\.\.5"):
            corrupt(digits, "contrast", severity)
    with pytest.raises(ValueError):
        corrupt(digits[0], "contrast", 1)
