"""Typed dependencies: the routes receive what the lifespan built, never globals."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.auth import check_api_key
from service.pool import BatcherPool
from service.registry import ModelRegistry
from service.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


def get_pool(request: Request) -> BatcherPool:
    return request.app.state.pool


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
PoolDep = Annotated[BatcherPool, Depends(get_pool)]


def require_api_key(request: Request, settings: SettingsDep) -> None:
    check_api_key(
        settings.api_key,
        request.headers.get("authorization", ""),
        request.headers.get("x-api-key", ""),
    )


ApiKey = Depends(require_api_key)
