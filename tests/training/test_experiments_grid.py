"""The grid's names, flags and order: run names are the records' file names, so they must
round-trip, and the flags must train what the name says."""

from __future__ import annotations

import pytest

from training.config import PRESETS
from training.experiments.grid import GridPoint, parse, points


@pytest.mark.parametrize(
    "point",
    [
        GridPoint(1.0, 1),
        GridPoint(0.5, 2, 0.5, seed=2),
        GridPoint(2.0, 3, 0.0, outlier=True, seed=11),
        GridPoint(1.0, 1, outlier=True, seed=2, oe=True),
        GridPoint(1.0, 3, 0.5, outlier=True, oe=True),
    ],
)
def test_names_round_trip(point: GridPoint) -> None:
    assert parse(point.name) == point
    assert point.name == f"{point.config}-s{point.seed}"


def test_names_are_the_documented_ones() -> None:
    assert GridPoint(0.5, 3, 0.5, outlier=True, seed=1).name == "w0.5-m3-rho0.5-outlier-s1"
    assert GridPoint(1.0, 1).name == "w1-m1-rho0-plain-s0"
    assert GridPoint(1.0, 1, outlier=True, seed=2, oe=True).name == "w1-m1-rho0-oe-s2"


def _flag(flags: tuple[str, ...], name: str) -> str | None:
    return flags[flags.index(name) + 1] if name in flags else None


def test_flags_train_what_the_name_says() -> None:
    from training.__main__ import main  # noqa: F401  (the flags must exist in the CLI)

    flags = GridPoint(2.0, 3, 0.5, outlier=True, seed=4).flags()
    assert _flag(flags, "--width") == "2"
    assert _flag(flags, "--ensemble-size") == "3"
    assert _flag(flags, "--input-repetition") == "0.5"
    assert _flag(flags, "--batch-repetition") == str(PRESETS["mnist"].batch_repetition)
    assert _flag(flags, "--outlier-weight") == "1.0"
    assert _flag(flags, "--outlier-loss") == "agreement"
    assert _flag(flags, "--seed") == "4"
    single = GridPoint(1.0, 1, outlier=True, oe=True).flags()
    assert _flag(single, "--outlier-loss") == "uniform" and _flag(single, "--ensemble-size") == "1"
    # Every run holds out the same validation split, so deep ensembles of them calibrate.
    assert _flag(flags, "--val-seed") == "0"


def test_the_deterministic_network_has_no_batch_repetition_nor_outliers() -> None:
    flags = GridPoint(1.0, 1).flags()
    assert _flag(flags, "--batch-repetition") == "1"
    assert _flag(flags, "--outlier-weight") is None


def test_points_cover_the_grid_seeds_outer() -> None:
    grid = points((0.5, 1.0), (0, 1))
    assert len(grid) == len(set(grid)) == 2 * 2 * (2 + 2 * 2 + 3)
    assert [p.seed for p in grid] == sorted(p.seed for p in grid)
    # rho and the agreement loss only exist with several heads; outlier exposure on both.
    assert all(p.rho == 0 and (p.oe or not p.outlier) for p in grid if p.ensemble_size == 1)
    assert {p.ensemble_size for p in grid if p.outlier and not p.oe} == {3}
    assert {(p.ensemble_size, p.rho) for p in grid if p.oe} == {(1, 0.0), (3, 0.5)}
    assert {(p.width, p.ensemble_size, p.rho) for p in grid if not p.outlier} == {
        (w, m, r) for w in (0.5, 1.0) for m in (1, 2, 3) for r in (0.0, 0.5) if m > 1 or r == 0
    }


def test_flags_parse_in_the_training_cli() -> None:
    import argparse

    from training.train import add_train_parser

    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", *GridPoint(0.5, 2, 0.5, seed=3).flags()])
    assert (args.width, args.ensemble_size, args.input_repetition) == (0.5, 2, 0.5)
    assert (args.seed, args.val_seed, args.batch_repetition) == (3, 0, 2)
