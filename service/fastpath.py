"""POST /predict with one raw image and valid parameters, served before FastAPI's exception
layer, routing and dependency injection: the request most clients send, answered by the same
function as the route (service/api/predict.py `serve`), inside the same middleware (errors,
CORS, metrics, body limit, timeouts). Anything else (multipart, a repeated or invalid
parameter, another content type) goes on to the route, which words the validation errors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI
from pydantic import ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.predict import Upload, serve
from service.deps import authorize, state_of
from service.errors import ServiceError, error_answer
from service.middleware import send_error, send_json
from service.parameters import DEFAULTS, PredictParameters
from service.preprocess import is_raw_image

log = logging.getLogger("mimo.service")


def plain_parameters(query: bytes) -> PredictParameters | None:
    """The route's query parameters when each is present at most once and all are valid (the
    route's own model validates them); None sends the request on to the route."""
    if not query:
        return DEFAULTS
    values: dict[str, str] = {}
    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if key in values:
            return None
        values[key] = value
    try:
        return PredictParameters.model_validate(values)
    except ValidationError:
        return None


def fast_request(scope: Scope) -> tuple[PredictParameters, str] | None:
    """(parameters, content type) of a POST /predict that the fast path serves; None for any
    other request."""
    if scope["type"] != "http" or scope["path"] != "/predict" or scope["method"] != "POST":
        return None
    ctype = b""
    for name, value in scope["headers"]:
        if name == b"content-type":
            ctype = value
    content_type = ctype.split(b";")[0].strip().lower().decode("latin-1")
    if not is_raw_image(content_type):
        return None
    params = plain_parameters(scope["query_string"])
    return None if params is None else (params, content_type)


class Service(FastAPI):
    """The FastAPI application behind this service's own middleware (`wrap`), which every
    request passes once; from there the requests `fast_request` accepts go to `fast_predict`,
    past FastAPI's own layers (its telemetry check, body limit, error middleware, routing,
    dependency injection), the others to the routes. Middleware added with `add_middleware`
    (an OpenTelemetry instrumentation, say) does not see the fast requests: wrap the whole app
    instead."""

    front: ASGIApp | None = None

    def wrap(self, layer: Callable[..., ASGIApp], **options: Any) -> None:
        """Put `layer` around everything so far (the first wrapped is the innermost)."""
        self.front = layer(self.front or self._dispatch, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await (self.front or self._dispatch)(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = fast_request(scope)
        if found is None:
            await super().__call__(scope, receive, send)
        else:
            scope["app"] = self
            await fast_predict(scope, *found, receive, send)


async def fast_predict(
    scope: Scope, params: PredictParameters, content_type: str, receive: Receive, send: Send
) -> None:
    """Serve a request `fast_request` accepted; errors answered as the app's handlers do."""
    state = state_of(scope)

    async def read(limit: int) -> list[Upload]:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        return [(None, b"".join(chunks), content_type)]

    try:
        authorize(state.settings, scope)
        body = await serve(state, params, read)
    except ClientDisconnect:
        raise  # nobody to answer (Guard counts it)
    except Exception as exc:
        if not isinstance(exc, ServiceError):
            log.exception("POST /predict failed")
        status, message, headers = error_answer(exc)
        extra = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        await send_error(send, status, message, extra)
        return
    await send_json(send, 200, body)
