"""The contract reader over what ONNX Runtime reports of small hand-built ONNX graphs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.contract import REQUIRED_KEYS, ContractError, ModelContract, parse_contract

LABELS = tuple(str(d) for d in range(10))
PREPROCESS = {"color": "L", "resize": [8, 8], "resample": "bilinear", "invert": False}
JSON_KEYS = (
    "mimo.input_shape",
    "mimo.labels",
    "mimo.preprocess",
    "mimo.thresholds",
    "mimo.training",
    "mimo.evaluation",
)


def contract(**changes: Any) -> ModelContract:
    values: dict[str, Any] = {
        "ensemble_size": 3,
        "input_shape": (1, 8, 8),
        "labels": LABELS,
        "preprocess": dict(PREPROCESS),
        "temperature": 1.25,
        "thresholds": {"mutual_information": 0.02, "predictive_entropy": 0.3},
        "training": {"dataset": "digits", "ensemble_size": 3, "seed": 0},
        "evaluation": {"clean": {"accuracy": 0.9}},
    }
    return ModelContract(**{**values, **changes})


def write_model(
    path: Path,
    metadata: dict[str, str],
    *,
    m: int = 3,
    chw: tuple[int, int, int] = (1, 8, 8),
    k: int = 10,
    batch: str | int = "batch",
    input_name: str = "images",
    output_name: str = "logits",
    input_type: int = TensorProto.FLOAT,
    input_dims: list[Any] | None = None,
    output_batch: str | int | None = None,
) -> Path:
    """images [batch, M, C, H, W] -> Reshape [batch, M, C*H*W] -> MatMul W -> [batch, M, K]."""
    c, h, w = chw
    weight = np.random.default_rng(0).normal(size=(c * h * w, k)).astype(np.float32)
    nodes = [
        helper.make_node("Cast", [input_name], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["x", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "weight"], [output_name]),
    ]
    dims = input_dims if input_dims is not None else [batch, m, c, h, w]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info(input_name, input_type, dims)],
        [
            helper.make_tensor_value_info(
                output_name,
                TensorProto.FLOAT,
                [batch if output_batch is None else output_batch, m, k],
            )
        ],
        initializer=[
            numpy_helper.from_array(np.array([0, m, c * h * w], dtype=np.int64), "flat_shape"),
            numpy_helper.from_array(weight, "weight"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def read(path: Path) -> ModelContract:
    """What the service does: ONNX Runtime loads the file, the reader judges what it reports."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return parse_contract(
        session.get_modelmeta().custom_metadata_map,
        session.get_inputs(),
        session.get_outputs(),
        str(path),
    )


def rejected(path: Path, problem: str) -> str:
    """The reader refuses the file with a message naming it and matching `problem`."""
    with pytest.raises(ContractError, match=problem) as info:
        read(path)
    message = str(info.value)
    assert str(path) in message, message
    return message


def with_changes(**changes: str) -> dict[str, str]:
    metadata = contract().metadata()
    for key, value in changes.items():
        metadata[key.replace("_", ".", 1)] = value
    return metadata


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    return tmp_path / "model.onnx"


def test_a_valid_model_is_accepted(model_path: Path) -> None:
    parsed = read(write_model(model_path, contract().metadata()))
    assert parsed == contract()
    assert parsed.num_classes == 10
    assert parsed.ensemble_size == 3
    assert parsed.input_shape == (1, 8, 8)
    # And the graph really runs with the declared signature, for any batch size.
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        out = session.run(["logits"], {"images": np.zeros((batch, 3, 1, 8, 8), np.float32)})[0]
        assert out.shape == (batch, 3, 10)


def test_unknown_batch_dimension_counts_as_dynamic(model_path: Path) -> None:
    # A dimension without a name is reported as None by ONNX Runtime: still dynamic.
    write_model(model_path, contract().metadata(), input_dims=[None, 3, 1, 8, 8])
    assert read(model_path) == contract()


def test_metadata_round_trip(model_path: Path) -> None:
    original = contract(
        ensemble_size=2,
        input_shape=(3, 6, 4),
        labels=("cat", "dog", "ship"),
        preprocess={"color": "RGB", "resize": [4, 6], "resample": "bicubic", "invert": True},
        temperature=0.1 + 0.2,  # needs every digit of its repr to round-trip
        thresholds={"mutual_information": 1e-7, "variance": 0.5, "disagreement": 1.0},
        training={"dataset": "imagefolder", "nested": {"a": [1, 2.5, None]}},
        evaluation={"ood": {"blank": {"auroc": 0.99}}},
    )
    metadata = original.metadata()
    assert set(metadata) == set(REQUIRED_KEYS)
    assert all(isinstance(v, str) for v in metadata.values())
    parsed = read(write_model(model_path, metadata, m=2, chw=(3, 6, 4), k=3))
    assert parsed == original
    assert parsed.metadata() == metadata


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_each_missing_key_is_named(model_path: Path, key: str) -> None:
    metadata = contract().metadata()
    del metadata[key]
    message = rejected(write_model(model_path, metadata), "missing metadata")
    assert key in message


def test_all_missing_keys_are_named_at_once(model_path: Path) -> None:
    message = rejected(write_model(model_path, {}), "missing metadata")
    assert all(key in message for key in REQUIRED_KEYS)


@pytest.mark.parametrize("value", ["2", "", "1.0"])
def test_wrong_format(model_path: Path, value: str) -> None:
    rejected(write_model(model_path, with_changes(mimo_format=value)), "mimo.format")


@pytest.mark.parametrize("key", JSON_KEYS)
def test_bad_json(model_path: Path, key: str) -> None:
    metadata = contract().metadata()
    metadata[key] = "{not json"
    message = rejected(write_model(model_path, metadata), "not valid JSON")
    assert key in message


def test_labels_count_must_match_the_logits(model_path: Path) -> None:
    metadata = with_changes(mimo_labels=json.dumps(list(LABELS[:9])))
    rejected(write_model(model_path, metadata), r"'logits' has shape \['batch', 3, 10\]")


def test_input_shape_must_match_the_graph(model_path: Path) -> None:
    metadata = with_changes(
        mimo_input_shape="[1, 16, 16]",
        mimo_preprocess=json.dumps({**PREPROCESS, "resize": [16, 16]}),
    )
    rejected(write_model(model_path, metadata), r"'images' has shape .*\[batch, 3, 1, 16, 16\]")


def test_ensemble_size_must_match_the_graph(model_path: Path) -> None:
    rejected(write_model(model_path, with_changes(mimo_ensemble_size="2")), "'images' has shape")


def test_fixed_batch_axis_is_refused(model_path: Path) -> None:
    rejected(write_model(model_path, contract().metadata(), batch=4), "dynamic batch axis")


def test_fixed_output_batch_axis_is_refused(model_path: Path) -> None:
    write_model(model_path, contract().metadata(), output_batch=4)
    rejected(model_path, "'logits' has shape.*dynamic batch axis")


def test_only_the_batch_axis_may_be_dynamic(model_path: Path) -> None:
    write_model(model_path, contract().metadata(), input_dims=["batch", 3, 1, "height", 8])
    rejected(model_path, "'images' has shape")


def test_wrong_input_name(model_path: Path) -> None:
    write_model(model_path, contract().metadata(), input_name="pixels")
    rejected(model_path, r"expected one tensor 'images'.*\['pixels'\]")


def test_wrong_output_name(model_path: Path) -> None:
    write_model(model_path, contract().metadata(), output_name="scores")
    rejected(model_path, r"expected one tensor 'logits'.*\['scores'\]")


def test_float64_input_is_refused(model_path: Path) -> None:
    write_model(model_path, contract().metadata(), input_type=TensorProto.DOUBLE)
    rejected(model_path, r"'images' must be float32, is tensor\(double\)")


def test_color_must_match_channels(model_path: Path) -> None:
    rgb = with_changes(mimo_preprocess=json.dumps({**PREPROCESS, "color": "RGB"}))
    rejected(write_model(model_path, rgb), "color 'RGB' does not fit 1 input channels")


def test_gray_color_for_three_channels_is_refused(tmp_path: Path) -> None:
    metadata = with_changes(mimo_input_shape="[3, 8, 8]")
    path = write_model(tmp_path / "rgb.onnx", metadata, chw=(3, 8, 8))
    rejected(path, "color 'L' does not fit 3 input channels")


@pytest.mark.parametrize(
    "thresholds", ['{"predictive_entropy": 0.3}', "{}", "[0.02]", '{"mutual_information": "x"}']
)
def test_thresholds_need_mutual_information(model_path: Path, thresholds: str) -> None:
    write_model(model_path, with_changes(mimo_thresholds=thresholds))
    rejected(model_path, "mimo.thresholds.*mutual_information")


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"mimo_ensemble_size": "0"}, "ensemble_size must be >= 1"),
        ({"mimo_ensemble_size": "three"}, "bad ensemble size or temperature"),
        ({"mimo_temperature": "0"}, "temperature must be > 0"),
        ({"mimo_temperature": "-1.5"}, "temperature must be > 0"),
        ({"mimo_temperature": "nan"}, "temperature must be > 0"),
        ({"mimo_temperature": "warm"}, "bad ensemble size or temperature"),
        ({"mimo_input_shape": "[8, 8]"}, r"input_shape must be \[C, H, W\]"),
        ({"mimo_input_shape": "[1, 0, 8]"}, r"input_shape must be \[C, H, W\]"),
        ({"mimo_labels": "[]"}, "labels must be a non-empty list of strings"),
        ({"mimo_labels": json.dumps(list(range(10)))}, "labels must be a non-empty list"),
        ({"mimo_preprocess": "[]"}, "preprocess must be a JSON object"),
        ({"mimo_preprocess": json.dumps({**PREPROCESS, "resize": [28, 28]})}, "resize"),
        ({"mimo_preprocess": json.dumps({**PREPROCESS, "resample": "cubic"})}, "resample"),
        ({"mimo_preprocess": json.dumps({**PREPROCESS, "resize": 8})}, "resize"),
        ({"mimo_preprocess": json.dumps({**PREPROCESS, "resize": None})}, "resize"),
        (
            {"mimo_preprocess": json.dumps({k: v for k, v in PREPROCESS.items() if k != "resize"})},
            "resize",
        ),
        ({"mimo_preprocess": json.dumps({**PREPROCESS, "color": ["L"]})}, "color"),
    ],
)
def test_other_bad_metadata(model_path: Path, changes: dict[str, str], problem: str) -> None:
    rejected(write_model(model_path, with_changes(**changes)), problem)


def test_the_flag_measure_is_mutual_information_unless_the_file_says(model_path: Path) -> None:
    plain = read(write_model(model_path, contract().metadata()))
    assert plain.uncertain_measure == "mutual_information" and plain.threshold == 0.02
    chosen = contract(uncertain_measure="predictive_entropy")
    assert chosen.metadata()["mimo.uncertain_measure"] == "predictive_entropy"
    parsed = read(write_model(model_path, chosen.metadata()))
    assert parsed == chosen and parsed.threshold == 0.3


@pytest.mark.parametrize(
    "measure",
    ["variance", "expected_entropy", "max_probability", ""],  # not a ranking measure, or no
)  # threshold for it in this file, or not a measure
def test_a_flag_measure_without_its_threshold_is_refused(model_path: Path, measure: str) -> None:
    metadata = contract().metadata() | {"mimo.uncertain_measure": measure}
    rejected(write_model(model_path, metadata), "mimo.uncertain_measure must be one of")
