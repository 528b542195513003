"""POST /predict with one raw image and plain parameters, served before FastAPI's own layers
(its OpenTelemetry check, body limit, error middleware, routing, dependency injection): the
request most clients send, through the same stages as the route (service/api/predict.py),
inside this service's own middleware (CORS, metrics, body limit, timeouts). Anything else
(multipart, an unusual or invalid parameter, another content type) goes through FastAPI to
the route, which gives the full validation and its error messages.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import parse_qsl

from fastapi import FastAPI
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from service import metrics
from service.auth import check_api_key
from service.encode import predict_answer
from service.errors import ServiceError
from service.middleware import BodyLimitError, send_error, send_json
from service.preprocess import is_raw_image, preprocess_all

log = logging.getLogger("mimo.service")
_BOOLS = {"true": True, "false": False, "1": True, "0": False}


def plain_parameters(query: bytes) -> dict | None:
    """The route's query parameters when every one is present at most once and valid; None
    sends the request on to the route (which validates and words the errors)."""
    values = {
        "model": None,
        "version": None,
        "top_k": 3,
        "members": True,
        "member_probabilities": False,
        "mode": "ensemble",
    }
    seen = set()
    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if key not in values or key in seen:
            return None
        seen.add(key)
        if key == "model":
            values[key] = value
        elif key in ("version", "top_k"):
            # ASCII digits only ("²" is a digit to str.isdigit, not to int)
            if not (value.isascii() and value.isdigit() and len(value) <= 9):
                return None
            if not 1 <= int(value) <= (1000 if key == "top_k" else 10**9):
                return None
            values[key] = int(value)
        elif key in ("members", "member_probabilities"):
            if value.lower() not in _BOOLS:
                return None
            values[key] = _BOOLS[value.lower()]
        elif value in ("ensemble", "packed"):
            values[key] = value
        else:
            return None
    return values


def fast_request(scope: Scope) -> tuple[dict, str, dict[bytes, bytes]] | None:
    """(parameters, content type, headers) of a POST /predict that the fast path serves; None
    for any other request."""
    if scope["type"] != "http" or scope["path"] != "/predict" or scope["method"] != "POST":
        return None
    headers = dict(scope["headers"])
    ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower().decode("latin-1")
    if not is_raw_image(ctype):
        return None
    params = plain_parameters(scope["query_string"])
    return None if params is None else (params, ctype, headers)


class Service(FastAPI):
    """The FastAPI application, but the requests `fast_request` accepts go to `fast` (this
    service's middleware around `fast_predict`) without passing through FastAPI's layers.
    Middleware added to the app after create_app (an OpenTelemetry instrumentation, say) does
    not see those requests: wrap the whole app instead."""

    fast: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast is not None and (found := fast_request(scope)) is not None:
            scope["app"] = self
            scope[_KEY] = found
            await self.fast(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


_KEY = "mimo.fast_predict"


async def fast_predict(scope: Scope, receive: Receive, send: Send) -> None:
    """Serve a request `fast_request` accepted (Service put its answer in the scope)."""
    params, ctype, headers = scope[_KEY]
    started = time.monotonic()
    state = scope["app"].state
    settings, registry, pool = state.settings, state.registry, state.pool
    try:
        check_api_key(
            settings.api_key,
            headers.get(b"authorization", b"").decode("latin-1"),
            headers.get(b"x-api-key", b"").decode("latin-1"),
        )
        served = registry.get(params["model"] or settings.default_model, params["version"])
        with metrics.counted(served.labels, started):
            chunks = []
            while True:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            data = b"".join(chunks)
            images = await preprocess_all(
                [(data, ctype)], served.contract.preprocess, settings.max_image_pixels
            )
            rows = await pool.infer(served, images, started, packed=params["mode"] == "packed")
        body = predict_answer(
            served,
            rows,
            [None],
            params["top_k"],
            params["members"],
            params["member_probabilities"],
        )
    except ServiceError as exc:
        extra = [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
        await send_error(send, exc.status_code, exc.message, extra)
        return
    except (ClientDisconnect, BodyLimitError):
        raise  # the body limit middleware answers these (413, 408, 499)
    except Exception as exc:  # as the app's own handler: JSON, the details in the log
        log.exception("POST /predict failed")
        await send_error(send, 500, f"internal error ({type(exc).__name__}); see the log")
        return
    await send_json(send, 200, body)
