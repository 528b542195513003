"""Shared fixtures: one tiny real MIMO model per test session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

# The service listens for gRPC on 8001 by default: the apps the tests build in-process stay
# off that port (the gRPC tests pick a free one).
os.environ["MIMO_GRPC_PORT"] = "0"

# The tests import their shared helpers from support.py beside this file (and the deployment
# tests from tests/deploy/deploy_support.py, whose conftest adds that folder); with pytest's
# --import-mode=importlib nothing else puts this folder on the path.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.pt of an M=3 MIMO CNN trained for a few seconds on the sklearn digits.

    One thread: on a small CPU shared with other work it is faster than two, and it leaves
    the other cores alone.
    """
    from training.config import PRESETS, with_overrides
    from training.train import train

    out = tmp_path_factory.mktemp("digits-run")
    config = with_overrides(
        PRESETS["digits"], {"epochs": 6, "lr": 1e-2, "threads": 1, "out_dir": str(out)}
    )
    return train(config)


@pytest.fixture(scope="session")
def model_repository(digits_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<repo>/digits/1/model.onnx: M=3, 8x8 grayscale, 10 classes, contract metadata."""
    from training.export import export

    repo = tmp_path_factory.mktemp("models")
    export(digits_checkpoint, repo, "digits", 1)
    return repo


@pytest.fixture(scope="session")
def precision_repository(digits_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<repo>/digits/{1,2,3}/model.onnx: the digits model exported as fp32, int8 and fp16."""
    from training.calibration import calibrate_checkpoint
    from training.checkpoint import load_checkpoint
    from training.export import export

    repo = tmp_path_factory.mktemp("precisions")
    evaluation = calibrate_checkpoint(load_checkpoint(digits_checkpoint))
    for version, precision in enumerate(("fp32", "int8", "fp16"), start=1):
        export(digits_checkpoint, repo, "digits", version, evaluation, precision=precision)
    return repo


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """20 real sklearn digits of the test split: uint8 [20, 1, 8, 8] and their labels."""
    from training.data import load_dataset

    ds = load_dataset("digits", "test")
    return ds.images[:20], ds.labels[:20]
