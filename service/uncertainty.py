"""Ensemble uncertainty from the M heads' logits: the measures of the model contract.

Pure numpy and batched over the leading axis, so the service, the evaluation and the tests all
share one definition. With p_m = softmax(logits_m / T) and p = mean_m p_m:

- predictive entropy H[p] (total), expected entropy mean_m H[p_m] (aleatoric),
- mutual information H[p] - mean_m H[p_m] (epistemic: the heads' disagreement),
- per-head KL(p_m || p), whose mean over heads equals the mutual information,
- disagreement: the fraction of head pairs whose top classes differ,
- variance: the mean over classes of the variance of p_m across heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# log(0) appears for probabilities that underflow; 0 * log 0 is 0 by convention.
_TINY = np.finfo(np.float64).tiny

MEASURES = (
    "predictive_entropy",
    "expected_entropy",
    "mutual_information",
    "disagreement",
    "variance",
)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax over the last axis, in float64 so that entropies of confident heads keep digits."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def entropy(p: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats over the last axis."""
    return -(p * np.log(np.maximum(p, _TINY))).sum(axis=-1)


def disagreement(member_probs: np.ndarray) -> np.ndarray:
    """Fraction of head pairs whose arg-max classes differ; [B, M, K] -> [B]."""
    top = member_probs.argmax(axis=-1)  # [B, M]
    m = top.shape[1]
    if m < 2:
        return np.zeros(top.shape[0])
    differ = top[:, :, None] != top[:, None, :]  # [B, M, M]
    return differ.sum(axis=(1, 2)) / (m * (m - 1))


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
    logits = np.asarray(logits)
    if logits.ndim != 3:
        raise ValueError(f"expected logits of shape [batch, M, K], got {logits.shape}")
    member = softmax(logits, temperature)  # [B, M, K]
    mean = member.mean(axis=1)  # [B, K]
    total = entropy(mean)
    aleatoric = entropy(member).mean(axis=1)
    log_ratio = np.log(np.maximum(member, _TINY)) - np.log(np.maximum(mean, _TINY))[:, None, :]
    kl = np.maximum((member * log_ratio).sum(axis=-1), 0.0)  # [B, M]
    return EnsembleUncertainty(
        probabilities=mean,
        member_probabilities=member,
        predictive_entropy=total,
        expected_entropy=aleatoric,
        mutual_information=np.maximum(total - aleatoric, 0.0),
        kl_to_mean=kl,
        disagreement=disagreement(member),
        variance=member.var(axis=1).mean(axis=-1),
    )
