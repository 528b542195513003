"""The Open Inference Protocol (KServe v2) REST surface, plus Triton's repository, model
configuration and statistics extensions.

What the model takes and answers is service/oip_model.py's, shared with the gRPC server.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from service import metrics, model_config, oip, oip_model
from service.api.openapi import INFER, errors
from service.deps import ApiKey, PoolDep, RegistryDep, SettingsDep
from service.errors import BadRequest, Conflict, Forbidden
from service.statistics import statistics

router = APIRouter(prefix="/v2", tags=["open inference protocol"])


@router.get("")
def server_metadata() -> dict[str, Any]:
    return oip_model.SERVER


# (before /models/{name}: "stats" is no model's name here)
@router.get("/models/stats", dependencies=[ApiKey], responses=errors(401))
def all_statistics(registry: RegistryDep) -> dict[str, Any]:
    """Triton's statistics extension: every served model version."""
    return statistics(oip_model.versions_of(registry, "", None))


@router.get("/models/{name}/stats", dependencies=[ApiKey], responses=errors(401, 404))
def model_statistics(name: str, registry: RegistryDep) -> dict[str, Any]:
    return statistics(oip_model.versions_of(registry, name, None))


@router.get(
    "/models/{name}/versions/{version}/stats", dependencies=[ApiKey], responses=errors(401, 404)
)
def model_version_statistics(name: str, version: str, registry: RegistryDep) -> dict[str, Any]:
    return statistics(oip_model.versions_of(registry, name, version))


@router.get("/models/{name}/config", dependencies=[ApiKey], responses=errors(401, 404))
def config(name: str, registry: RegistryDep, settings: SettingsDep) -> dict[str, Any]:
    """Triton's model-configuration extension."""
    return model_config.config(registry, name, None, settings)


@router.get(
    "/models/{name}/versions/{version}/config", dependencies=[ApiKey], responses=errors(401, 404)
)
def version_config(
    name: str, version: str, registry: RegistryDep, settings: SettingsDep
) -> dict[str, Any]:
    return model_config.config(registry, name, version, settings)


@router.get("/models/{name}", dependencies=[ApiKey], responses=errors(401, 404))
def model_metadata(name: str, registry: RegistryDep) -> dict[str, Any]:
    return oip_model.metadata(registry, name, None)


@router.get("/models/{name}/versions/{version}", dependencies=[ApiKey], responses=errors(401, 404))
def model_version_metadata(name: str, version: str, registry: RegistryDep) -> dict[str, Any]:
    return oip_model.metadata(registry, name, version)


@router.get("/models/{name}/ready", responses=errors(404))
def model_ready(name: str, registry: RegistryDep) -> dict[str, Any]:
    model = registry.get(name)
    return {"name": model.name, "ready": True}


@router.get("/models/{name}/versions/{version}/ready", responses=errors(404))
def model_version_ready(name: str, version: str, registry: RegistryDep) -> dict[str, Any]:
    model = registry.get(name, oip_model.parse_version(version))
    return {"name": model.name, "version": str(model.version), "ready": True}


async def _infer(
    request: Request,
    name: str,
    version: str | None,
    registry: RegistryDep,
    pool: PoolDep,
    settings: SettingsDep,
) -> Response:
    started = time.monotonic()
    model = registry.get(name, oip_model.parse_version(version))
    with metrics.counted(model.series, started):
        parsed = oip.parse_request(await request.body(), request.headers.get(oip.HEADER))
        tensors = await oip_model.infer(
            model,
            pool,
            parsed.inputs,
            parsed.outputs,
            settings.max_images_per_request,
            started,
            parsed.parameters,
        )
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
        headers={oip.HEADER_NAME: str(header_length)},
    )


@router.post(
    "/models/{name}/infer",
    dependencies=[ApiKey],
    responses=errors(400, 401, 404, 408, 413, 429, 503, 504),
    openapi_extra=INFER,
)
async def infer(
    request: Request, name: str, registry: RegistryDep, pool: PoolDep, settings: SettingsDep
) -> Response:
    return await _infer(request, name, None, registry, pool, settings)


@router.post(
    "/models/{name}/versions/{version}/infer",
    dependencies=[ApiKey],
    responses=errors(400, 401, 404, 408, 413, 429, 503, 504),
    openapi_extra=INFER,
)
async def infer_version(
    request: Request,
    name: str,
    version: str,
    registry: RegistryDep,
    pool: PoolDep,
    settings: SettingsDep,
) -> Response:
    return await _infer(request, name, version, registry, pool, settings)


@router.post("/repository/index", dependencies=[ApiKey], responses=errors(401))
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
    """Repository control only when enabled (as Triton's model-control mode), and with one
    process: each worker holds its own registry, a load or unload would reach only one."""
    if settings.model_control != "explicit":
        raise Forbidden(
            "repository control is off (MIMO_MODEL_CONTROL=none): the service serves what the "
            "repository held at start. Start it with MIMO_MODEL_CONTROL=explicit and an "
            "MIMO_API_KEY to load and unload models, or restart it to pick up new versions"
        )
    if settings.workers > 1:
        raise Conflict(
            f"repository control is per process and MIMO_WORKERS={settings.workers}: restart "
            "the service to load new versions, or run one worker per container and scale "
            "containers"
        )


@router.post(
    "/repository/models/{name}/load",
    dependencies=[ApiKey, Depends(single_process)],
    responses=errors(
        400, 401, 403, 404, 409, e400="bad name, or a version failed to load (the old one serves)"
    ),
)
async def load_model(name: str, registry: RegistryDep, pool: PoolDep) -> dict[str, Any]:
    report = await asyncio.get_running_loop().run_in_executor(None, registry.load, name)
    if report.failed:
        raise BadRequest(
            "load failed, the previous version keeps serving: " + "; ".join(report.failed.values())
        )
    await pool.retire_stale()
    return {"name": name, "loaded": report.loaded}


@router.post(
    "/repository/models/{name}/unload",
    dependencies=[ApiKey, Depends(single_process)],
    responses=errors(401, 403, 404, 409, e404="model not loaded"),
)
async def unload_model(name: str, registry: RegistryDep, pool: PoolDep) -> dict[str, Any]:
    registry.unload(name)
    await pool.retire_stale()
    return {"name": name, "unloaded": True}
