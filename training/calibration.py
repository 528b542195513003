"""Temperature and `uncertain` thresholds, fitted on a training run's own validation split.

Both evaluate (metrics.json) and export (the model's contract, without a metrics.json) use it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.uncertainty import ensemble_uncertainty
from training import metrics
from training.checkpoint import config_from_dict, model_from_checkpoint
from training.conversion import to_onnx_bytes
from training.data import ImageDataset, load_dataset, split_validation
from training.predictor import OnnxPredictor, as_float


def calibrate(val_logits: np.ndarray, val_labels: np.ndarray) -> dict[str, Any]:
    """Temperature fitted on validation data, and the 95th percentiles at that temperature."""
    temperature = metrics.fit_temperature(val_logits, val_labels)
    u = ensemble_uncertainty(val_logits, temperature)
    return {
        "temperature": temperature,
        "thresholds": metrics.percentile_thresholds(u.measures(), 95.0),
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
