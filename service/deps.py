"""Typed dependencies: the routes receive what the lifespan built, never globals.

All `async def`: FastAPI runs a plain `def` dependency in a worker thread, and these never
block. As plain functions they cost /predict four thread hops per request, about a third of
the server's CPU time for a request refused with 429 in a burst (tests/service/test_load.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.auth import check_api_key
from service.pool import BatcherPool
from service.registry import ModelRegistry
from service.settings import Settings


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def get_pool(request: Request) -> BatcherPool:
    return request.app.state.pool


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
PoolDep = Annotated[BatcherPool, Depends(get_pool)]


async def require_api_key(request: Request, settings: SettingsDep) -> None:
    check_api_key(
        settings.api_key,
        request.headers.get("authorization", ""),
        request.headers.get("x-api-key", ""),
    )


ApiKey = Depends(require_api_key)
