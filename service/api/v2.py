"""The Open Inference Protocol (KServe v2) REST surface, plus Triton's repository extension.

The OIP model takes the un-tiled images [batch, C, H, W] (FP32 in [0, 1], or UINT8) and
answers the ensemble's probabilities, the heads' probabilities and every uncertainty measure.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request, Response

from service import oip
from service.deps import ApiKey, PoolDep, RegistryDep, SettingsDep
from service.errors import BadRequest, Conflict, NotFound
from service.predictions import counted, observe
from service.registry import ServedModel
from service.uncertainty import MEASURES, ensemble_uncertainty

router = APIRouter(prefix="/v2", tags=["open inference protocol"])
SERVER = {
    "name": "mimo-serve",
    "version": "0.1.0",
    "extensions": ["binary_tensor_data", "model_repository"],
}


def _version(version: str | None) -> int | None:
    if version is None or version == "":
        return None
    if not version.isdigit() or int(version) < 1:
        raise NotFound(f"model version must be a positive integer, got {version!r}")
    return int(version)


def output_specs(model: ServedModel) -> list[dict[str, Any]]:
    m, k = model.contract.ensemble_size, model.contract.num_classes
    return [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, k]},
        {"name": "member_probabilities", "datatype": "FP32", "shape": [-1, m, k]},
        *({"name": name, "datatype": "FP32", "shape": [-1]} for name in MEASURES),
        {"name": "kl_to_mean", "datatype": "FP32", "shape": [-1, m]},
        {"name": "uncertain", "datatype": "BOOL", "shape": [-1]},
    ]


@router.get("")
def server_metadata() -> dict[str, Any]:
    return SERVER


def _metadata(registry: RegistryDep, name: str, version: str | None) -> dict[str, Any]:
    model = registry.get(name, _version(version))
    versions = sorted(m.version for m in registry.models() if m.name == name)
    return {
        "name": model.name,
        "versions": [str(v) for v in versions],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": "images", "datatype": "FP32", "shape": [-1, *model.contract.input_shape]}
        ],
        "outputs": output_specs(model),
        "parameters": {
            "ensemble_size": model.contract.ensemble_size,
            "labels": list(model.contract.labels),
            "provider": model.provider,
            "thresholds": model.contract.thresholds,
        },
    }


@router.get("/models/{name}", dependencies=[ApiKey])
def model_metadata(name: str, registry: RegistryDep) -> dict[str, Any]:
    return _metadata(registry, name, None)


@router.get("/models/{name}/versions/{version}", dependencies=[ApiKey])
def model_version_metadata(name: str, version: str, registry: RegistryDep) -> dict[str, Any]:
    return _metadata(registry, name, version)


@router.get("/models/{name}/ready")
def model_ready(name: str, registry: RegistryDep) -> dict[str, Any]:
    model = registry.get(name)
    return {"name": model.name, "ready": True}


@router.get("/models/{name}/versions/{version}/ready")
def model_version_ready(name: str, version: str, registry: RegistryDep) -> dict[str, Any]:
    model = registry.get(name, _version(version))
    return {"name": model.name, "version": str(model.version), "ready": True}


def images_from(request: oip.InferRequest, model: ServedModel, limit: int) -> list[np.ndarray]:
    """The `images` input as float32 [C, H, W] arrays, checked against the model."""
    if "images" not in request.inputs or len(request.inputs) != 1:
        raise BadRequest(
            f"expected one input named 'images', got {sorted(request.inputs) or 'none'}"
        )
    datatype, array = request.inputs["images"]
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


async def _infer(
    request: Request,
    name: str,
    version: str | None,
    registry: RegistryDep,
    pool: PoolDep,
    settings: SettingsDep,
) -> Response:
    started = time.monotonic()
    model = registry.get(name, _version(version))
    with counted(model):
        parsed = oip.parse_request(await request.body(), request.headers.get(oip.HEADER))
        images = images_from(parsed, model, settings.max_images_per_request)
        known = [spec["name"] for spec in output_specs(model)]
        unknown = [o for o in parsed.outputs or () if o not in known]
        if unknown:  # before the forward pass: a refused request records no prediction
            raise BadRequest(f"unknown outputs {unknown}; this model has {sorted(known)}")
        logits = await pool.infer(model, images, started)
    u = ensemble_uncertainty(logits, model.contract.temperature)
    flags = observe(model, u)
    tensors = {
        "probabilities": u.probabilities,
        "member_probabilities": u.member_probabilities,
        **u.measures(),
        "kl_to_mean": u.kl_to_mean,
    }
    tensors = {k: np.asarray(v, dtype=np.float32) for k, v in tensors.items()}
    tensors["uncertain"] = np.asarray(flags, dtype=np.bool_)
    if parsed.outputs is not None:
        tensors = {k: tensors[k] for k in parsed.outputs}
    binary = (
        parsed.binary_outputs
        if parsed.outputs is not None
        else (set(tensors) if parsed.binary_default else set())
    )
    header: dict[str, Any] = {"model_name": model.name, "model_version": str(model.version)}
    if parsed.id is not None:
        header["id"] = parsed.id
    body, header_length = oip.encode_response(header, tensors, binary)
    if header_length is None:
        return Response(body, media_type="application/json")
    return Response(
        body,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(header_length)},
    )


@router.post("/models/{name}/infer", dependencies=[ApiKey])
async def infer(
    request: Request, name: str, registry: RegistryDep, pool: PoolDep, settings: SettingsDep
) -> Response:
    return await _infer(request, name, None, registry, pool, settings)


@router.post("/models/{name}/versions/{version}/infer", dependencies=[ApiKey])
async def infer_version(
    request: Request,
    name: str,
    version: str,
    registry: RegistryDep,
    pool: PoolDep,
    settings: SettingsDep,
) -> Response:
    return await _infer(request, name, version, registry, pool, settings)


@router.post("/repository/index", dependencies=[ApiKey])
def repository_index(registry: RegistryDep) -> list[dict[str, Any]]:
    rows = [
        {"name": m.name, "version": str(m.version), "state": "READY"}
        for m in sorted(registry.models(), key=lambda m: (m.name, m.version))
    ]
    for key, why in sorted(registry.failures.items()):
        name, version = key.split("/", 1)
        rows.append({"name": name, "version": version, "state": "UNAVAILABLE", "reason": why})
    return rows


def single_process(settings: SettingsDep) -> None:
    """Each worker process holds its own registry: a load or unload would reach only one."""
    if settings.workers > 1:
        raise Conflict(
            f"repository control is per process and MIMO_WORKERS={settings.workers}: restart "
            "the service to load new versions, or run one worker per container and scale "
            "containers"
        )


@router.post("/repository/models/{name}/load", dependencies=[ApiKey, Depends(single_process)])
async def load_model(name: str, registry: RegistryDep, pool: PoolDep) -> dict[str, Any]:
    report = await asyncio.get_running_loop().run_in_executor(None, registry.load, name)
    if report.failed:
        raise BadRequest(
            "load failed, the previous version keeps serving: " + "; ".join(report.failed.values())
        )
    await pool.retire_stale()
    return {"name": name, "loaded": report.loaded}


@router.post("/repository/models/{name}/unload", dependencies=[ApiKey, Depends(single_process)])
async def unload_model(name: str, registry: RegistryDep, pool: PoolDep) -> dict[str, Any]:
    registry.unload(name)
    await pool.retire_stale()
    return {"name": name, "unloaded": True}
