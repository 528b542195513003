"""Ensemble uncertainty from the M heads' logits: the measures of the model contract.

Pure numpy and batched over the leading axis, so the service, the evaluation and the tests all
share one definition; `one_image` is the same steps in plain Python for a lone image, tested
to agree with it. With p_m = softmax(logits_m / T) and p = mean_m p_m:

- predictive entropy H[p] (total), expected entropy mean_m H[p_m] (aleatoric),
- mutual information H[p] - mean_m H[p_m] (epistemic: the heads' disagreement),
- per-head KL(p_m || p), whose mean over heads equals the mutual information,
- disagreement: the fraction of head pairs whose top classes differ,
- variance: the mean over classes of the variance of p_m across heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# log(0) appears for probabilities that underflow; 0 * log 0 is 0 by convention.
_TINY = np.finfo(np.float64).tiny
# exp() of a shifted logit below about -745 is already 0 in float64, so flooring there changes no
# probability; it keeps a -inf logit (a float16 head that overflowed) from making 0 * -inf = nan
# in the log-probabilities that the entropies and the KL reuse.
_FLOOR = -1e4
_LOG_TINY = float(np.log(_TINY))

MEASURES = (
    "predictive_entropy",
    "expected_entropy",
    "mutual_information",
    "disagreement",
    "variance",
)


@lru_cache(maxsize=64)
def _ones(k: int) -> np.ndarray:
    # [N, K] @ ones sums N rows in one BLAS call, where a reduction over a short last axis pays
    # per row: the difference shows from a batch of a few images on.
    ones = np.ones((k, 1))
    ones.flags.writeable = False
    return ones


def _shifted(logits: np.ndarray, temperature: float) -> np.ndarray:
    """float64 logits / temperature less their maximum over the last axis, in a new array."""
    z = logits
    if temperature != 1.0:  # dividing by 1 is exact: skipping it changes no digit
        z = np.divide(z, temperature, dtype=np.float64)
    # The maximum of float32 logits is exact, so the cast can wait for the subtraction.
    return np.subtract(z, z.max(axis=-1, keepdims=True), dtype=np.float64)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax over the last axis, in float64 so that entropies of confident heads keep digits."""
    e = _shifted(np.asarray(logits), temperature)
    np.exp(e, out=e)
    e /= e.sum(axis=-1, keepdims=True)
    return e


def _differ(top: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """[B, M] top classes -> [B, M, M] flags: do heads i and j disagree."""
    return np.not_equal(top[:, :, None], top[:, None, :], out=out, casting="unsafe")


def _disagreement(top: np.ndarray) -> np.ndarray:
    m = top.shape[1]
    if m < 2:
        return np.zeros(top.shape[0])
    return _differ(top).sum(axis=(1, 2)) / (m * (m - 1))


def disagreement(member_probs: np.ndarray) -> np.ndarray:
    """Fraction of head pairs whose arg-max classes differ; [B, M, K] -> [B]."""
    return _disagreement(member_probs.argmax(axis=-1))


@lru_cache(maxsize=64)
def _mean_weights(m: int) -> np.ndarray:
    # [1, M] @ [B, M, K]: the mean over heads in one call, its head axis kept for the broadcasts.
    w = np.full((1, m), 1.0 / m)
    w.flags.writeable = False
    return w


@lru_cache(maxsize=64)
def _head_weights(m: int, k: int, slabs: int) -> np.ndarray:
    # Per-head sums [slabs, B, M] @ these -> per image: the mean KL, the mean entropy (the sums
    # hold p log p, hence the sign), the mean over classes of the variance across heads and the
    # count of differing head pairs (left a count: dividing it by the pairs is exact).
    w = np.empty((4, m, 1))
    w[0], w[1], w[2], w[3] = 1.0 / m, -1.0 / m, 1.0 / (m * k), 1.0
    w = w[:slabs]
    w.flags.writeable = False
    return w


@dataclass(frozen=True)
class EnsembleUncertainty:
    """Every measure of the contract for a batch; arrays lead with the batch axis."""

    probabilities: np.ndarray  # [B, K] ensemble mean of probabilities
    member_probabilities: np.ndarray  # [B, M, K]
    predictive_entropy: np.ndarray  # [B]
    expected_entropy: np.ndarray  # [B]
    mutual_information: np.ndarray  # [B]
    kl_to_mean: np.ndarray  # [B, M]
    disagreement: np.ndarray  # [B]
    variance: np.ndarray  # [B]

    def measures(self) -> dict[str, np.ndarray]:
        """The scalar-per-image measures, by contract name."""
        return {name: getattr(self, name) for name in MEASURES}


def ensemble_uncertainty(logits: np.ndarray, temperature: float = 1.0) -> EnsembleUncertainty:
    """All contract measures from per-head logits [B, M, K]."""
    # A server batch is 1..32 images, where the cost is the number of numpy calls rather than
    # the arithmetic: the log-softmax is computed once and reused (no log of a clipped p), and
    # the measures are laid side by side in one buffer so that one matmul sums them per head
    # and a second averages them per image.
    logits = np.asarray(logits)
    if logits.ndim != 3:
        raise ValueError(f"expected logits of shape [batch, M, K], got {logits.shape}")
    b, m, k = logits.shape
    z = _shifted(logits, temperature)
    np.maximum(z, _FLOOR, out=z)
    member = np.exp(z)
    total = (member.reshape(-1, k) @ _ones(k)).reshape(b, m, 1)
    member /= total
    np.log(total, out=total)
    z -= total  # log p_m, exact even where p_m underflows
    mean = _mean_weights(m) @ member  # [B, 1, K]
    # The mean underflows to 0 only where every head does; flooring at tiny keeps 0 log 0 = 0.
    log_mean = np.maximum(mean, _TINY)
    np.log(log_mean, out=log_mean)
    top = member.argmax(axis=-1)  # [B, M]
    # The pair flags of a head [M] ride in a row [K] of the buffer when they fit (zero-padded).
    shared = 2 <= m <= k
    terms = np.zeros((4, b, m, k)) if shared else np.empty((3, b, m, k))
    np.subtract(z, log_mean, out=terms[0])
    terms[0] *= member
    np.multiply(z, member, out=terms[1])
    spread = terms[2]
    np.subtract(member, mean, out=spread)
    spread *= spread
    if shared:
        _differ(top, out=terms[3][..., :m])
    per_head = (terms.reshape(-1, k) @ _ones(k)).reshape(len(terms), b, m)
    kl = per_head[0]
    # Rounding can leave an exact 0 slightly negative; the mean of the clipped KLs is then the
    # mutual information, non-negative without a second clip.
    np.maximum(kl, 0.0, out=kl)
    per_image = (per_head @ _head_weights(m, k, len(terms)))[..., 0]  # [slabs, B]
    aleatoric, mutual = per_image[1], per_image[0]
    # H[p] = mean_m H[p_m] + mean_m KL(p_m || p): no third entropy pass over the mean.
    return EnsembleUncertainty(
        probabilities=mean[:, 0],
        member_probabilities=member,
        predictive_entropy=aleatoric + mutual,
        expected_entropy=aleatoric,
        mutual_information=mutual,
        kl_to_mean=kl,
        disagreement=per_image[3] / (m * (m - 1)) if shared else _disagreement(top),
        variance=per_image[2],
    )


@dataclass(frozen=True)
class OneImage:
    """The measures of one image as Python numbers: `ensemble_uncertainty` of a batch of one,
    computed by `one_image`."""

    probabilities: list[float]  # [K]
    member_probabilities: list[list[float]]  # [M][K]
    tops: list[int]  # [M] each head's top class
    predictive_entropy: float
    expected_entropy: float
    mutual_information: float
    kl_to_mean: list[float]  # [M]
    disagreement: float
    variance: float

    def batch(self) -> EnsembleUncertainty:
        """As numpy arrays, a batch of one (what ensemble_uncertainty returns)."""
        return EnsembleUncertainty(
            probabilities=np.array([self.probabilities]),
            member_probabilities=np.array([self.member_probabilities]),
            predictive_entropy=np.array([self.predictive_entropy]),
            expected_entropy=np.array([self.expected_entropy]),
            mutual_information=np.array([self.mutual_information]),
            kl_to_mean=np.array([self.kl_to_mean]),
            disagreement=np.array([self.disagreement]),
            variance=np.array([self.variance]),
        )


def one_image(logits: list[list[float]], temperature: float = 1.0) -> OneImage | None:
    """`ensemble_uncertainty` of one image's per-head logits [M][K] (Python floats), the same
    steps in the same order, in plain Python: a lone image's answer is served on the event
    loop right after its forward pass, where the caches are cold and each of that function's
    ~25 numpy calls on [1, M, K] costs ~4 us; this costs a third. The results agree to the
    rounding of the sums (tests/service/test_uncertainty.py), so classes whose mean
    probabilities tie exactly (heads that are permutations of each other) may rank in either
    order, as they may between batches of different sizes. None for a NaN or +inf logit, or a
    head without a finite one: leave those to ensemble_uncertainty (its NaN answers)."""
    if not sum(map(sum, logits)) < math.inf:  # (NaN or +inf somewhere)
        return None
    m, k = len(logits), len(logits[0])
    exp, log = math.exp, math.log
    member: list[list[float]] = []
    log_member: list[list[float]] = []
    for z in logits:
        if temperature != 1.0:
            z = [v / temperature for v in z]
        top = max(z)
        if not -math.inf < top < math.inf:  # (all -inf, or +inf from a tiny temperature)
            return None
        if min(z) - top > _FLOOR:
            shifted = [v - top for v in z]
        else:
            shifted = [v - top if v - top > _FLOOR else _FLOOR for v in z]
        e = list(map(exp, shifted))
        total = sum(e)
        member.append([v / total for v in e])
        log_total = log(total)
        log_member.append([v - log_total for v in shifted])
    w = 1.0 / m
    mean = [sum(column) * w for column in zip(*member, strict=True)]
    log_mean = [log(v) if v > _TINY else _LOG_TINY for v in mean]
    kl, negative_entropy, spread = [], [], []
    for p, lp in zip(member, log_member, strict=True):
        kl.append(max(sum([a * (b - c) for a, b, c in zip(p, lp, log_mean, strict=True)]), 0.0))
        negative_entropy.append(sum(map(float.__mul__, p, lp)))
        spread.append(sum([(a - b) * (a - b) for a, b in zip(p, mean, strict=True)]))
    tops = [p.index(max(p)) for p in member]
    mutual = sum(kl) * w
    aleatoric = -sum(negative_entropy) * w
    differ = sum([a != b for a in tops for b in tops])
    return OneImage(
        probabilities=mean,
        member_probabilities=member,
        tops=tops,
        predictive_entropy=aleatoric + mutual,
        expected_entropy=aleatoric,
        mutual_information=mutual,
        kl_to_mean=kl,
        disagreement=differ / (m * (m - 1)) if m > 1 else 0.0,
        variance=sum(spread) / (m * k),
    )
