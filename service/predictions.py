"""Logits of a batch -> the answers and the uncertainty metrics, per image."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from service import metrics
from service.registry import ServedModel
from service.schemas import ClassProbability, MemberPrediction, Prediction, Uncertainty
from service.uncertainty import EnsembleUncertainty, ensemble_uncertainty


@contextmanager
def counted(model: ServedModel) -> Iterator[None]:
    """Count an inference request by model and outcome (its 4xx/5xx status, or 200)."""
    labels = (model.name, str(model.version))
    try:
        yield
    except Exception as exc:
        metrics.MODEL_REQUESTS.labels(*labels, str(getattr(exc, "status_code", 500))).inc()
        raise
    metrics.MODEL_REQUESTS.labels(*labels, "200").inc()


def observe(model: ServedModel, u: EnsembleUncertainty) -> np.ndarray:
    """Record the uncertainty distributions; returns the `uncertain` flags."""
    labels = (model.name, str(model.version))
    flags = u.mutual_information > model.contract.thresholds["mutual_information"]
    for mi, h, d in zip(u.mutual_information, u.predictive_entropy, u.disagreement, strict=True):
        metrics.MUTUAL_INFORMATION.labels(*labels).observe(float(mi))
        metrics.PREDICTIVE_ENTROPY.labels(*labels).observe(float(h))
        metrics.DISAGREEMENT.labels(*labels).observe(float(d))
    for index in u.probabilities.argmax(axis=1):
        metrics.PREDICTIONS.labels(*labels, model.contract.labels[int(index)]).inc()
    # Touched even when 0: the uncertain share (alerts, dashboard) needs the series to exist.
    metrics.UNCERTAIN.labels(*labels).inc(int(flags.sum()))
    return flags


def predictions(
    model: ServedModel,
    logits: np.ndarray,
    top_k: int,
    include_members: bool,
    filenames: list[str | None],
    include_member_probabilities: bool = False,
) -> list[Prediction]:
    """logits [N, M, K] -> one Prediction per image.

    `member_probabilities` is only set when asked for, so that it stays out of the JSON
    answer otherwise (the route serialises with `exclude_unset`).
    """
    names = model.contract.labels
    threshold = model.contract.thresholds["mutual_information"]
    u = ensemble_uncertainty(logits, model.contract.temperature)
    flags = observe(model, u)
    out = []
    for i, filename in enumerate(filenames):
        p = u.probabilities[i]
        order = np.argsort(-p, kind="stable")[: min(top_k, len(names))]
        best = int(order[0])
        members = None
        if include_members:
            members = [
                MemberPrediction(
                    label=names[int(j)],
                    index=int(j),
                    probability=float(pm[j]),
                    kl_to_mean=float(u.kl_to_mean[i, m]),
                )
                for m, pm in enumerate(u.member_probabilities[i])
                for j in [int(pm.argmax())]
            ]
        extra = {}
        if include_member_probabilities:
            extra["member_probabilities"] = u.member_probabilities[i].tolist()
        out.append(
            Prediction(
                filename=filename,
                label=names[best],
                index=best,
                probability=float(p[best]),
                top_k=[
                    ClassProbability(label=names[int(j)], index=int(j), probability=float(p[j]))
                    for j in order
                ],
                uncertainty=Uncertainty(**{name: float(v[i]) for name, v in u.measures().items()}),
                uncertain=bool(flags[i]),
                threshold=threshold,
                members=members,
                **extra,
            )
        )
    return out
