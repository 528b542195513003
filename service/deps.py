"""Typed dependencies: the routes receive what the lifespan built, never globals.

All `async def`: FastAPI runs a plain `def` dependency in a worker thread, and these never
block. As plain functions they cost /predict four thread hops per request, about a third of
the server's CPU time for a request refused with 429 in a burst (tests/service/test_load.py).
"""

from __future__ import annotations

from typing import Annotated, Protocol, cast

from fastapi import Depends, Request
from starlette.types import Scope

from service.auth import check_api_key
from service.pool import BatcherPool
from service.registry import ModelRegistry
from service.settings import Settings


class AppState(Protocol):
    """What create_app and its lifespan put on `app.state` (registry and pool once started)."""

    settings: Settings
    registry: ModelRegistry
    pool: BatcherPool
    ready: bool


def state_of(scope: Scope) -> AppState:
    """The app's state, typed, from a request's ASGI scope (Starlette puts the app there)."""
    return cast(AppState, scope["app"].state)


async def get_settings(request: Request) -> Settings:
    return state_of(request.scope).settings


async def get_registry(request: Request) -> ModelRegistry:
    return state_of(request.scope).registry


async def get_pool(request: Request) -> BatcherPool:
    return state_of(request.scope).pool


async def get_state(request: Request) -> AppState:
    return state_of(request.scope)


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
PoolDep = Annotated[BatcherPool, Depends(get_pool)]
StateDep = Annotated[AppState, Depends(get_state)]


def authorize(settings: Settings, scope: Scope) -> None:
    """The API key check of an HTTP request, from its raw headers (route and fast path)."""
    if settings.api_key is None:
        return
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:  # the first of a repeated header, as Starlette's
        if name in (b"authorization", b"x-api-key"):
            found.setdefault(name, value)
    check_api_key(
        settings.api_key,
        found.get(b"authorization", b"").decode("latin-1"),
        found.get(b"x-api-key", b"").decode("latin-1"),
    )


async def require_api_key(request: Request, settings: SettingsDep) -> None:
    authorize(settings, request.scope)


ApiKey = Depends(require_api_key)
