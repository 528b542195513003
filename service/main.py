"""The application: wiring only. The lifespan builds the registry and the batchers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from service import oip
from service.api import health, models, predict, ui, v2
from service.api.openapi import without_422
from service.errors import ServiceError
from service.fastpath import Service, fast_predict
from service.middleware import Guard
from service.oip_grpc import server as oip_grpc
from service.pool import BatcherPool
from service.registry import ModelRegistry
from service.settings import LOG_FORMAT, Settings
from service.shutdown import unready_first

log = logging.getLogger("mimo.service")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    # Each worker process builds its app here: without this its own log lines were lost
    # (the supervisor configured logging only for itself). A no-op where logging is set up.
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.ready = False
        registry = ModelRegistry(
            settings.repository,
            settings.providers,
            settings.threads,
            settings.max_batch_size,
            settings.lone_layout(),
            settings.fixed_sizes(),
        )
        report = registry.load_all()
        log.info("serving %s; refused %s", report.loaded, list(report.failed) or "none")
        app.state.registry = registry
        app.state.pool = BatcherPool(registry, settings)
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
        version="0.1.0",
        description="Uncertainty-aware image classification: MIMO ensembles on ONNX Runtime, "
        "one forward pass per image.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.ready = False

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return JSONResponse({"error": f"invalid request: {problems}"}, 400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Still a JSON {"error"} body (OIP clients parse it); Starlette re-raises for the log.
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the log"}, 500)

    for router in (predict.router, models.router, v2.router, health.router, ui.router):
        app.include_router(router)
    without_422(app)  # request validation errors answer 400 (`invalid` above)
    limits = {"max_bytes": settings.max_body_bytes, "max_seconds": settings.request_timeout_s}
    app.add_middleware(Guard, **limits)
    # /predict's common request skips FastAPI's layers but not this one (service/fastpath.py)
    app.fast = Guard(fast_predict, **limits)
    if settings.cors_origins:  # outermost: a preflight is answered before any other work
        cors = {
            "allow_origins": settings.cors_origins,
            "allow_methods": ["GET", "POST"],
            "allow_headers": ["Authorization", "Content-Type", "X-API-Key", oip.HEADER],
            "expose_headers": ["Retry-After", oip.HEADER],
        }
        app.add_middleware(CORSMiddleware, **cors)
        app.fast = CORSMiddleware(app.fast, **cors)
    return app
