"""Augmentation: shapes, how far content moves, and determinism under a seeded generator."""

from __future__ import annotations

import pytest
import torch

from training.augment import augment, random_crop_flip, random_shift


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def translate(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """image [C, H, W] with its content moved down dy and right dx, zeros where nothing lands."""
    _, h, w = image.shape
    out = torch.zeros_like(image)
    out[:, max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)] = image[
        :, max(0, -dy) : h + min(0, -dy), max(0, -dx) : w + min(0, -dx)
    ]
    return out


def find_shift(
    before: torch.Tensor, after: torch.Tensor, max_shift: int, flipped: bool = False
) -> tuple[int, int] | None:
    """The (dy, dx) with |dy|, |dx| <= max_shift that turns `before` into `after`, if any."""
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            moved = translate(before, dy, dx)
            if torch.equal(moved.flip(-1) if flipped else moved, after):
                return dy, dx
    return None


def random_images(n: int, shape: tuple[int, int, int], seed: int) -> torch.Tensor:
    # strictly positive, so a zero-filled border can never be mistaken for content
    return torch.rand(n, *shape, generator=gen(seed)) + 0.1


@pytest.mark.parametrize("max_shift", [1, 2, 3])
def test_shift_keeps_shape_and_moves_content_by_at_most_max_shift(max_shift: int) -> None:
    x = random_images(200, (2, 10, 12), seed=1)
    out = random_shift(x, max_shift, gen(2))
    assert out.shape == x.shape and out.dtype == x.dtype
    seen = set()
    for before, after in zip(x, out, strict=True):
        shift = find_shift(before, after, max_shift)
        assert shift is not None, "output is not a translation of the input within max_shift"
        seen.add(shift)
    # every offset in the window is drawn (25 or more of them, 200 draws)
    span = range(-max_shift, max_shift + 1)
    assert {dy for dy, _ in seen} == set(span)
    assert {dx for _, dx in seen} == set(span)


def test_shift_moves_a_single_pixel_within_the_window() -> None:
    x = torch.zeros(100, 1, 16, 16)
    x[:, 0, 8, 8] = 1.0
    out = random_shift(x, 3, gen(3))
    assert torch.equal(out.sum(dim=(1, 2, 3)), torch.ones(100))  # nothing falls off
    flat = out.view(100, -1).argmax(1)
    rows, cols = flat // 16, flat % 16
    assert (rows - 8).abs().max() <= 3 and (cols - 8).abs().max() <= 3
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 1


@pytest.mark.parametrize("max_shift", [0, -1])
def test_zero_shift_is_identity(max_shift: int) -> None:
    x = random_images(8, (1, 8, 8), seed=4)
    assert torch.equal(random_shift(x, max_shift, gen()), x)
    assert torch.equal(augment(x, "shift", max_shift, gen()), x)


def test_none_is_identity() -> None:
    x = random_images(8, (3, 8, 8), seed=5)
    assert torch.equal(augment(x, "none", 2, gen()), x)


def test_crop_flip_keeps_shape_and_is_a_shift_maybe_flipped() -> None:
    x = random_images(64, (3, 32, 32), seed=6)
    original = x.clone()
    out = random_crop_flip(x, gen(7))
    assert out.shape == x.shape
    assert torch.equal(x, original), "the input must not be modified"
    flips = []
    for before, after in zip(x, out, strict=True):
        plain = find_shift(before, after, 4)
        mirrored = find_shift(before, after, 4, flipped=True)
        assert (plain is None) != (mirrored is None)
        flips.append(mirrored is not None)
    assert 10 < sum(flips) < 54  # about half are flipped


@pytest.mark.parametrize("kind", ["shift", "crop_flip"])
def test_seeded_generator_makes_augmentation_deterministic(kind: str) -> None:
    x = random_images(32, (3, 16, 16), seed=8)
    torch.manual_seed(1)
    a = augment(x, kind, 2, gen(42))
    torch.manual_seed(2)  # the global RNG plays no part
    b = augment(x, kind, 2, gen(42))
    c = augment(x, kind, 2, gen(43))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_generator_state_advances() -> None:
    x = random_images(32, (1, 8, 8), seed=9)
    g = gen(10)
    assert not torch.equal(random_shift(x, 2, g), random_shift(x, 2, g))


def test_unknown_augmentation() -> None:
    with pytest.raises(ValueError, match="unknown augmentation 'rotate'"):
        augment(torch.zeros(1, 1, 4, 4), "rotate", 1, gen())
