"""The application: wiring only. The lifespan builds the registry and the batchers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from service import oip
from service.api import health, models, openapi, predict, ui, v2
from service.errors import BadRequest, ServiceError, error_answer, error_json
from service.fastpath import Service
from service.layout import Layout
from service.middleware import ClientGone, Guard
from service.oip_grpc import server as oip_grpc
from service.pool import BatcherPool
from service.registry import ModelRegistry
from service.settings import LOG_FORMAT, Settings
from service.shutdown import unready_first
from service.version import VERSION

log = logging.getLogger("mimo.service")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    layout = Layout.of(settings)  # as `python -m service` chose it for this worker
    # Each worker process builds its app here and needs its own logging set up (the
    # supervisor's is only its own). A no-op where logging is set up.
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.ready = False
        registry = ModelRegistry(
            settings.repository,
            settings.providers,
            layout.threads,  # MIMO_THREADS, or this worker's share of the cores
            settings.max_batch_size,
            layout.lone_threads,
            settings.fixed_sizes(),
        )
        report = registry.load_all()
        log.info("serving %s; refused %s", report.loaded, list(report.failed) or "none")
        app.state.registry = registry
        app.state.pool = BatcherPool(registry, settings, layout.core_per_worker)
        grpc_server = await oip_grpc.start(app.state, settings)
        app.state.ready = True  # warmed up; /v2/health/ready also needs a model to serve
        try:
            with unready_first(app.state, settings.shutdown_delay_s):
                yield
        finally:
            app.state.ready = False
            if grpc_server is not None:  # calls in flight finish, new ones are refused
                await grpc_server.stop(grace=settings.shutdown_grace_s)
            await app.state.pool.close()  # answers everything still queued

    app = Service(
        title="mimo-serve",
        version=VERSION,
        description="Uncertainty-aware image classification: MIMO ensembles on ONNX Runtime, "
        "one forward pass per image.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.ready = False

    async def error(request: Request, exc: Exception) -> Response:
        # Every error a JSON {"error"} body, 500 included (OIP clients parse it; Starlette
        # re-raises an unexpected exception for the log).
        status, message, headers = error_answer(exc)
        return Response(error_json(message), status, headers, media_type="application/json")

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return await error(request, BadRequest(f"invalid request: {problems}"))

    async def gone(request: Request, exc: Exception) -> Response:
        # The client left before its body was all sent: nobody to answer, no error of ours
        # (Guard counts the status, 499; the server drops what is sent to a closed connection).
        return Response(status_code=ClientGone.status_code)

    for kind in (ServiceError, HTTPException, Exception):
        app.add_exception_handler(kind, error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(ClientDisconnect, gone)

    for router in (predict.router, models.router, v2.router, health.router, ui.router):
        app.include_router(router)
    openapi.finish(app, settings.max_images_per_request)  # no 422: see `invalid` above
    # This service's own layers, once around everything (service/fastpath.py), innermost first.
    app.wrap(Guard, max_bytes=settings.max_body_bytes, max_seconds=settings.request_timeout_s)
    if settings.cors_origins:  # outermost: a preflight is answered before any other work
        app.wrap(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", oip.HEADER],
            expose_headers=["Retry-After", oip.HEADER],
        )
    return app
