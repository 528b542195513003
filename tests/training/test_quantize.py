"""Lower-precision exports (int8, fp16): the contract kept, close to fp32, refused when not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import training.export_checks
from service.contract import (
    PRECISION_KEY,
    QUANTIZATION_KEY,
    REQUIRED_KEYS,
    ContractError,
    ModelContract,
    parse_contract,
)
from training.__main__ import main
from training.data import load_dataset
from training.export import export
from training.export_checks import ExportError, Tolerance
from training.quantize import Int8Settings, calibration_inputs, training_outliers

EVALUATION = {
    "dataset": "digits",
    "temperature": 1.7,
    "thresholds": {"mutual_information": 0.123, "predictive_entropy": 0.45},
}
SMALL = Int8Settings(calibration_images=64)  # a quick calibration for the tests that fail


def session_of(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def read(path: Path) -> tuple[ModelContract, dict[str, str]]:
    session = session_of(path)
    metadata = session.get_modelmeta().custom_metadata_map
    return parse_contract(
        metadata, session.get_inputs(), session.get_outputs(), str(path)
    ), metadata


def files_in(repository: Path) -> list[str]:
    if not repository.exists():
        return []
    return sorted(str(p.relative_to(repository)) for p in repository.rglob("*") if p.is_file())


def logits_of(path: Path, x: np.ndarray) -> np.ndarray:
    return session_of(path).run(["logits"], {"images": x})[0]


@pytest.fixture(scope="module")
def held_out_images() -> tuple[np.ndarray, np.ndarray]:
    test = load_dataset("digits", "test")
    return test.images.astype(np.float32) / 255.0, test.labels


@pytest.mark.parametrize(("version", "precision"), [(2, "int8"), (3, "fp16")])
def test_lower_precision_keeps_the_contract(
    precision_repository: Path, version: int, precision: str
) -> None:
    path = precision_repository / "digits" / str(version) / "model.onnx"
    fp32, fp32_metadata = read(precision_repository / "digits" / "1" / "model.onnx")
    contract, metadata = read(path)
    assert set(REQUIRED_KEYS) <= set(metadata)
    assert metadata[PRECISION_KEY] == precision == contract.precision
    assert PRECISION_KEY not in fp32_metadata and fp32.precision == "fp32"
    # Everything else the service reads is the fp32 export's.
    same = ("ensemble_size", "input_shape", "labels", "preprocess", "temperature", "thresholds")
    assert all(getattr(contract, k) == getattr(fp32, k) for k in same)
    assert contract.training == fp32.training
    session = session_of(path)
    [i], [o] = session.get_inputs(), session.get_outputs()
    assert (i.name, i.type, i.shape) == ("images", "tensor(float)", ["batch", 3, 1, 8, 8])
    assert (o.name, o.type, o.shape) == ("logits", "tensor(float)", ["batch", 3, 10])
    out = session.run(["logits"], {"images": np.zeros((5, 3, 1, 8, 8), np.float32)})[0]
    assert out.shape == (5, 3, 10) and out.dtype == np.float32
    assert path.stat().st_size < 0.6 * (path.parents[1] / "1" / "model.onnx").stat().st_size


def test_int8_is_quantized_and_says_how(precision_repository: Path) -> None:
    path = precision_repository / "digits" / "2" / "model.onnx"
    contract, metadata = read(path)
    assert json.loads(metadata[QUANTIZATION_KEY]) == contract.quantization
    q = contract.quantization
    assert q["quant_format"] == Int8Settings().quant_format
    assert q["calibration_images"] == 512 and q["calibration_inputs"] == 1024  # tiled + mixed
    model = onnx.load(str(path))
    ops = {n.op_type for n in model.graph.node}
    assert ops & {"QuantizeLinear", "QLinearConv"}
    int8 = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert sum(int(np.prod(t.dims)) for t in int8) > 10_000  # the conv and linear weights


def test_fp16_computes_in_float16(precision_repository: Path) -> None:
    model = onnx.load(str(precision_repository / "digits" / "3" / "model.onnx"))
    types = {t.data_type for t in model.graph.initializer if len(t.dims) > 1}
    assert types == {onnx.TensorProto.FLOAT16}
    assert [n.op_type for n in model.graph.node].count("Cast") >= 2  # in and out


@pytest.mark.parametrize("version", [2, 3])
def test_close_to_fp32_on_real_digits(
    precision_repository: Path, held_out_images: tuple[np.ndarray, np.ndarray], version: int
) -> None:
    x, labels = held_out_images
    tiled = np.repeat(x[:, None], 3, axis=1)  # as served
    reference = logits_of(precision_repository / "digits" / "1" / "model.onnx", tiled)
    lowered = logits_of(precision_repository / "digits" / str(version) / "model.onnx", tiled)
    agreement = (lowered.mean(axis=1).argmax(1) == reference.mean(axis=1).argmax(1)).mean()
    assert agreement >= 0.95
    assert (lowered.mean(axis=1).argmax(1) == labels).mean() > 0.5
    # M different images in the slots: each head still answers its own slot.
    mixed = np.stack([x[:100], x[100:200], x[200:300]], axis=1)
    heads = logits_of(precision_repository / "digits" / str(version) / "model.onnx", mixed)
    heads_fp32 = logits_of(precision_repository / "digits" / "1" / "model.onnx", mixed)
    assert (heads.argmax(2) == heads_fp32.argmax(2)).mean() >= 0.9


def test_outlier_trained_models_calibrate_and_check_on_their_outliers(
    digits_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The same network, declared as trained with the outlier loss (only the config changes).
    checkpoint = torch.load(digits_checkpoint, weights_only=False)
    checkpoint["config"] = {**checkpoint["config"], "outlier_weight": 1.0}
    declared = tmp_path / "outliers.pt"
    torch.save(checkpoint, declared)
    target = export(declared, tmp_path / "models", "digits", 1, EVALUATION, precision="int8")
    q = read(target)[0].quantization
    assert q["outlier_images"] == 64  # 512 x the training's outlier fraction, 0.125
    assert q["calibration_inputs"] == 2 * 512 + 64
    assert "on 250 outliers" in capsys.readouterr().out
    # Asked for explicitly, outliers are used whatever the training did.
    settings = Int8Settings(calibration_images=64, outlier_images=8)
    target = export(
        digits_checkpoint, tmp_path / "m2", "digits", 1, EVALUATION, precision="int8", int8=settings
    )
    assert read(target)[0].quantization["calibration_inputs"] == 2 * 64 + 8
    assert "outliers" not in capsys.readouterr().out  # checked on outliers only if trained so


def test_calibration_inputs_tile_then_mix() -> None:
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1) * 20
    x = calibration_inputs(images, ensemble_size=3, count=4, mixed=True, seed=1)
    assert x.shape == (8, 3, 1, 1, 1) and x.dtype == np.float32
    tiled, mixed = x[:4, :, 0, 0, 0], x[4:, :, 0, 0, 0]
    assert (tiled == tiled[:, :1]).all()  # one image in all slots
    assert len(np.unique(tiled[:, 0])) == 4
    assert (mixed[:, 0] == tiled[:, 0]).all()
    assert all(len(set(row)) == 3 for row in mixed.tolist())  # three images per row
    assert calibration_inputs(images, 3, 50, mixed=False).shape == (10, 3, 1, 1, 1)
    outliers = training_outliers(5, (1, 1, 1))
    assert outliers.dtype == np.float32 and 0.0 <= outliers.min() <= outliers.max() <= 1.0
    x = calibration_inputs(images, 3, 4, mixed=False, outliers=outliers)
    assert x.shape == (9, 3, 1, 1, 1)
    assert (x[4:, :, 0, 0, 0] == outliers[:, None, 0, 0, 0]).all()  # tiled


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_a_graph_that_strays_is_not_written(
    digits_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, precision: str
) -> None:
    strict = {precision: Tolerance(agreement=1.01, probability=0.0, flags=1.01)}
    monkeypatch.setattr(training.export_checks, "TOLERANCES", strict)
    repository = tmp_path / "models"
    with pytest.raises(ExportError, match=f"the {precision} graph strays from torch") as info:
        export(
            digits_checkpoint, repository, "digits", 1, EVALUATION, precision=precision, int8=SMALL
        )
    assert "was not written" in str(info.value)
    assert files_in(repository) == []


def test_flipped_uncertain_flags_alone_refuse(
    digits_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Top-1 classes and probabilities may pass while the `uncertain` flags flip: still refused.
    lenient = {"fp16": Tolerance(agreement=0.0, probability=1.0, flags=1.01)}
    monkeypatch.setattr(training.export_checks, "TOLERANCES", lenient)
    with pytest.raises(ExportError, match=r"`uncertain` flags agreeing 1\.0000 \(at least 1\.01\)"):
        export(digits_checkpoint, tmp_path, "digits", 1, EVALUATION, precision="fp16")
    assert files_in(tmp_path) == []


def test_a_failed_int8_export_keeps_the_old_model(
    digits_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = export(digits_checkpoint, tmp_path, "digits", 1, EVALUATION)
    before = target.read_bytes()
    monkeypatch.setattr(training.export_checks, "TOLERANCES", {"int8": Tolerance(1.01, 0.0, 1.01)})
    with pytest.raises(ExportError):
        export(
            digits_checkpoint, tmp_path, "digits", 1, EVALUATION, True, precision="int8", int8=SMALL
        )
    assert target.read_bytes() == before
    assert files_in(tmp_path) == ["digits/1/model.onnx"]


def test_unknown_precision(digits_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="precision must be one of fp32, int8, fp16"):
        export(digits_checkpoint, tmp_path, "digits", 1, EVALUATION, precision="bf16")
    assert files_in(tmp_path) == []


def test_cli(digits_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps(EVALUATION))
    common = [
        "export",
        f"--checkpoint={digits_checkpoint}",
        f"--evaluation={metrics}",
        f"--repository={tmp_path / 'models'}",
        "--name=digits",
    ]
    flags = ["--calibration-images=32", "--quant-format=qoperator", "--per-channel"]
    assert main([*common, "--version=1", "--precision=int8", *flags]) == 0
    assert "(int8, " in capsys.readouterr().out
    contract, _ = read(tmp_path / "models" / "digits" / "1" / "model.onnx")
    assert contract.precision == "int8"
    assert contract.quantization["quant_format"] == "qoperator"
    assert contract.quantization["per_channel"] is True
    assert contract.quantization["calibration_images"] == 32
    # A wrong value is a usage error: exit 2, a message, no traceback, no file.
    assert main([*common, "--version=2", "--precision=int8", "--calibration-images=0"]) == 2
    assert "calibration images must be positive" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*common, "--version=2", "--precision=bf16"])
    assert "invalid choice: 'bf16'" in capsys.readouterr().err
    assert files_in(tmp_path / "models") == ["digits/1/model.onnx"]


# ---- the contract reader: the precision key is optional ----


def with_metadata(source: Path, target: Path, **changes: str | None) -> Path:
    model = onnx.load(str(source))
    props = {p.key: p.value for p in model.metadata_props}
    for key, value in changes.items():
        key = key.replace("_", ".", 1)
        if value is None:
            props.pop(key, None)
        else:
            props[key] = value
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(target))
    return target


def test_a_file_without_precision_reads_as_fp32(precision_repository: Path, tmp_path: Path) -> None:
    source = precision_repository / "digits" / "2" / "model.onnx"
    bare = with_metadata(source, tmp_path / "m.onnx", mimo_precision=None, mimo_quantization=None)
    contract, metadata = read(bare)
    assert (contract.precision, contract.quantization) == ("fp32", {})
    assert set(metadata) == set(REQUIRED_KEYS)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"mimo_precision": "INT 8"}, "mimo.precision must be a short name"),
        ({"mimo_precision": ""}, "mimo.precision must be a short name"),
        ({"mimo_quantization": "{oops"}, "'mimo.quantization' is not valid JSON"),
    ],
)
def test_a_bad_precision_is_refused(
    precision_repository: Path, tmp_path: Path, changes: dict[str, Any], problem: str
) -> None:
    source = precision_repository / "digits" / "2" / "model.onnx"
    with pytest.raises(ContractError, match=problem):
        read(with_metadata(source, tmp_path / "m.onnx", **changes))
