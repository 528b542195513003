"""Metrics checked on inputs whose answers are known by hand, and against sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from training.metrics import (
    accuracy,
    brier,
    ece,
    ensemble_nll,
    fit_temperature,
    flagged_shares,
    log_softmax,
    ood_metrics,
    percentile_thresholds,
    reliability_bins,
    selective_metrics,
    softmax,
)


def _two_class(confidences: list[float], correct: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """Binary probabilities predicting class 0 at each confidence; labels per ``correct``."""
    conf = np.asarray(confidences)
    probs = np.stack([conf, 1.0 - conf], axis=1)
    labels = np.where(np.asarray(correct), 0, 1)
    return probs, labels


def test_softmax_is_stable_and_normalised() -> None:
    logits = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1000.0, -1000.0]])
    p = softmax(logits)
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(axis=-1), 1.0)
    np.testing.assert_allclose(p[1], 1.0 / 3.0)
    np.testing.assert_allclose(np.exp(log_softmax(logits)), p)


def test_accuracy() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    assert accuracy(probs, np.array([0, 1, 1, 0])) == 0.5


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_ensemble_nll_matches_nll_of_mean_probability(temperature: float) -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=4.0, size=(50, 3, 10))
    labels = rng.integers(0, 10, size=50)
    mean_probs = softmax(logits / temperature).mean(axis=1)
    expected = -np.mean(np.log(mean_probs[np.arange(50), labels]))
    assert ensemble_nll(logits, labels, temperature) == pytest.approx(expected, rel=1e-10)


def test_ensemble_nll_refuses_a_non_positive_temperature() -> None:
    logits = np.zeros((2, 3, 4))
    for temperature in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature must be positive"):
            ensemble_nll(logits, np.array([0, 1]), temperature)


def test_ensemble_nll_survives_underflowing_probabilities() -> None:
    # Each member gives the label a probability of ~e^-2000, which underflows to 0 in float64.
    logits = np.array([[[0.0, 2000.0], [0.0, 2000.0]]])
    assert ensemble_nll(logits, np.array([0])) == pytest.approx(2000.0)


def test_ece_is_zero_when_perfectly_calibrated() -> None:
    # Bin of 0.8: 4 of 5 right; bin of 0.6: 3 of 5 right.
    probs, labels = _two_class(
        [0.8] * 5 + [0.6] * 5, [True] * 4 + [False] + [True] * 3 + [False] * 2
    )
    assert ece(probs, labels) == pytest.approx(0.0, abs=1e-12)


def test_ece_hand_computed() -> None:
    # Half the data at 0.9 all right (gap 0.1), half at 0.7 half right (gap 0.2).
    probs, labels = _two_class([0.9] * 4 + [0.7] * 4, [True] * 4 + [True, True, False, False])
    assert ece(probs, labels) == pytest.approx(0.5 * 0.1 + 0.5 * 0.2)


def test_reliability_bins_edges_are_closed_on_the_right() -> None:
    probs = np.array([[0.5, 0.5], [1.0, 0.0], [0.75, 0.25]])
    bins = reliability_bins(probs, np.array([0, 0, 1]), n_bins=2)
    np.testing.assert_allclose(bins.edges, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(bins.counts, [1, 2])  # 0.5 in the first bin, 1.0 in the last
    np.testing.assert_allclose(bins.accuracy, [1.0, 0.5])
    np.testing.assert_allclose(bins.confidence, [0.5, 0.875])


def test_reliability_bins_empty_bins_are_nan() -> None:
    probs, labels = _two_class([0.95, 0.95], [True, True])
    bins = reliability_bins(probs, labels)
    assert bins.counts.sum() == 2
    assert np.isnan(bins.accuracy[bins.counts == 0]).all()


def test_brier_hand_values() -> None:
    k = 4
    onehot = np.eye(k)
    assert brier(onehot, np.arange(k)) == 0.0
    assert brier(np.full((3, k), 1.0 / k), np.array([0, 1, 2])) == pytest.approx((k - 1) / k)
    assert brier(onehot, np.array([1, 2, 3, 0])) == pytest.approx(2.0)


def test_ood_metrics_separation_extremes() -> None:
    inside, outside = np.array([0.1, 0.2, 0.3]), np.array([0.7, 0.8, 0.9, 1.0])
    perfect = ood_metrics(inside, outside)
    assert perfect == {"auroc": 1.0, "aupr": 1.0, "fpr_at_95_tpr": 0.0}
    assert ood_metrics(outside, inside)["auroc"] == 0.0
    assert ood_metrics(outside, inside)["fpr_at_95_tpr"] == 1.0
    same = ood_metrics(np.full(5, 0.3), np.full(4, 0.3))
    assert same["auroc"] == 0.5
    assert same["aupr"] == pytest.approx(4 / 9)  # one operating point: precision = prevalence


def test_fpr_at_95_tpr_hand_case() -> None:
    # 20 OOD scores 1..20: catching 19 of them needs threshold 2; in-scores >= 2 are 2 and 3.
    outside = np.arange(1.0, 21.0)
    inside = np.array([0.0, 1.0, 2.0, 3.0])
    assert ood_metrics(inside, outside)["fpr_at_95_tpr"] == 0.5


def test_ood_metrics_match_sklearn_with_ties() -> None:
    rng = np.random.default_rng(2)
    inside = np.round(rng.normal(0.0, 1.0, 300), 1)
    outside = np.round(rng.normal(0.8, 1.0, 200), 1)
    scores = np.r_[inside, outside]
    truth = np.r_[np.zeros(300), np.ones(200)]
    got = ood_metrics(inside, outside)
    assert got["auroc"] == pytest.approx(roc_auc_score(truth, scores), rel=1e-12)
    assert got["aupr"] == pytest.approx(average_precision_score(truth, scores), rel=1e-12)


def test_fit_temperature_recovers_the_generating_temperature() -> None:
    rng = np.random.default_rng(3)
    n, k = 20000, 10
    true_logits = rng.normal(scale=2.0, size=(n, k))
    cdf = np.cumsum(softmax(true_logits), axis=1)
    labels = np.minimum((rng.random((n, 1)) > cdf).sum(axis=1), k - 1)
    # Identical members make the ensemble mean exactly softmax(true_logits) at T = 2.
    member_logits = np.repeat((2.0 * true_logits)[:, None, :], 2, axis=1)
    t = fit_temperature(member_logits, labels)
    assert t == pytest.approx(2.0, rel=0.05)
    assert fit_temperature(member_logits, labels) == t
    best = ensemble_nll(member_logits, labels, t)
    for nudge in (1.0 - 1e-3, 1.0 + 1e-3):
        assert ensemble_nll(member_logits, labels, t * nudge) >= best


def test_percentile_thresholds() -> None:
    measures = {"entropy": np.arange(101.0), "variance": np.zeros(10)}
    assert percentile_thresholds(measures) == {"entropy": 95.0, "variance": 0.0}
    assert percentile_thresholds(measures, q=50.0)["entropy"] == 50.0


def test_shape_errors() -> None:
    with pytest.raises(ValueError):
        accuracy(np.ones((3, 2)) / 2, np.array([0, 1]))
    with pytest.raises(ValueError):
        ensemble_nll(np.zeros((3, 2)), np.array([0, 1, 0]))
    with pytest.raises(ValueError):
        ood_metrics(np.array([]), np.array([1.0]))


def test_selective_metrics_hand_computed() -> None:
    # ranked by score: right, right, wrong, right
    found = selective_metrics(np.array([0.1, 0.2, 0.3, 0.4]), np.array([1, 1, 0, 1]))
    assert found["auroc"] == pytest.approx(2 / 3)  # the wrong one outscores 2 of 3 right ones
    assert found["aurc"] == pytest.approx((0 + 0 + 1 / 3 + 1 / 4) / 4)  # errors / kept
    assert found["augrc"] == pytest.approx((0 + 0 + 1 / 4 + 1 / 4) / 4)  # errors kept / all
    assert found["error_rate"] == pytest.approx(0.25)
    # 80, 90 and 95 % of 4 answers keep all 4 (ceil)
    assert found["accuracy_at_80"] == found["accuracy_at_95"] == pytest.approx(0.75)


def test_selective_metrics_perfect_and_error_free() -> None:
    perfect = selective_metrics(np.array([0.9, 0.1, 0.2]), np.array([0, 1, 1]))
    assert perfect["auroc"] == 1.0
    assert perfect["aurc"] == pytest.approx((0 + 0 + 1 / 3) / 3)
    right = selective_metrics(np.arange(10.0), np.ones(10, bool))
    assert right["auroc"] == 0.5 and right["aurc"] == right["augrc"] == 0.0
    assert right["accuracy_at_90"] == 1.0
    with pytest.raises(ValueError, match="as many scores as answers"):
        selective_metrics(np.zeros(3), np.ones(2, bool))


def test_flagged_shares_counts_scores_strictly_above_each_threshold() -> None:
    scores = {"a": np.array([0.1, 0.5, 0.9, 0.5]), "b": np.array([1.0, 2.0, 3.0, 4.0])}
    shares = flagged_shares(scores, {"a": 0.5, "b": 0.0, "absent": 1.0})
    assert shares == {"a": 0.25, "b": 1.0}  # 0.5 is not above 0.5; no score, no share
