"""Evaluation metrics for MIMO ensembles: accuracy, NLL, calibration, OOD detection.

Models emit per-member logits of shape ``[N, M, K]``. The ensemble prediction is the mean of
the members' probabilities, never of their logits, so every ensemble-level quantity here is
built from probabilities (or computed in log space when that is more stable).

Pure numpy apart from the 1-D optimiser used by :func:`fit_temperature`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from scipy.optimize import minimize_scalar

__all__ = [
    "ReliabilityBins",
    "accuracy",
    "brier",
    "ece",
    "ensemble_nll",
    "fit_temperature",
    "log_softmax",
    "ood_metrics",
    "percentile_thresholds",
    "reliability_bins",
    "softmax",
]

# Fixed rather than a parameter so the name of the reported key stays truthful.
_OOD_TPR = 0.95


def log_softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Log-probabilities; shifting by the max keeps ``exp`` from overflowing."""
    x = np.asarray(logits, dtype=np.float64)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Probabilities along ``axis``."""
    return np.exp(log_softmax(logits, axis=axis))


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    peak = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(peak, axis=axis) + np.log(np.sum(np.exp(x - peak), axis=axis))


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")


def _check_probs_labels(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2 or y.shape != (p.shape[0],) or p.shape[0] == 0:
        raise ValueError(f"expected probs [N, K] and labels [N], got {p.shape} and {y.shape}")
    return p, y.astype(np.int64)


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of probabilities ``[N, K]``."""
    p, y = _check_probs_labels(probs, labels)
    return float(np.mean(np.argmax(p, axis=1) == y))


def ensemble_nll(member_logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """NLL of the mean member probability, evaluated in log space.

    ``log mean_m p_m(y) = logsumexp_m log p_m(y) - log M`` avoids the underflow that taking the
    log of an averaged, tiny probability would suffer.
    """
    _check_temperature(temperature)
    z = np.asarray(member_logits, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    if z.ndim != 3 or y.shape != (z.shape[0],) or z.shape[0] == 0:
        raise ValueError(f"expected logits [N, M, K] and labels [N], got {z.shape} and {y.shape}")
    log_p = log_softmax(z / temperature, axis=-1)
    picked = log_p[np.arange(len(y)), :, y]  # [N, M]
    log_mean = _logsumexp(picked, axis=1) - math.log(z.shape[1])
    return float(-np.mean(log_mean))


class ReliabilityBins(NamedTuple):
    """Per-bin statistics for a reliability diagram; empty bins hold NaN accuracy/confidence."""

    edges: np.ndarray  # [n_bins + 1]
    counts: np.ndarray  # [n_bins]
    accuracy: np.ndarray  # [n_bins]
    confidence: np.ndarray  # [n_bins]


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> ReliabilityBins:
    """Bin the top-label confidence into equal-width bins ``(i/n, (i+1)/n]`` (0 goes in bin 0)."""
    p, y = _check_probs_labels(probs, labels)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    confidence = np.max(p, axis=1)
    correct = (np.argmax(p, axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # side="left" on the upper edges makes each bin closed on the right, as specified.
    index = np.clip(np.searchsorted(edges[1:], confidence, side="left"), 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(index, weights=correct, minlength=n_bins) / counts
        conf = np.bincount(index, weights=confidence, minlength=n_bins) / counts
    return ReliabilityBins(edges, counts, acc, conf)


def ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error: ``sum_b (n_b / N) |acc_b - conf_b|`` over non-empty bins."""
    bins = reliability_bins(probs, labels, n_bins)
    filled = bins.counts > 0
    weights = bins.counts[filled] / bins.counts.sum()
    return float(np.sum(weights * np.abs(bins.accuracy[filled] - bins.confidence[filled])))


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Brier score summed over classes and averaged over examples (range [0, 2])."""
    p, y = _check_probs_labels(probs, labels)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their mean rank, which is what makes ties count 1/2."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    return (last - (counts - 1) / 2.0)[inverse]


def _average_precision(scores: np.ndarray, is_pos: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    s, pos = scores[order], is_pos[order]
    # Only the last index of each run of tied scores is a reachable operating point.
    cut = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(pos)[cut]
    precision = tp / (cut + 1)
    recall = tp / pos.sum()
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def ood_metrics(scores_in: np.ndarray, scores_out: np.ndarray) -> dict[str, float]:
    """AUROC, AUPR and FPR at 95% TPR with OOD as the positive class (higher = more OOD)."""
    s_in = np.asarray(scores_in, dtype=np.float64).ravel()
    s_out = np.asarray(scores_out, dtype=np.float64).ravel()
    if s_in.size == 0 or s_out.size == 0:
        raise ValueError("ood_metrics needs at least one in- and one out-of-distribution score")
    if not (np.all(np.isfinite(s_in)) and np.all(np.isfinite(s_out))):
        raise ValueError("ood_metrics scores must be finite")
    scores = np.concatenate([s_in, s_out])
    is_pos = np.r_[np.zeros(s_in.size), np.ones(s_out.size)]

    # Mann–Whitney U from rank sums.
    rank_sum = _average_ranks(scores)[s_in.size :].sum()
    auroc = (rank_sum - s_out.size * (s_out.size + 1) / 2.0) / (s_in.size * s_out.size)

    # Highest threshold that still flags >= 95% of OOD; the epsilon absorbs 0.95*n rounding up.
    k = math.ceil(_OOD_TPR * s_out.size - 1e-9)
    threshold = np.sort(s_out)[::-1][k - 1]
    fpr = float(np.mean(s_in >= threshold))

    return {"auroc": float(auroc), "aupr": _average_precision(scores, is_pos), "fpr_at_95_tpr": fpr}


def fit_temperature(
    member_logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)
) -> float:
    """Temperature minimising :func:`ensemble_nll`, found by a bounded search over log T.

    Searching in log T makes a fixed absolute tolerance a fixed relative tolerance in T.
    """
    lo, hi = bounds
    if not 0 < lo < hi:
        raise ValueError(f"bounds must satisfy 0 < lo < hi, got {bounds}")
    z = np.asarray(member_logits, dtype=np.float64)
    result = minimize_scalar(
        lambda log_t: ensemble_nll(z, labels, math.exp(log_t)),
        bounds=(math.log(lo), math.log(hi)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(math.exp(result.x))


def percentile_thresholds(measures: dict[str, np.ndarray], q: float = 95.0) -> dict[str, float]:
    """The ``q``-th percentile of each uncertainty measure, e.g. on in-distribution validation
    data, so that roughly ``100 - q`` percent of clean inputs get flagged."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be in [0, 100], got {q}")
    return {
        name: float(np.percentile(np.asarray(v, dtype=np.float64), q))
        for name, v in measures.items()
    }


COVERAGES = (0.8, 0.9, 0.95)


def selective_metrics(scores: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
    """How well an uncertainty score (higher = less sure) tells wrong answers from right ones.

    `auroc`: the chance that a wrong answer scores above a right one (misclassification
    detection; ties count half). Answering the least uncertain first, the risk-coverage curve
    gives `aurc` (the mean selective risk: errors over answers kept) and `augrc` (Traub et
    al., 2024: the mean generalised risk, errors kept over all inputs), both lower = better,
    each averaged over the N coverages k/N; and the accuracy of the answers kept at 80, 90 and
    95 % coverage. Tied scores are taken in their input order.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    ok = np.asarray(correct, dtype=bool).ravel()
    if s.size == 0 or s.size != ok.size:
        raise ValueError(
            f"selective_metrics needs as many scores as answers, got {s.size}, {ok.size}"
        )
    if not np.all(np.isfinite(s)):
        raise ValueError("selective_metrics scores must be finite")
    errors = np.cumsum(~ok[np.argsort(s, kind="stable")])  # errors among the k surest
    kept = np.arange(1, s.size + 1)
    out: dict[str, Any] = {
        "auroc": ood_metrics(s[ok], s[~ok])["auroc"] if ok.any() and (~ok).any() else 0.5,
        "aurc": float(np.mean(errors / kept)),
        "augrc": float(np.mean(errors / s.size)),
        "error_rate": float(1.0 - ok.mean()),
    }
    for coverage in COVERAGES:
        k = max(1, math.ceil(coverage * s.size - 1e-9))
        out[f"accuracy_at_{round(coverage * 100)}"] = float(1.0 - errors[k - 1] / k)
    return out


def flagged_shares(scores: dict[str, np.ndarray], thresholds: dict[str, float]) -> dict[str, float]:
    """Per signal with a threshold: the share of images whose score is above it."""
    return {s: float((scores[s] > t).mean()) for s, t in thresholds.items() if s in scores}
