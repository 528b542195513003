"""The metrics recorded under docs/results/, grouped into the runs docs/results.md compares.

Every grid run left docs/results/grid/<config>-s<seed>.json; deep ensembles left
docs/results/grid/w<width>-ensemble3-<seeds>.json; the 12-epoch deterministic baseline
docs/results/baseline/det12-s0.json; the first default model (MIMO) its models/mnist/1/metrics.json.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.experiments.grid import GridPoint, parse

ROOT = Path(__file__).resolve().parents[2]
RECORDS = ROOT / "docs" / "results"


@dataclass
class Runs:
    """Runs of one kind (seeds of a configuration, or deep ensembles) and their metrics."""

    records: list[dict[str, Any]]

    def values(self, *path: str | int) -> np.ndarray:
        return np.array([_dig(r["metrics"], path) for r in self.records], dtype=float)

    def member_accuracy(self) -> float:
        """The heads' clean accuracy, averaged over heads and runs."""
        accuracies = [np.mean(r["metrics"]["clean"]["member_accuracy"]) for r in self.records]
        return float(np.mean(accuracies))

    def ensemble_gain(self) -> float:
        """How much averaging the heads lowers the NLL: 0 when the heads are copies of each other
        (or there is one head), larger the more independent their errors are."""
        gains = [
            np.mean(r["metrics"]["clean"]["member_nll"]) - r["metrics"]["clean"]["nll"]
            for r in self.records
        ]
        return float(np.mean(gains))


@dataclass
class Config(Runs):
    """One configuration of the grid; `point` is seed 0's (the seed is not part of it)."""

    point: GridPoint

    @property
    def label(self) -> str:
        p = self.point
        loss = (" +OE" if p.oe else " +outlier") if p.outlier else ""
        if p.is_deterministic:
            return "deterministic" + loss
        return f"M={p.ensemble_size} rho={p.rho:g}" + loss


@dataclass
class Ensemble(Runs):
    """Deep ensembles of 3 deterministic networks of one width, one record per triple; `oe`:
    of networks trained with outlier exposure."""

    width: float
    oe: bool = False

    @property
    def label(self) -> str:
        return "deep ensemble of 3" + (" +OE" if self.oe else "")


def _dig(d: Any, path: Iterable[str | int]) -> Any:
    for key in path:
        d = d[key]
    return d


def load_grid(root: Path = RECORDS / "grid") -> tuple[list[Config], list[Ensemble]]:
    configs: dict[str, Config] = {}
    ensembles: dict[tuple[float, bool], Ensemble] = {}
    for path in sorted(root.glob("*.json")):
        record = json.loads(path.read_text())
        if "ensemble" in record:
            width, oe = float(record["ensemble"]["width"]), bool(record["ensemble"].get("oe"))
            ensembles.setdefault((width, oe), Ensemble([], width, oe)).records.append(record)
            continue
        point = parse(path.stem)
        key = point.config
        if key not in configs:
            configs[key] = Config([], GridPoint(**{**record["point"], "seed": 0}))
        configs[key].records.append(record)
    ordered = sorted(configs.values(), key=lambda c: c.point)
    return ordered, sorted(ensembles.values(), key=lambda e: (e.width, e.oe))
