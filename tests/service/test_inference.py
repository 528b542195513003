"""service/inference.py: tiling, packing and the padding to an accelerator's fixed batch sizes,
on hand-made tensors whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from service.inference import pack, row_counts, rows_for, tile


@pytest.mark.parametrize(
    ("limit", "sizes"),
    [
        (1, (1,)),
        (2, (1, 2)),
        (3, (1, 2, 3)),
        (8, (1, 2, 4, 8)),
        (32, (1, 2, 4, 8, 16, 32)),
        (33, (1, 2, 4, 8, 16, 32, 33)),
        (96, (1, 2, 4, 8, 16, 32, 64, 96)),
    ],
)
def test_row_counts_are_powers_of_two_and_the_limit(limit: int, sizes: tuple[int, ...]) -> None:
    assert row_counts(limit) == sizes


def test_rows_for_takes_the_first_size_that_holds_them() -> None:
    sizes = row_counts(32)
    assert [rows_for(n, sizes) for n in (1, 2, 3, 4, 5, 9, 16, 17, 32)] == [
        1, 2, 4, 4, 8, 16, 16, 32, 32,
    ]  # fmt: skip
    assert rows_for(40, sizes) == 40  # past the last: as it is
    assert rows_for(5, ()) == 5 and rows_for(5, None) == 5  # no sizes: any


def test_tile_pads_with_rows_of_zeros_after_the_images() -> None:
    images = np.arange(1, 3, dtype=np.float32).reshape(2, 1, 1, 1)  # values 1 and 2
    padded = tile(images, 3, rows=4)
    assert padded.shape == (4, 3, 1, 1, 1) and padded.dtype == np.float32
    assert padded[:, :, 0, 0, 0].tolist() == [[1, 1, 1], [2, 2, 2], [0, 0, 0], [0, 0, 0]]
    np.testing.assert_array_equal(tile(images, 3, rows=2), tile(images, 3))
    assert tile(images, 3, rows=1).shape[0] == 2  # never fewer rows than images


def test_pack_fills_the_padding_rows_with_the_batchs_images() -> None:
    images = np.arange(4, dtype=np.float32).reshape(4, 1, 1, 1)
    rows = pack(images, 3, rows=4)
    assert rows.shape == (4, 3, 1, 1, 1)
    flat = rows[:, :, 0, 0, 0].ravel().tolist()
    assert flat[:4] == [0, 1, 2, 3]  # image i in row i // M, slot i % M
    assert set(flat[4:]) <= {0, 1, 2, 3}  # in distribution; their answers are dropped
