"""Temperature and `uncertain` thresholds, fitted on a training run's own validation split.

Both evaluate (metrics.json) and export (the model's contract, without a metrics.json) use it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.uncertainty import EnsembleUncertainty, ensemble_uncertainty
from training import metrics
from training.checkpoint import config_from_dict, model_from_checkpoint
from training.conversion import to_onnx_bytes
from training.data import ImageDataset, load_dataset, split_validation
from training.predictor import OnnxPredictor, as_float


def uncertainty_scores(logits: np.ndarray, temperature: float) -> dict[str, np.ndarray]:
    """Every signal a model offers, higher = less sure: the contract's measures that rank
    images (a single network's mutual information is 0) and 1 - max probability."""
    return _scores(ensemble_uncertainty(logits, temperature))


def scored(
    logits: np.ndarray, labels: np.ndarray, temperature: float
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every signal (`uncertainty_scores`) and which answers are right, at `temperature`."""
    u = ensemble_uncertainty(logits, temperature)
    return _scores(u), u.probabilities.argmax(axis=1) == labels


def _scores(u: EnsembleUncertainty) -> dict[str, np.ndarray]:
    return {
        "mutual_information": u.mutual_information,
        "predictive_entropy": u.predictive_entropy,
        "expected_entropy": u.expected_entropy,
        "max_probability": 1.0 - u.probabilities.max(axis=1),
    }


def calibrate(val_logits: np.ndarray, val_labels: np.ndarray) -> dict[str, Any]:
    """Temperature fitted on validation data, and the 95th percentiles at that temperature:
    of the contract's measures (`thresholds`, the served flag's) and of every signal
    (`score_thresholds`: each flags 5 % of validation images)."""
    temperature = metrics.fit_temperature(val_logits, val_labels)
    u = ensemble_uncertainty(val_logits, temperature)
    return {
        "temperature": temperature,
        "thresholds": metrics.percentile_thresholds(u.measures(), 95.0),
        "score_thresholds": metrics.percentile_thresholds(
            uncertainty_scores(val_logits, temperature), 95.0
        ),
    }


def validation_split(checkpoint: dict[str, Any]) -> ImageDataset:
    """The validation split the training run held out (same dataset, size and seed)."""
    config = config_from_dict(checkpoint["config"])
    full = load_dataset(config.dataset, "train", config.data_dir, config.image_size, config.color)
    return split_validation(full, config.val_size, seed=config.split_seed)[1]


def calibrate_checkpoint(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """Temperature and thresholds of one checkpoint on its own validation split."""
    predictor = OnnxPredictor.from_bytes([to_onnx_bytes(model_from_checkpoint(checkpoint))])
    val = validation_split(checkpoint)
    return calibrate(predictor(as_float(val.images)), val.labels)
