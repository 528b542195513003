"""Logits of a batch -> everything an answer needs, once per batch, off the event loop.

The uncertainty measures are computed for the whole batch with one set of numpy calls, the
Prometheus distributions are recorded, and the values the JSON answers print are turned into
Python numbers here, in the inference thread, so that each request only picks its rows.

Packed batches (M different images in the M slots of one row, each answered by its own
slot's head) have one head's probabilities per image and no ensemble uncertainty: `Packed`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from service import metrics
from service.contract import ModelContract
from service.uncertainty import MEASURES, EnsembleUncertainty, ensemble_uncertainty, softmax


@dataclass(frozen=True)
class Row:
    """One image's share of a scored batch."""

    batch: Answers
    index: int


class Answers:
    """A batch's answers, row i for image i: `p` [N, K] the probabilities answered."""

    # What every /predict answer prints, turned into Python numbers once for the batch.
    CONVERTED: tuple[str, ...] = ("probabilities", "ranking")

    def __init__(self, p: np.ndarray) -> None:
        self.p = p

    def __len__(self) -> int:
        return len(self.p)

    def __getitem__(self, index: int) -> Row:
        return Row(self, index)

    def __iter__(self) -> Iterator[Row]:
        return (Row(self, i) for i in range(len(self)))

    @cached_property
    def probabilities(self) -> list[list[float]]:
        return self.p.tolist()

    @cached_property
    def ranking(self) -> list[list[int]]:
        """Classes by decreasing probability (ties: lower index first)."""
        return np.argsort(-self.p, axis=1, kind="stable").tolist()

    def prepare(self) -> Answers:
        """Convert what the answers print (call it in the inference thread)."""
        for name in self.CONVERTED:
            getattr(self, name)
        return self


class Scored(Answers):
    """An ensemble batch: the mean of the heads, their uncertainty measures and the
    `uncertain` flags."""

    CONVERTED = (*Answers.CONVERTED, "members", "measures", "flags")

    def __init__(self, u: EnsembleUncertainty, uncertain: np.ndarray) -> None:
        super().__init__(u.probabilities)
        self.u = u
        self.uncertain = uncertain

    @cached_property
    def members(self) -> tuple[list[list[int]], list[list[float]], list[list[float]]]:
        """Each head's top class, its probability and the head's KL to the mean: [N][M]."""
        members = self.u.member_probabilities  # [N, M, K]
        # the top class's probability is the maximum: no gather (take_along_axis: 20 us)
        return (
            members.argmax(axis=-1).tolist(),
            members.max(axis=-1).tolist(),
            self.u.kl_to_mean.tolist(),
        )

    @cached_property
    def measures(self) -> list[dict[str, float]]:
        columns = [getattr(self.u, name).tolist() for name in MEASURES]
        return [dict(zip(MEASURES, values, strict=True)) for values in zip(*columns, strict=True)]

    @cached_property
    def flags(self) -> list[bool]:
        return self.uncertain.tolist()


class Packed(Answers):
    """A packed batch: image i was in slot `heads[i]` and that head alone answers it."""

    def __init__(self, probabilities: np.ndarray, heads: np.ndarray) -> None:
        super().__init__(probabilities)
        self.heads = heads  # [N]


def score(contract: ModelContract, logits: np.ndarray, labels: tuple[str, str]) -> Scored:
    """logits [N, M, K] -> the batch scored and its distributions recorded under `labels`
    (model, version)."""
    u = ensemble_uncertainty(logits, contract.temperature)
    flags = u.mutual_information > contract.thresholds["mutual_information"]
    observe(u, flags, contract.labels, labels)
    return Scored(u, flags)


def observe(
    u: EnsembleUncertainty, flags: np.ndarray, names: tuple[str, ...], labels: tuple[str, str]
) -> None:
    """Record the batch's uncertainty distributions and predicted classes."""
    metrics.observe_many(metrics.child(metrics.MUTUAL_INFORMATION, *labels), u.mutual_information)
    metrics.observe_many(metrics.child(metrics.PREDICTIVE_ENTROPY, *labels), u.predictive_entropy)
    metrics.observe_many(metrics.child(metrics.DISAGREEMENT, *labels), u.disagreement)
    count_predictions(u.probabilities, names, labels)
    # Touched even when 0: the uncertain share (alerts, dashboard) needs the series to exist.
    metrics.child(metrics.UNCERTAIN, *labels).inc(int(flags.sum()))


def score_packed(
    contract: ModelContract, logits: np.ndarray, n: int, names: tuple[str, str]
) -> Packed:
    """Packed logits [rows, M, K] -> the first `n` images' own-head probabilities."""
    per_image = logits.reshape(-1, logits.shape[-1])[:n]  # row-major: image i = row i//M, slot i%M
    p = softmax(per_image, contract.temperature)
    count_predictions(p, contract.labels, names)
    return Packed(p, np.arange(n) % logits.shape[1])


def count_predictions(p: np.ndarray, names: tuple[str, ...], labels: tuple[str, str]) -> None:
    """mimo_predictions_total by predicted class, one increment per class of the batch."""
    top = p.argmax(axis=1)
    if len(top) < 6:  # (bincount and its scan cost more than a few increments)
        for index in top.tolist():
            metrics.child(metrics.PREDICTIONS, *labels, names[index]).inc()
        return
    counts = np.bincount(top, minlength=len(names))
    for index in np.flatnonzero(counts).tolist():
        metrics.child(metrics.PREDICTIONS, *labels, names[index]).inc(int(counts[index]))
