"""Logits of a batch -> everything an answer needs, once per batch.

The uncertainty measures are computed for the whole batch with one set of numpy calls and the
values the JSON answers print are turned into Python numbers here, where the batch ran (the
inference thread, or the event loop for a lone image), so that each request only picks its
rows.

A batch of one image is scored in plain Python (`ScoredOne`, uncertainty.one_image): a lone
image is answered on the event loop right after its forward pass, where numpy's per-call cost
on cold caches is most of the work (+5 % requests/s at one client, docs/benchmarks.md).

Packed batches (M different images in the M slots of one row, each answered by its own
slot's head) have one head's probabilities per image and no ensemble uncertainty: `Packed`.

Scoring records nothing: `record` puts a batch's distributions and predicted classes into the
Prometheus metrics, separately, so that a lone image's answer is written before they are.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from service import metrics
from service.contract import ModelContract
from service.uncertainty import (
    MEASURES,
    EnsembleUncertainty,
    OneImage,
    ensemble_uncertainty,
    one_image,
    softmax,
)

# The uncertainty distributions recorded for every ensemble answer: (histogram, measure).
RECORDED = (
    (metrics.MUTUAL_INFORMATION, "mutual_information"),
    (metrics.PREDICTIVE_ENTROPY, "predictive_entropy"),
    (metrics.DISAGREEMENT, "disagreement"),
)


@dataclass(frozen=True)
class Row:
    """One image's share of a scored batch."""

    batch: Answers
    index: int


class Answers:
    """A batch's answers, row i for image i: `answered` [N, K] the probabilities answered."""

    # What every /predict answer prints, turned into Python numbers once for the batch.
    CONVERTED: tuple[str, ...] = ("probabilities", "ranking")

    def __init__(self, p: np.ndarray) -> None:
        self.answered = p

    def __len__(self) -> int:
        return len(self.answered)

    def __getitem__(self, index: int) -> Row:
        return Row(self, index)

    def __iter__(self) -> Iterator[Row]:
        return (Row(self, i) for i in range(len(self)))

    @cached_property
    def probabilities(self) -> list[list[float]]:
        return self.answered.tolist()

    @cached_property
    def ranking(self) -> list[list[int]]:
        """Classes by decreasing probability (ties: lower index first)."""
        return np.argsort(-self.answered, axis=1, kind="stable").tolist()

    def prepare(self) -> Answers:
        """Convert what the answers print (call it in the inference thread)."""
        for name in self.CONVERTED:
            getattr(self, name)
        return self

    def record(self, names: tuple[str, ...], series: tuple[str, str]) -> None:
        """mimo_predictions_total by predicted class (`names`: the contract's class labels)
        under `series` (model, version), from the Python numbers the answers print."""
        count_predictions([row[0] for row in self.ranking], names, series)


class Scored(Answers):
    """An ensemble batch: the mean of the heads, their uncertainty measures and the
    `uncertain` flags."""

    CONVERTED = (*Answers.CONVERTED, "members", "measures", "flags")

    def __init__(self, u: EnsembleUncertainty, uncertain: np.ndarray) -> None:
        super().__init__(u.probabilities)
        self.uncertainty = u
        self.uncertain = uncertain

    @cached_property
    def members(self) -> tuple[list[list[int]], list[list[float]], list[list[float]]]:
        """Each head's top class, its probability and the head's KL to the mean: [N][M]."""
        members = self.uncertainty.member_probabilities  # [N, M, K]
        # the top class's probability is the maximum: no gather (take_along_axis costs more)
        return (
            members.argmax(axis=-1).tolist(),
            members.max(axis=-1).tolist(),
            self.uncertainty.kl_to_mean.tolist(),
        )

    @cached_property
    def measures(self) -> list[dict[str, float]]:
        columns = [getattr(self.uncertainty, name).tolist() for name in MEASURES]
        return [dict(zip(MEASURES, values, strict=True)) for values in zip(*columns, strict=True)]

    @cached_property
    def flags(self) -> list[bool]:
        return self.uncertain.tolist()

    def record(self, names: tuple[str, ...], series: tuple[str, str]) -> None:
        """Also the batch's uncertainty distributions and its count of `uncertain` answers."""
        super().record(names, series)
        measures = self.measures
        for metric, name in RECORDED:
            histogram = metrics.child(metric, *series)
            for values in measures:
                histogram.observe(values[name])
        # Touched even when 0: the uncertain share (alerts, dashboard) needs the series to exist.
        metrics.child(metrics.UNCERTAIN, *series).inc(sum(self.flags))


class ScoredOne(Scored):
    """A batch of one image scored in plain Python numbers (uncertainty.one_image, where numpy's
    per-call cost would be most of the work): what the answers print is filled in from them,
    in the attributes Scored computes from its arrays; the arrays (OIP outputs,
    member_probabilities) are built only when asked for."""

    def __init__(self, one: OneImage, uncertain: bool) -> None:  # (no Scored.__init__)
        p = one.probabilities
        top_p = [q[j] for q, j in zip(one.member_probabilities, one.tops, strict=True)]
        self.one = one
        self.__dict__.update(  # Scored's cached properties, for a batch of one
            probabilities=[p],
            ranking=[sorted(range(len(p)), key=lambda j: -p[j])],  # (stable, as argsort's)
            members=([one.tops], [top_p], [one.kl_to_mean]),
            measures=[{name: getattr(one, name) for name in MEASURES}],
            flags=[uncertain],
        )

    def __len__(self) -> int:
        return 1

    @cached_property
    def uncertainty(self) -> EnsembleUncertainty:  # type: ignore[override]
        return self.one.batch()

    @cached_property
    def answered(self) -> np.ndarray:  # type: ignore[override]
        return self.uncertainty.probabilities

    @cached_property
    def uncertain(self) -> np.ndarray:  # type: ignore[override]
        return np.array(self.flags)


class Packed(Answers):
    """A packed batch: image i was in slot `heads[i]` and that head alone answers it."""

    def __init__(self, probabilities: np.ndarray, heads: np.ndarray) -> None:
        super().__init__(probabilities)
        self.heads = heads  # [N]


def score(contract: ModelContract, logits: np.ndarray) -> Scored:
    """logits [N, M, K] -> the batch scored (nothing recorded: see `Answers.record`)."""
    measure, threshold = contract.uncertain_measure, contract.threshold
    if len(logits) == 1:
        one = one_image(logits[0].tolist(), contract.temperature)
        if one is not None:
            return ScoredOne(one, getattr(one, measure) > threshold)
    u = ensemble_uncertainty(logits, contract.temperature)
    return Scored(u, getattr(u, measure) > threshold)


def score_packed(contract: ModelContract, logits: np.ndarray, n: int) -> Packed:
    """Packed logits [rows, M, K] -> the first `n` images' own-head probabilities."""
    per_image = logits.reshape(-1, logits.shape[-1])[:n]  # row-major: image i = row i//M, slot i%M
    p = softmax(per_image, contract.temperature)
    return Packed(p, np.arange(n) % logits.shape[1])


def count_predictions(tops: list[int], names: tuple[str, ...], series: tuple[str, str]) -> None:
    """mimo_predictions_total by predicted class (`tops`: each image's class index), one
    increment per class of the batch."""
    for index, count in Counter(tops).items():
        metrics.child(metrics.PREDICTIONS, *series, names[index]).inc(count)
