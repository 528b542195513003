"""The capacity grid: width x M x input repetition rho x outlier loss, several seeds.

Each point trains the `mnist` preset for the same number of epochs and is evaluated alike; its
metrics are kept in docs/results/grid/<name>.json (small, committed), so the tables and plots
are rebuilt from the repository without re-training (`python -m training.experiments
grid-table`).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

WIDTHS = (0.5, 1.0, 2.0)
ENSEMBLE_SIZES = (1, 2, 3)
RHOS = (0.0, 0.5)


@dataclass(frozen=True, order=True)
class GridPoint:
    width: float
    ensemble_size: int
    rho: float = 0.0
    outlier: bool = False
    seed: int = 0
    # the outlier loss is outlier exposure (each head's cross-entropy to the uniform
    # distribution, Hendrycks et al. 2019), not the heads' agreement
    oe: bool = False

    @property
    def config(self) -> str:
        """The name without the seed: the runs of one configuration share it."""
        kind = ("oe" if self.oe else "outlier") if self.outlier else "plain"
        return f"w{self.width:g}-m{self.ensemble_size}-rho{self.rho:g}-{kind}"

    @property
    def name(self) -> str:
        return f"{self.config}-s{self.seed}"

    @property
    def is_deterministic(self) -> bool:
        return self.ensemble_size == 1

    def flags(self) -> tuple[str, ...]:
        # M=1 is an ordinary network: no batch repetition, as the paper's baseline.
        repetition = "1" if self.is_deterministic else "2"
        flags = (
            "--width", f"{self.width:g}",
            "--ensemble-size", str(self.ensemble_size),
            "--input-repetition", f"{self.rho:g}",
            "--batch-repetition", repetition,
            "--seed", str(self.seed),
            "--val-seed", "0",  # one validation split: deep ensembles of these are calibrated
        )  # fmt: skip
        if self.outlier:
            flags += ("--outlier-weight", "1.0")
            flags += ("--outlier-loss", "uniform" if self.oe else "agreement")
        return flags


def points(
    widths: tuple[float, ...] = WIDTHS, seeds: tuple[int, ...] = (0,), outlier_m: int = 3
) -> list[GridPoint]:
    """Every configuration, cheapest first within a seed; seeds outer so that an interrupted
    grid has every configuration with fewer seeds.

    rho and the agreement loss only exist with several heads; the outlier losses are run at
    M = `outlier_m` (the default model's M), where they are what the service's flag relies
    on. Outlier exposure (the uniform target) also trains the single network: the cheap
    alternative MIMO's flag is measured against, on the same outliers and budget.
    """
    out = []
    for seed in seeds:
        for width in widths:
            out.append(GridPoint(width, 1, seed=seed))
            out.append(GridPoint(width, 1, outlier=True, seed=seed, oe=True))
            for m, rho in product((m for m in ENSEMBLE_SIZES if m > 1), RHOS):
                out.append(GridPoint(width, m, rho, seed=seed))
            for rho in RHOS:
                out.append(GridPoint(width, outlier_m, rho, outlier=True, seed=seed))
            out.append(GridPoint(width, outlier_m, 0.5, outlier=True, seed=seed, oe=True))
    return out


def parse(name: str) -> GridPoint:
    """The point a run name stands for (inverse of GridPoint.name)."""
    w, m, rho, kind, s = name.split("-")
    outlier = kind in ("outlier", "oe")
    return GridPoint(float(w[1:]), int(m[1:]), float(rho[3:]), outlier, int(s[1:]), kind == "oe")
