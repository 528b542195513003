"""Typed dependencies: the routes receive what the lifespan built, never globals."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request

from service.errors import Unauthorized
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
    """With MIMO_API_KEY set: `Authorization: Bearer <key>` or `X-API-Key: <key>`."""
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value()
    auth = request.headers.get("authorization", "")
    bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    given = bearer or request.headers.get("x-api-key", "").strip()
    if not given:
        raise Unauthorized(
            "missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
            {"WWW-Authenticate": "Bearer"},
        )
    if not secrets.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("wrong API key", {"WWW-Authenticate": "Bearer"})


ApiKey = Depends(require_api_key)
