"""Checkpoint -> models/<name>/<version>/model.onnx: contract metadata, parity, atomic writes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

import training.export_checks
import training.files
from service.contract import REQUIRED_KEYS, ModelContract, parse_contract
from service.uncertainty import MEASURES
from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.data import load_dataset
from training.export import export
from training.export_checks import ExportError

ROOT = Path(__file__).resolve().parents[2]
# Given explicitly, it spares the export the calibration on the validation split.
EVALUATION = {
    "dataset": "digits",
    "temperature": 1.7,
    "thresholds": {"mutual_information": 0.123, "predictive_entropy": 0.45},
    "clean": {"accuracy": 0.9, "nll": 0.3},
}


def session_of(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def read_contract(path: Path) -> tuple[ModelContract, dict[str, str]]:
    session = session_of(path)
    metadata = session.get_modelmeta().custom_metadata_map
    contract = parse_contract(metadata, session.get_inputs(), session.get_outputs(), str(path))
    return contract, metadata


def files_in(repository: Path) -> list[str]:
    """Every file (hidden ones included) below the repository, relative to it."""
    if not repository.exists():
        return []
    return sorted(str(p.relative_to(repository)) for p in repository.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def exported(digits_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default export: temperature and thresholds fitted on the validation split."""
    repository = tmp_path_factory.mktemp("repository")
    return export(digits_checkpoint, repository, "digits", 1)


@pytest.fixture(scope="module")
def checkpoint(digits_checkpoint: Path) -> dict[str, Any]:
    return load_checkpoint(digits_checkpoint)


def test_export_writes_the_repository_layout(exported: Path) -> None:
    repository = exported.parents[2]
    assert exported == repository / "digits" / "1" / "model.onnx"
    assert files_in(repository) == ["digits/1/model.onnx"]  # no temporary file left beside
    # Readable by a service running as another user, like any ordinary file.
    assert exported.stat().st_mode & stat.S_IROTH


def test_metadata_read_back_through_onnx_runtime(
    exported: Path, checkpoint: dict[str, Any]
) -> None:
    contract, metadata = read_contract(exported)
    assert set(REQUIRED_KEYS) <= set(metadata)
    assert metadata["mimo.format"] == "1"
    assert contract.ensemble_size == checkpoint["config"]["ensemble_size"] == 3
    assert contract.labels == tuple(str(d) for d in range(10))
    assert contract.input_shape == (1, 8, 8)
    assert contract.preprocess == {
        "color": "L",
        "resize": [8, 8],
        "resample": "bilinear",
        "invert": False,
    }
    assert 0.05 <= contract.temperature <= 20.0
    assert contract.temperature != 1.0  # fitted, not the default
    assert set(contract.thresholds) == set(MEASURES)
    assert contract.thresholds["mutual_information"] >= 0.0
    training = contract.training
    assert training["dataset"] == "digits"
    assert training["architecture"] == "cnn"
    assert training["ensemble_size"] == 3
    assert training["epochs"] == checkpoint["epoch"] + 1
    assert training["seed"] == checkpoint["config"]["seed"]
    assert training["batch_repetition"] == checkpoint["config"]["batch_repetition"]
    assert isinstance(training["code_version"], str) and training["code_version"]
    # Without an evaluation file, the evaluation carries the calibration it was fitted with.
    assert contract.evaluation["temperature"] == pytest.approx(contract.temperature)
    assert json.loads(metadata["mimo.evaluation"]) == contract.evaluation
    assert json.loads(metadata["mimo.training"]) == training


def test_onnx_runtime_matches_torch_on_real_digits(
    exported: Path, checkpoint: dict[str, Any]
) -> None:
    test = load_dataset("digits", "test")
    x = test.images.astype(np.float32) / 255.0
    tiled = np.repeat(x[:, None], 3, axis=1)  # one image in all M slots
    model = model_from_checkpoint(checkpoint)
    with torch.no_grad():
        expected = model(torch.from_numpy(tiled)).numpy()
    got = session_of(exported).run(["logits"], {"images": tiled})[0]
    assert got.shape == (len(test), 3, 10) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-4
    # The heads are a real classifier, not noise.
    accuracy = (got.mean(axis=1).argmax(axis=1) == test.labels).mean()
    assert accuracy > 0.5
    # Different images in the slots: each head answers its own slot.
    mixed = np.stack([x[:20], x[20:40], x[40:60]], axis=1)
    with torch.no_grad():
        expected = model(torch.from_numpy(mixed)).numpy()
    got = session_of(exported).run(["logits"], {"images": mixed})[0]
    assert np.abs(got - expected).max() <= 1e-4


def test_existing_version_needs_force(digits_checkpoint: Path, tmp_path: Path) -> None:
    target = export(digits_checkpoint, tmp_path, "digits", 2, EVALUATION)
    before = target.read_bytes()
    with pytest.raises(ExportError, match=r"exists.*--force"):
        export(digits_checkpoint, tmp_path, "digits", 2, {**EVALUATION, "temperature": 3.0})
    assert target.read_bytes() == before
    assert read_contract(target)[0].temperature == 1.7

    hotter = {**EVALUATION, "temperature": 3.0}
    assert export(digits_checkpoint, tmp_path, "digits", 2, hotter, force=True) == target
    assert read_contract(target)[0].temperature == 3.0
    assert files_in(tmp_path) == ["digits/2/model.onnx"]


@pytest.mark.parametrize("tolerance", [0.0, -1.0])
def test_failed_parity_leaves_nothing(
    digits_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tolerance: float
) -> None:
    monkeypatch.setattr(training.export_checks, "PARITY_TOLERANCE", tolerance)
    repository = tmp_path / "models"
    with pytest.raises(ExportError, match="ONNX Runtime and torch differ"):
        export(digits_checkpoint, repository, "digits", 1, EVALUATION)
    assert files_in(repository) == []


def test_failed_forced_export_keeps_the_old_model(
    digits_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = export(digits_checkpoint, tmp_path, "digits", 1, EVALUATION)
    before = target.read_bytes()
    monkeypatch.setattr(training.export_checks, "PARITY_TOLERANCE", -1.0)
    with pytest.raises(ExportError):
        export(digits_checkpoint, tmp_path, "digits", 1, EVALUATION, force=True)
    assert target.read_bytes() == before
    assert files_in(tmp_path) == ["digits/1/model.onnx"]


def test_failed_write_leaves_no_temporary_file(
    digits_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(training.files.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        export(digits_checkpoint, tmp_path, "digits", 1, EVALUATION)
    assert files_in(tmp_path) == []


def test_contract_violation_is_not_written(digits_checkpoint: Path, tmp_path: Path) -> None:
    evaluation = {**EVALUATION, "thresholds": {"predictive_entropy": 0.4}}
    with pytest.raises(ValueError, match="mutual_information"):
        export(digits_checkpoint, tmp_path, "digits", 1, evaluation)
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("name", ["", "Digits", "-digits", ".digits", "a/b", "../up", "dig its"])
def test_bad_name(digits_checkpoint: Path, tmp_path: Path, name: str) -> None:
    with pytest.raises(ExportError, match="model name"):
        export(digits_checkpoint, tmp_path, name, 1, EVALUATION)
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("version", [0, -1])
def test_bad_version(digits_checkpoint: Path, tmp_path: Path, version: int) -> None:
    with pytest.raises(ExportError, match="positive integer"):
        export(digits_checkpoint, tmp_path, "digits", version, EVALUATION)
    assert files_in(tmp_path) == []


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        export(tmp_path / "nope.pt", tmp_path / "models", "digits", 1, EVALUATION)
    assert files_in(tmp_path / "models") == []


def test_cli_with_an_evaluation_file(digits_checkpoint: Path, tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps(EVALUATION))
    repository = tmp_path / "models"
    command = [
        sys.executable,
        "-m",
        "training",
        "export",
        "--checkpoint",
        str(digits_checkpoint),
        "--evaluation",
        str(metrics),
        "--repository",
        str(repository),
        "--name",
        "digits",
        "--version",
        "3",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    target = repository / "digits" / "3" / "model.onnx"
    assert f"wrote {target}" in done.stdout
    contract, _ = read_contract(target)
    assert contract.temperature == 1.7
    assert contract.thresholds == EVALUATION["thresholds"]
    assert contract.evaluation == {
        "dataset": "digits",
        "temperature": 1.7,
        "clean": {"accuracy": 0.9, "nll": 0.3},
    }
    assert files_in(repository) == ["digits/3/model.onnx"]


def test_the_flag_measure_is_chosen_by_evidence_or_named(
    digits_checkpoint: Path, tmp_path: Path
) -> None:
    auto = export(digits_checkpoint, tmp_path, "digits", 1, uncertain_measure="auto")
    contract, _ = read_contract(auto)
    choice = contract.evaluation["flag"]
    assert contract.uncertain_measure == choice["measure"]
    assert set(choice["worth"]) == {"mutual_information", "predictive_entropy", "expected_entropy"}
    assert choice["worth"][choice["measure"]] == max(choice["worth"].values())
    named = export(digits_checkpoint, tmp_path, "digits", 2, uncertain_measure="predictive_entropy")
    contract, metadata = read_contract(named)
    assert contract.uncertain_measure == "predictive_entropy"
    assert metadata["mimo.uncertain_measure"] == "predictive_entropy"
    with pytest.raises(ExportError, match="uncertain measure must be auto or one of"):
        export(digits_checkpoint, tmp_path, "digits", 3, uncertain_measure="variance")
