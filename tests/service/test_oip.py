"""The Open Inference Protocol codec (service/oip.py): JSON and binary tensors, and its errors;
the request parameter `mode` (service/oip_model.py)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from service import oip, oip_model
from service.errors import BadRequest

PACKED = {"mode": "packed"}


def json_body(inputs: list[dict[str, Any]], **extra: Any) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


def binary_body(arrays: dict[str, np.ndarray], **extra: Any) -> tuple[bytes, str]:
    """A binary-extension body (JSON header + raw tensors) and its header length."""
    specs, chunks = [], []
    for name, array in arrays.items():
        raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        specs.append(
            {
                "name": name,
                "datatype": oip.datatype_of(array),
                "shape": list(array.shape),
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        chunks.append(raw)
    head = json_body(specs, **extra)
    return head + b"".join(chunks), str(len(head))


def refused(body: bytes, header: str | None = None) -> str:
    with pytest.raises(BadRequest) as info:
        oip.parse_request(body, header)
    assert info.value.status_code == 400
    return info.value.message


# --- JSON requests ---------------------------------------------------------------------------


def test_json_flat_fp32() -> None:
    data = [i / 10 for i in range(6)]
    request = oip.parse_request(
        json_body([{"name": "images", "shape": [2, 3], "datatype": "FP32", "data": data}]), None
    )
    datatype, array = request.inputs["images"]
    assert datatype == "FP32"
    assert array.dtype == np.float32 and array.shape == (2, 3)
    np.testing.assert_array_equal(array, np.asarray(data, np.float32).reshape(2, 3))
    assert request.id is None and request.outputs is None
    assert request.binary_outputs == set() and request.binary_default is False


def test_json_nested_data_takes_the_declared_shape() -> None:
    nested = [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]
    request = oip.parse_request(
        json_body([{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": nested}]), None
    )
    _, array = request.inputs["x"]
    assert array.shape == (2, 4)
    np.testing.assert_array_equal(array.ravel(), np.arange(1, 9, dtype=np.float32))


@pytest.mark.parametrize(
    ("datatype", "data", "dtype"),
    [
        ("UINT8", [0, 1, 128, 255], np.uint8),
        ("INT64", [-(2**40), 0, 7, 2**40], np.int64),
        ("FP32", [0.0, 0.25, 0.5, 1.0], np.float32),
    ],
)
def test_json_datatypes(datatype: str, data: list[float], dtype: type) -> None:
    body = json_body([{"name": "t", "shape": [1, 4], "datatype": datatype, "data": data}])
    got_type, array = oip.parse_request(body, None).inputs["t"]
    assert got_type == datatype
    assert array.dtype == np.dtype(dtype) and array.shape == (1, 4)
    np.testing.assert_array_equal(array, np.asarray([data], dtype))


def test_json_id_outputs_and_binary_choices() -> None:
    body = json_body(
        [{"name": "x", "shape": [1], "datatype": "FP32", "data": [0.5]}],
        id=42,
        parameters={"binary_data_output": True},
        outputs=[
            {"name": "a"},
            {"name": "b", "parameters": {"binary_data": False}},
            {"name": "c", "parameters": {"binary_data": True}},
        ],
    )
    request = oip.parse_request(body, None)
    assert request.id == "42"
    assert request.outputs == ["a", "b", "c"]
    assert request.binary_default is True
    assert request.binary_outputs == {"a", "c"}  # the request-level default, unless overridden
    assert request.parameters == {"binary_data_output": True}  # `mode` is oip_model's to read


# --- binary requests -------------------------------------------------------------------------


def test_binary_several_inputs() -> None:
    rng = np.random.default_rng(0)
    images = rng.random((2, 1, 8, 8), dtype=np.float32)
    pixels = rng.integers(0, 256, (3, 4), dtype=np.uint8)
    ids = np.array([5, -3], dtype=np.int64)
    body, length = binary_body({"images": images, "pixels": pixels, "ids": ids}, id="r1")
    request = oip.parse_request(body, length)
    assert request.id == "r1"
    assert list(request.inputs) == ["images", "pixels", "ids"]
    for name, expected in {"images": images, "pixels": pixels, "ids": ids}.items():
        datatype, array = request.inputs[name]
        assert datatype == oip.datatype_of(expected)
        assert array.dtype == expected.dtype and array.shape == expected.shape
        np.testing.assert_array_equal(array, expected)


def test_binary_and_json_inputs_mix() -> None:
    images = np.linspace(0, 1, 8, dtype=np.float32).reshape(2, 4)
    raw = images.tobytes()
    head = json_body(
        [
            {"name": "json", "shape": [2], "datatype": "INT64", "data": [1, 2]},
            {
                "name": "bin",
                "shape": [2, 4],
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw)},
            },
        ]
    )
    request = oip.parse_request(head + raw, str(len(head)))
    np.testing.assert_array_equal(request.inputs["json"][1], [1, 2])
    np.testing.assert_array_equal(request.inputs["bin"][1], images)


def test_binary_header_only_is_plain_json() -> None:
    body = json_body([{"name": "x", "shape": [2], "datatype": "FP32", "data": [0.1, 0.2]}])
    request = oip.parse_request(body, str(len(body)))
    np.testing.assert_allclose(request.inputs["x"][1], [0.1, 0.2], rtol=1e-6)


# --- errors ----------------------------------------------------------------------------------


def test_bad_json() -> None:
    assert "not valid JSON" in refused(b'{"inputs": [')


def test_not_an_inference_request() -> None:
    assert "inputs" in refused(b'{"data": [1, 2]}')
    assert "inputs" in refused(b"[1, 2, 3]")


def test_header_length_past_the_body() -> None:
    body, _ = binary_body({"x": np.zeros(4, np.float32)})
    message = refused(body, str(len(body) + 1))
    assert "Inference-Header-Content-Length" in message and str(len(body)) in message


def test_header_length_not_a_number() -> None:
    body, _ = binary_body({"x": np.zeros(4, np.float32)})
    assert "Inference-Header-Content-Length" in refused(body, "-5")
    assert "Inference-Header-Content-Length" in refused(body, "ten")


def test_header_length_cuts_the_json() -> None:
    body, length = binary_body({"x": np.zeros(4, np.float32)})
    assert "not valid JSON" in refused(body, str(int(length) - 3))


def test_binary_size_does_not_fit_the_shape() -> None:
    raw = np.zeros(3, np.float32).tobytes()
    head = json_body(
        [
            {
                "name": "x",
                "shape": [4],
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw)},
            }
        ]
    )
    message = refused(head + raw, str(len(head)))
    assert "12 binary bytes" in message and "expected 16" in message


def test_binary_size_runs_past_the_body() -> None:
    raw = np.zeros(4, np.float32).tobytes()
    head = json_body(
        [{"name": "x", "shape": [4], "datatype": "FP32", "parameters": {"binary_data_size": 32}}]
    )
    message = refused(head + raw, str(len(head)))
    assert "binary_data_size 32" in message and "16 binary bytes" in message


def test_trailing_binary_bytes() -> None:
    body, length = binary_body({"x": np.zeros(4, np.float32)})
    assert "3 trailing binary bytes" in refused(body + b"abc", length)


def test_data_count_does_not_match_the_shape() -> None:
    body = json_body([{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3]}])
    message = refused(body)
    assert "3 values" in message and "6 expected" in message


def test_ragged_data() -> None:
    body = json_body([{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3]]}])
    assert "not a FP32 array" in refused(body)


def test_unknown_datatype() -> None:
    body = json_body([{"name": "x", "shape": [1], "datatype": "FP16X", "data": [1]}])
    message = refused(body)
    assert "FP16X" in message and "not supported" in message


@pytest.mark.parametrize("value", [300, -1, 1.5])
def test_uint8_out_of_range_or_fractional(value: float) -> None:
    body = json_body([{"name": "x", "shape": [2], "datatype": "UINT8", "data": [1, value]}])
    assert "not a UINT8 array" in refused(body)


def test_bad_tensor_specs() -> None:
    assert "`shape`" in refused(json_body([{"name": "x", "datatype": "FP32", "data": [1]}]))
    assert "non-negative" in refused(
        json_body([{"name": "x", "shape": [-1, 2], "datatype": "FP32", "data": [1, 2]}])
    )
    assert "neither `data` nor binary_data_size" in refused(
        json_body([{"name": "x", "shape": [1], "datatype": "FP32"}])
    )
    assert "JSON object" in refused(json_body(["x"]))
    outputs = json_body([{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], outputs=[1])
    assert "`name`" in refused(outputs)


@pytest.mark.parametrize("where", ["input", "request", "output"])
def test_parameters_must_be_an_object(where: str) -> None:
    spec: dict[str, Any] = {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}
    extra: dict[str, Any] = {}
    if where == "input":
        spec["parameters"] = 5
    elif where == "request":
        extra["parameters"] = "binary"
    else:
        extra["outputs"] = [{"name": "y", "parameters": [True]}]
    assert "`parameters`" in refused(json_body([spec], **extra))


# --- responses -------------------------------------------------------------------------------


def response_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "probabilities": rng.random((3, 10), dtype=np.float32),
        "member_probabilities": rng.random((3, 2, 10), dtype=np.float32),
        "mutual_information": rng.random(3, dtype=np.float32),
        "uncertain": np.array([True, False, True]),
    }


def test_encode_json_outputs() -> None:
    tensors = response_tensors()
    body, length = oip.encode_response({"model_name": "m", "id": "7"}, tensors, set())
    assert length is None
    answer = json.loads(body)
    assert answer["model_name"] == "m" and answer["id"] == "7"
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert list(outputs) == list(tensors)
    for name, array in tensors.items():
        entry = outputs[name]
        assert entry["shape"] == list(array.shape)
        assert entry["datatype"] == oip.datatype_of(array)
        assert "parameters" not in entry
        np.testing.assert_array_equal(
            np.asarray(entry["data"], dtype=array.dtype).reshape(array.shape), array
        )
    assert outputs["uncertain"]["datatype"] == "BOOL"
    assert outputs["uncertain"]["data"] == [True, False, True]


def test_encode_binary_outputs_round_trip() -> None:
    tensors = response_tensors()
    binary = {"member_probabilities", "uncertain"}
    body, length = oip.encode_response({"model_name": "m"}, tensors, binary)
    assert length is not None
    answer = json.loads(body[:length])
    offset = length
    for entry in answer["outputs"]:
        array = tensors[entry["name"]]
        if entry["name"] not in binary:
            assert "data" in entry
            continue
        assert "data" not in entry
        size = entry["parameters"]["binary_data_size"]
        assert size == array.nbytes
        dtype = oip.DTYPES[entry["datatype"]]
        decoded = np.frombuffer(body[offset : offset + size], dtype=dtype).reshape(entry["shape"])
        np.testing.assert_array_equal(decoded, array)
        offset += size
    assert offset == len(body)


def test_encode_non_contiguous_binary() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4).T  # a transposed view
    body, length = oip.encode_response({}, {"t": array}, {"t"})
    assert length is not None
    entry = json.loads(body[:length])["outputs"][0]
    decoded = np.frombuffer(body[length:], np.float32).reshape(entry["shape"])
    np.testing.assert_array_equal(decoded, array)


def test_request_round_trip_through_the_response_encoder() -> None:
    """What encode_response writes as binary, parse_request reads back (same layout)."""
    tensors = response_tensors()
    body, length = oip.encode_response({}, tensors, set(tensors))
    assert length is not None
    head = json.loads(body[:length])
    request_head = json.dumps({"inputs": head["outputs"]}).encode()
    request = oip.parse_request(request_head + body[length:], str(len(request_head)))
    for name, array in tensors.items():
        np.testing.assert_array_equal(request.inputs[name][1], array)


def test_datatype_of_unknown_dtype() -> None:
    with pytest.raises(ValueError, match="complex"):
        oip.datatype_of(np.zeros(2, np.complex64))


def test_deeply_nested_json_is_a_client_error() -> None:
    with pytest.raises(BadRequest, match="not valid JSON"):
        oip.parse_request(b"[" * 100_000, None)


@pytest.mark.parametrize(
    ("parameters", "mode"),
    [({}, "ensemble"), ({"mode": "ensemble"}, "ensemble"), (PACKED, "packed")],
)
def test_mode_parameter(parameters: dict[str, Any], mode: str) -> None:
    assert oip_model.mode_of(parameters) == mode


@pytest.mark.parametrize(
    ("value", "got"),
    [
        ("fast", 'got "fast"'),
        ("Packed", 'got "Packed"'),
        (None, "got null"),
        (True, "got true"),
        ([["packed"]], "got a JSON array"),
        ({"mode": "packed"}, "got a JSON object"),
        ("x" * 100, "... (102 characters)"),
    ],
)
def test_mode_parameter_errors(value: Any, got: str) -> None:
    with pytest.raises(BadRequest) as info:
        oip_model.mode_of({"mode": value})
    assert info.value.message.startswith('parameter "mode" must be "ensemble" or "packed", ')
    assert info.value.message.endswith(got)
