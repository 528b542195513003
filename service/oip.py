"""Open Inference Protocol (KServe v2) tensors: JSON and the binary tensor extension.

A request body is JSON, or, when the `Inference-Header-Content-Length` header is present, that
many bytes of JSON followed by the raw little-endian bytes of each input that declares
`parameters.binary_data_size`, in order.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.errors import BadRequest, quoted

HEADER_NAME = "Inference-Header-Content-Length"
HEADER = HEADER_NAME.lower()  # as ASGI servers pass header names
DIGITS = re.compile(r"[0-9]{1,18}")  # a byte count: ASCII digits, short enough for int()
MAX_DIMENSIONS = 32  # numpy allows 64; no model here takes more than 4
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, tuple[str, np.ndarray]]  # name -> (datatype, array in its shape)
    outputs: list[str] | None  # names asked for; None: all
    binary_outputs: set[str]  # outputs to send as binary
    binary_default: bool
    parameters: dict[str, Any]  # the request's own (`mode`: service.oip_model.mode_of)


def _parameters(owner: dict[str, Any], what: str) -> dict[str, Any]:
    parameters = owner.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise BadRequest(f"`parameters` of {what} must be a JSON object, got {parameters!r}")
    return parameters


def _tensor(spec: dict[str, Any], raw: bytes | None) -> tuple[str, np.ndarray]:
    name = spec.get("name")
    datatype = spec.get("datatype")
    shape = spec.get("shape")
    if not isinstance(name, str) or not isinstance(datatype, str) or not isinstance(shape, list):
        raise BadRequest("each input needs a string `name`, a `datatype` and a `shape` list")
    if raw is None and "data" not in spec:
        raise BadRequest(f"input {name!r} has neither `data` nor binary_data_size")
    return datatype, tensor(name, datatype, shape, raw, spec.get("data"))


def tensor(name: str, datatype: str, shape: list[Any], raw: bytes | None, data: Any) -> np.ndarray:
    """An input tensor from its raw little-endian bytes, or else from its values (`data`).

    Shared by the JSON, binary and gRPC encodings: the same checks, the same messages.
    """
    if datatype not in DTYPES:
        raise BadRequest(f"input {name!r}: datatype {datatype} not supported; send FP32 or UINT8")
    # (bool is an int to isinstance: [true] is no shape)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise BadRequest(
            f"input {quoted(name)}: shape must be non-negative integers, got {quoted(shape)}"
        )
    if len(shape) > MAX_DIMENSIONS:
        raise BadRequest(
            f"input {name!r}: shape has {len(shape)} dimensions; at most {MAX_DIMENSIONS}"
        )
    count = math.prod(shape)
    dtype = DTYPES[datatype]
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise BadRequest(
                f"input {name!r}: {len(raw)} binary bytes for shape {shape} of {datatype}, "
                f"expected {count * dtype.itemsize}"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    try:
        array = np.asarray(data, dtype=np.float64 if dtype.kind == "f" else dtype)
        # numpy truncates 1.5 to 1 when casting to an integer type: refuse it instead.
        if dtype.kind in "iu" and not np.array_equal(array, np.asarray(data, np.float64)):
            raise ValueError("values that are not integers")
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadRequest(f"input {name!r}: data is not a {datatype} array ({exc})") from None
    if array.size != count:
        raise BadRequest(
            f"input {name!r}: {array.size} values for shape {shape} ({count} expected)"
        )
    return array.reshape(shape).astype(dtype)


def parse_request(body: bytes, header_length: str | None) -> InferRequest:
    if header_length is not None:
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
        if not DIGITS.fullmatch(header_length) or int(header_length) > len(body):
            raise BadRequest(
                f"Inference-Header-Content-Length {quoted(header_length)} does not fit a body of "
                f"{len(body)} bytes"
            )
        head, binary = body[: int(header_length)], body[int(header_length) :]
    else:
        head, binary = body, b""
    try:
        request = json.loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest(f"the inference request is not valid JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise BadRequest('expected {"inputs": [{"name", "shape", "datatype", "data"}, ...]}')
    inputs: dict[str, tuple[str, np.ndarray]] = {}
    offset = 0
    for spec in request["inputs"]:
        if not isinstance(spec, dict):
            raise BadRequest("each input must be a JSON object")
        size = _parameters(spec, f"input {spec.get('name')!r}").get("binary_data_size")
        raw = None
        if size is not None:
            bad = not isinstance(size, int) or isinstance(size, bool) or size < 0
            if bad or offset + size > len(binary):
                raise BadRequest(
                    f"input {spec.get('name')!r}: binary_data_size {size} runs past the "
                    f"{len(binary)} binary bytes of the body"
                )
            raw = binary[offset : offset + size]
            offset += size
        name = spec.get("name")
        inputs[str(name)] = _tensor(spec, raw)
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} trailing binary bytes belong to no input")
    parameters = _parameters(request, "the request")
    binary_default = bool(parameters.get("binary_data_output", False))
    outputs = None
    binary_outputs: set[str] = set()
    if request.get("outputs") is not None:
        if not isinstance(request["outputs"], list):
            raise BadRequest("`outputs` must be a list of {name, parameters}")
        outputs = []
        for out in request["outputs"]:
            if not isinstance(out, dict) or not isinstance(out.get("name"), str):
                raise BadRequest("each requested output needs a string `name`")
            outputs.append(out["name"])
            if _parameters(out, f"output {out['name']!r}").get("binary_data", binary_default):
                binary_outputs.add(out["name"])
    rid = request.get("id")
    return InferRequest(
        id=str(rid) if rid is not None else None,
        inputs=inputs,
        outputs=outputs,
        binary_outputs=binary_outputs,
        binary_default=binary_default,
        parameters=parameters,
    )


def datatype_of(array: np.ndarray) -> str:
    for name, dtype in DTYPES.items():
        if array.dtype == dtype:
            return name
    raise ValueError(f"no OIP datatype for {array.dtype}")


def encode_response(
    header: dict[str, Any], tensors: dict[str, np.ndarray], binary: set[str]
) -> tuple[bytes, int | None]:
    """Response body, and the JSON header length when binary tensors follow it."""
    outputs = []
    chunks = []
    for name, array in tensors.items():
        entry: dict[str, Any] = {
            "name": name,
            "datatype": datatype_of(array),
            "shape": list(array.shape),
        }
        if name in binary:
            raw = np.ascontiguousarray(array).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = array.ravel().tolist()
        outputs.append(entry)
    head = json.dumps({**header, "outputs": outputs}).encode()
    if not chunks:
        return head, None
    return head + b"".join(chunks), len(head)
