"""The contract's uncertainty measures on hand-made logits whose answers are known."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import fields

import numpy as np
import pytest

from service.uncertainty import (
    MEASURES,
    EnsembleUncertainty,
    disagreement,
    ensemble_uncertainty,
    one_image,
    softmax,
)

LOG2 = math.log(2.0)


def logits_of(*probabilities: list[float]) -> np.ndarray:
    """One image whose heads have exactly these probabilities: logits [1, M, K] = log p."""
    return np.log(np.array([probabilities], dtype=np.float64))


def image_by_image(logits: np.ndarray, temperature: float = 1.0) -> EnsembleUncertainty:
    """ensemble_uncertainty through one_image, the lone image's path, one image at a time."""
    ones = [one_image(image.tolist(), temperature) for image in np.asarray(logits)]
    assert all(one is not None for one in ones)
    batches = [one.batch() for one in ones if one is not None]
    return EnsembleUncertainty(
        **{
            f.name: np.concatenate([getattr(b, f.name) for b in batches])
            for f in fields(batches[0])
        }
    )


Measure = Callable[..., EnsembleUncertainty]


@pytest.fixture(params=[ensemble_uncertainty, image_by_image], ids=["numpy", "one_image"])
def measure(request: pytest.FixtureRequest) -> Measure:
    """Every hand-made case runs through both implementations."""
    return request.param


def test_identical_confident_heads_have_no_epistemic_uncertainty(measure: Measure) -> None:
    u = measure(np.array([[[12.0, 0.0, -3.0]] * 3]))
    assert u.mutual_information[0] == pytest.approx(0.0, abs=1e-12)
    assert u.disagreement[0] == 0.0
    np.testing.assert_allclose(u.kl_to_mean, 0.0, atol=1e-12)
    assert u.variance[0] == pytest.approx(0.0, abs=1e-15)
    # All the uncertainty that remains is aleatoric, and it is small.
    assert u.predictive_entropy[0] == pytest.approx(u.expected_entropy[0], abs=1e-12)
    assert u.predictive_entropy[0] < 1e-3
    assert u.probabilities.argmax() == 0


def test_two_confident_heads_on_different_classes_disagree_completely(measure: Measure) -> None:
    u = measure(np.array([[[50.0, 0.0], [0.0, 50.0]]]))
    np.testing.assert_allclose(u.probabilities, [[0.5, 0.5]], atol=1e-12)
    assert u.predictive_entropy[0] == pytest.approx(LOG2, abs=1e-12)
    assert u.expected_entropy[0] == pytest.approx(0.0, abs=1e-15)
    assert u.mutual_information[0] == pytest.approx(LOG2, abs=1e-12)
    assert u.disagreement[0] == 1.0
    # Each head is log 2 nats from the mean: KL(onehot || uniform) = log 2.
    np.testing.assert_allclose(u.kl_to_mean, [[LOG2, LOG2]], atol=1e-12)


@pytest.mark.parametrize("k", [2, 3, 10])
def test_uniform_heads_are_maximally_but_only_aleatorically_uncertain(
    k: int, measure: Measure
) -> None:
    u = measure(np.zeros((4, 3, k)))
    np.testing.assert_allclose(u.probabilities, 1.0 / k)
    np.testing.assert_allclose(u.predictive_entropy, math.log(k), atol=1e-12)
    np.testing.assert_allclose(u.expected_entropy, math.log(k), atol=1e-12)
    np.testing.assert_allclose(u.mutual_information, 0.0, atol=1e-12)
    np.testing.assert_allclose(u.variance, 0.0, atol=1e-15)


def test_mean_kl_to_mean_equals_mutual_information(measure: Measure) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(64, 4, 7))
    u = measure(logits, temperature=1.3)
    assert u.kl_to_mean.shape == (64, 4)
    np.testing.assert_allclose(u.kl_to_mean.mean(axis=1), u.mutual_information, atol=1e-10)
    # And the decomposition: total = aleatoric + epistemic, every part non-negative.
    np.testing.assert_allclose(
        u.predictive_entropy, u.expected_entropy + u.mutual_information, atol=1e-10
    )
    assert (u.mutual_information >= 0).all() and (u.kl_to_mean >= 0).all()
    assert (u.predictive_entropy <= math.log(7) + 1e-12).all()


def test_variance_by_hand(measure: Measure) -> None:
    # Heads [0.8, 0.2] and [0.4, 0.6]: each class's variance across the two heads is
    # ((0.8 - 0.4) / 2)^2 = 0.04 (population variance), and so is the mean over classes.
    u = measure(logits_of([0.8, 0.2], [0.4, 0.6]))
    np.testing.assert_allclose(u.member_probabilities[0], [[0.8, 0.2], [0.4, 0.6]], atol=1e-12)
    np.testing.assert_allclose(u.probabilities[0], [0.6, 0.4], atol=1e-12)
    assert u.variance[0] == pytest.approx(0.04, abs=1e-12)
    assert u.disagreement[0] == 1.0


def test_disagreement_counts_ordered_pairs(measure: Measure) -> None:
    # Tops (0, 0, 1): of the 6 ordered pairs of distinct heads, 4 differ.
    probs = np.array([[[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]]])
    assert disagreement(probs)[0] == pytest.approx(2 / 3)
    u = measure(np.log(probs))
    assert u.disagreement[0] == pytest.approx(2 / 3)
    # Three different tops out of three heads: every pair differs.
    assert disagreement(np.eye(3)[None])[0] == 1.0


def test_temperature(measure: Measure) -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=4.0, size=(8, 3, 5))
    # A temperature divides the logits.
    hot = measure(logits, temperature=2.5)
    scaled = measure(logits / 2.5)
    for name in MEASURES:
        np.testing.assert_allclose(getattr(hot, name), getattr(scaled, name), atol=1e-12)
    # A very high temperature flattens every head to uniform.
    flat = measure(logits, temperature=1e9)
    np.testing.assert_allclose(flat.member_probabilities, 0.2, atol=1e-8)
    np.testing.assert_allclose(flat.predictive_entropy, math.log(5), atol=1e-8)
    np.testing.assert_allclose(flat.mutual_information, 0.0, atol=1e-8)
    # A low one sharpens: the mean entropy goes down.
    sharp = measure(logits, temperature=0.5)
    assert sharp.expected_entropy.mean() < measure(logits).expected_entropy.mean()


def test_extreme_logits_stay_finite(measure: Measure) -> None:
    u = measure(np.array([[[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]]], dtype=np.float32))
    for name in MEASURES:
        assert np.isfinite(getattr(u, name)).all(), name
    assert u.mutual_information[0] == pytest.approx(LOG2, abs=1e-9)
    np.testing.assert_allclose(softmax(np.array([1e4, 0.0])), [1.0, 0.0])


@pytest.mark.parametrize("m", [2, 3, 4])
@pytest.mark.parametrize("rest", [-800.0, -np.inf])
def test_heads_whose_other_classes_underflow_disagree_by_hand(
    m: int, rest: float, measure: Measure
) -> None:
    # Head h puts its top logit on class h and `rest` on every other: exp(-800) underflows to 0
    # (and a -inf logit, from a float16 head that overflowed, gives exactly 0), so every head is
    # exactly one-hot and the answer is by hand. The mean is uniform over the m classes
    # that are some head's top (and exactly 0 on the rest, where 0 log 0 = 0): H[p] = log m,
    # each H[p_m] = 0, KL(onehot || p) = log m, MI = log m, and every pair of heads differs.
    logits = np.full((1, m, m + 2), rest)  # the last two classes no head picks: a mean of 0
    logits[0, np.arange(m), np.arange(m)] = 0.0
    u = measure(logits)
    for name in (*MEASURES, "kl_to_mean", "probabilities"):
        assert np.isfinite(getattr(u, name)).all(), name
    np.testing.assert_array_equal(u.member_probabilities[0], np.eye(m, m + 2))
    np.testing.assert_allclose(u.probabilities[0], [1.0 / m] * m + [0.0, 0.0], atol=1e-15)
    assert u.predictive_entropy[0] == pytest.approx(math.log(m), abs=1e-12)
    assert u.expected_entropy[0] == 0.0
    assert u.mutual_information[0] == pytest.approx(math.log(m), abs=1e-12)
    np.testing.assert_allclose(u.kl_to_mean, [[math.log(m)] * m], atol=1e-12)
    assert u.disagreement[0] == 1.0
    # Each class's probabilities across heads: one 1 and m - 1 zeros, variance (m - 1) / m^2;
    # the two classes no head picks add 0 to the mean over the m + 2 classes.
    assert u.variance[0] == pytest.approx((m - 1) / m**2 * m / (m + 2), abs=1e-15)


@pytest.mark.parametrize("shape", [(3,), (2, 3), (1, 2, 3, 4)])
def test_bad_shape_raises(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\[batch, M, K\]"):
        ensemble_uncertainty(np.zeros(shape))


def test_a_single_head_works(measure: Measure) -> None:
    logits = np.random.default_rng(2).normal(size=(5, 1, 4))
    u = measure(logits)
    np.testing.assert_allclose(u.mutual_information, 0.0, atol=1e-12)
    np.testing.assert_allclose(u.disagreement, 0.0)
    np.testing.assert_allclose(u.variance, 0.0)
    np.testing.assert_allclose(u.kl_to_mean, 0.0, atol=1e-12)
    np.testing.assert_allclose(u.predictive_entropy, u.expected_entropy, atol=1e-12)
    np.testing.assert_allclose(u.probabilities, softmax(logits[:, 0]), atol=1e-12)


def test_shapes_and_measures(measure: Measure) -> None:
    u = measure(np.zeros((6, 3, 10), dtype=np.float32))
    assert u.probabilities.shape == (6, 10)
    assert u.member_probabilities.shape == (6, 3, 10)
    assert u.kl_to_mean.shape == (6, 3)
    measures = u.measures()
    assert tuple(measures) == MEASURES
    assert all(v.shape == (6,) for v in measures.values())
    np.testing.assert_allclose(u.probabilities.sum(axis=1), 1.0)


@pytest.mark.parametrize("seed", range(4))
def test_one_image_agrees_with_the_batch_to_the_rounding(seed: int) -> None:
    # Random heads, flat to confident, some far below the rest (floored), with and without a
    # temperature: the two paths differ only in the order of their sums.
    rng = np.random.default_rng(seed)
    for _ in range(200):
        m, k = int(rng.integers(1, 6)), int(rng.integers(2, 12))
        logits = (rng.normal(size=(1, m, k)) * rng.choice([0.01, 1.0, 30.0])).astype(np.float32)
        if rng.random() < 0.2:
            logits[0, 0, 0] = -2e4
        temperature = float(rng.choice([1.0, 0.88, 3.0]))
        batch = ensemble_uncertainty(logits, temperature)
        one = one_image(logits[0].tolist(), temperature)
        assert one is not None
        single = one.batch()
        for name in (*MEASURES, "probabilities", "member_probabilities", "kl_to_mean"):
            np.testing.assert_allclose(
                getattr(single, name), getattr(batch, name), rtol=1e-12, atol=1e-15, err_msg=name
            )
        assert one.tops == batch.member_probabilities[0].argmax(axis=-1).tolist()


@pytest.mark.parametrize(
    ("bad", "temperature"),
    [
        ([[0.0, math.nan]], 1.0),
        ([[0.0, math.inf]], 1.0),
        ([[-math.inf, -math.inf], [0.0, 1.0]], 1.0),
        ([[1e38, 0.0], [0.0, 1.0]], 1e-280),  # a logit / temperature overflows to +inf
    ],
)
def test_one_image_leaves_nan_inf_and_headless_logits_to_numpy(
    bad: list[list[float]], temperature: float
) -> None:
    # ensemble_uncertainty answers these with NaNs; one_image declines rather than differ.
    assert one_image(bad, temperature) is None
