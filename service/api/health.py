"""Liveness, readiness (Open Inference Protocol paths) and the Prometheus exposition."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.datastructures import State

from service import metrics
from service.api.openapi import errors
from service.errors import Unavailable
from service.healthcheck import READY_PATH

router = APIRouter(tags=["health"])


@router.get("/v2/health/live")
def live() -> dict[str, bool]:
    return {"live": True}


def not_ready(state: State) -> str | None:
    """Why the server cannot answer inference yet, or None when it can (HTTP and gRPC)."""
    if getattr(state, "draining", False):
        return "not ready: shutting down (SIGTERM); requests still arriving are answered"
    if not getattr(state, "ready", False):
        return "not ready: models are loading and warming up"
    if not state.registry.models():
        return (
            "not ready: no model is served (see GET /models for refused files); export one "
            "into the repository and POST /v2/repository/models/<name>/load"
        )
    return None


@router.get(READY_PATH, responses=errors(503, e503="not ready: loading, or no model"))
def ready(request: Request) -> dict[str, bool]:
    reason = not_ready(request.app.state)
    if reason is not None:
        raise Unavailable(reason)
    return {"ready": True}


@router.get("/metrics", include_in_schema=False)
def prometheus() -> Response:
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)
