"""Liveness, readiness (Open Inference Protocol paths) and the Prometheus exposition."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service import metrics
from service.errors import Unavailable

router = APIRouter(tags=["health"])


@router.get("/v2/health/live")
def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/v2/health/ready")
def ready(request: Request) -> dict[str, bool]:
    if not getattr(request.app.state, "ready", False):
        raise Unavailable("not ready: models are loading and warming up")
    if not request.app.state.registry.models():
        raise Unavailable(
            "not ready: no model is served (see GET /models for refused files); export one "
            "into the repository and POST /v2/repository/models/<name>/load"
        )
    return {"ready": True}


@router.get("/metrics", include_in_schema=False)
def prometheus() -> Response:
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)
