"""The Open Inference Protocol model, whatever carries it (REST in service/api/v2.py, gRPC in
service/oip_grpc/server.py): its metadata, the checks of its input and the tensors it answers.

The OIP model takes the un-tiled images [batch, C, H, W] (FP32 in [0, 1], or UINT8) and
answers the ensemble's probabilities, the heads' probabilities and every uncertainty measure.
With the request parameter `mode` "packed" (as /predict?mode=packed) M images share each
forward pass and each is answered by its own slot's head: `probabilities` and `head` only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from service import oip
from service.encode import oip_tensors
from service.errors import BadRequest, NotFound, quoted
from service.parameters import DEFAULTS, MODES
from service.pool import BatcherPool
from service.registry import ModelRegistry, ServedModel
from service.uncertainty import MEASURES
from service.version import VERSION

SERVER = {
    "name": "mimo-serve",
    "version": VERSION,
    "extensions": ["binary_tensor_data", "model_repository", "model_configuration", "statistics"],
}
PLATFORM = "onnxruntime_onnx"
INPUT = "images"
INPUT_DATATYPES = ("FP32", "UINT8")  # pixels in [0, 1], or 0-255
PACKED_OUTPUTS = ("probabilities", "head")  # what a packed request can ask for


def parse_version(version: str | None) -> int | None:
    """The protocol's version string: empty or absent means the highest served."""
    if version is None or version == "":
        return None
    if not oip.DIGITS.fullmatch(version) or int(version) < 1:
        raise NotFound(f"model version must be a positive integer, got {quoted(version)}")
    return int(version)


def output_specs(model: ServedModel) -> list[dict[str, Any]]:
    m, k = model.contract.ensemble_size, model.contract.num_classes
    return [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, k]},
        {"name": "member_probabilities", "datatype": "FP32", "shape": [-1, m, k]},
        *({"name": name, "datatype": "FP32", "shape": [-1]} for name in MEASURES),
        {"name": "kl_to_mean", "datatype": "FP32", "shape": [-1, m]},
        {"name": "uncertain", "datatype": "BOOL", "shape": [-1]},
        # The slot whose head answered the image in packed mode; ENSEMBLE_HEAD in ensemble mode
        # (asked for only: Triton's tools ask for every output the metadata lists).
        {"name": "head", "datatype": "INT32", "shape": [-1]},
    ]


def outputs_of(model: ServedModel, mode: str) -> list[str]:
    """The outputs a request in `mode` may ask for, and gets when it names none."""
    if mode == "packed":
        return list(PACKED_OUTPUTS)
    return [spec["name"] for spec in output_specs(model) if spec["name"] != "head"]


def mode_of(parameters: Mapping[str, Any]) -> str:
    """The request parameter `mode` (REST `parameters.mode`, gRPC `parameters["mode"]`)."""
    mode = parameters.get("mode", DEFAULTS.mode)
    if isinstance(mode, str) and mode in MODES:
        return mode
    if isinstance(mode, str | bool | int | float | None):
        got = json.dumps(mode)
        got = got if len(got) <= 60 else f"{got[:60]}... ({len(got):,} characters)"
    else:  # not echoed: it could be large or deeply nested
        got = "a JSON object" if isinstance(mode, dict) else "a JSON array"
    raise BadRequest(f'parameter "mode" must be {" or ".join(map(json.dumps, MODES))}, got {got}')


def metadata(registry: ModelRegistry, name: str, version: str | None) -> dict[str, Any]:
    model = registry.get(name, parse_version(version))
    versions = sorted(m.version for m in registry.models() if m.name == name)
    return {
        "name": model.name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [-1, *model.contract.input_shape]}],
        "outputs": output_specs(model),
        "parameters": {
            "ensemble_size": model.contract.ensemble_size,
            "labels": list(model.contract.labels),
            "provider": model.provider,
            "thresholds": model.contract.thresholds,
            "uncertain_measure": model.contract.uncertain_measure,
            # the request parameter `mode` -> the outputs it answers
            "modes": {mode: outputs_of(model, mode) for mode in MODES},
        },
    }


def versions_of(registry: ModelRegistry, name: str, version: str | None) -> list[ServedModel]:
    """The served versions of `name` (only `version` when one is given); 404 for none. An
    empty name is every served model, as Triton's statistics extension reads it."""
    if not name:
        return registry.models()
    if version:
        return [registry.get(name, parse_version(version))]
    registry.get(name)  # (its 404 when nothing of that name is served)
    return [m for m in registry.models() if m.name == name]


def images_from(
    inputs: dict[str, tuple[str, np.ndarray]], model: ServedModel, limit: int
) -> list[np.ndarray]:
    """The `images` input as float32 [C, H, W] arrays, checked against the model."""
    if INPUT not in inputs or len(inputs) != 1:
        raise BadRequest(f"expected one input named 'images', got {sorted(inputs) or 'none'}")
    datatype, array = inputs[INPUT]
    shape = list(model.contract.input_shape)
    if array.ndim != 4 or list(array.shape[1:]) != shape:
        raise BadRequest(f"input 'images' has shape {list(array.shape)}; expected [batch, {shape}]")
    if len(array) == 0 or len(array) > limit:
        raise BadRequest(f"batch of {len(array)} images; send 1 to {limit}")
    if datatype == "UINT8":
        x = array.astype(np.float32) / 255.0
    elif datatype == "FP32":
        x = array.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            raise BadRequest("input 'images' contains NaN or infinity; send pixels in [0, 1]")
        if x.min() < 0.0 or x.max() > 1.0:
            raise BadRequest(
                f"input 'images' has values in [{x.min():g}, {x.max():g}]; send FP32 pixels "
                "scaled to [0, 1] or UINT8 pixels"
            )
    else:
        raise BadRequest(f"input 'images' datatype {datatype}: send FP32 in [0, 1] or UINT8")
    return list(x)


async def infer(
    model: ServedModel,
    pool: BatcherPool,
    inputs: dict[str, tuple[str, np.ndarray]],
    outputs: list[str] | None,
    limit: int,
    started: float | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """The requested output tensors (all of the mode's when `outputs` is None), in the order
    asked for. `parameters` are the request's: `mode` picks ensemble or packed."""
    started = time.monotonic() if started is None else started
    mode = mode_of(parameters or {})
    images = images_from(inputs, model, limit)
    # All checked before the forward pass: a refused request records no prediction.
    known = [spec["name"] for spec in output_specs(model)]
    unknown = [o for o in outputs or () if o not in known]
    if unknown:
        raise BadRequest(f"unknown outputs {unknown}; this model has {sorted(known)}")
    available = outputs_of(model, mode)
    if mode == "packed" and (ensemble_only := [o for o in outputs or () if o not in available]):
        raise BadRequest(
            f'outputs {ensemble_only} need the ensemble: send mode "ensemble" (the default) '
            f'for them; mode "packed" answers {available}'
        )
    rows = await pool.infer(model, images, started, packed=mode == "packed")
    return oip_tensors(rows, available if outputs is None else outputs)
