"""POST /predict: images in, ensemble prediction and the heads' disagreement out."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from service import metrics
from service.api.openapi import errors
from service.deps import ApiKey, AppState, StateDep
from service.encode import predict_answer
from service.errors import BadRequest, UnsupportedMediaType
from service.parameters import PredictParameters
from service.preprocess import ACCEPTED, MEDIA_TYPES, is_raw_image, preprocess_all
from service.schemas import PredictResponse

router = APIRouter(tags=["predict"])

_binary = {"schema": {"type": "string", "format": "binary"}}
REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "description": "One image as the raw body, or one or more multipart `file` parts.",
        "content": {
            **{t: _binary for t in MEDIA_TYPES},
            "application/octet-stream": _binary,
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "array", "items": _binary["schema"], "minItems": 1}
                    },
                    "required": ["file"],
                }
            },
        },
    }
}
ERRORS = errors(
    400,
    401,
    404,
    408,
    413,
    415,
    429,
    503,
    504,
    e400="empty, foreign, truncated or corrupt image; bad parameters",
    e413="body or image over the limits",
    e503="the model is being unloaded (see Retry-After)",
)


# (filename, bytes, content type) of one image of a request
Upload = tuple[str | None, bytes, str | None]


async def read_images(request: Request, limit: int) -> list[Upload]:
    """(filename, bytes, content type) of every image in the request."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        try:
            form = await request.form(max_files=limit, max_fields=limit)
        except HTTPException as exc:  # Starlette's parser: too many parts, or malformed
            if str(exc.detail).startswith("Too many"):
                raise BadRequest(
                    f"more than {limit} parts in one request; the limit is {limit} "
                    "(MIMO_MAX_IMAGES_PER_REQUEST): send fewer images, each a part named `file`"
                ) from None
            raise BadRequest(
                f"malformed multipart body: {exc.detail} Send each image as a part named `file`"
            ) from None
        try:
            files = [f for f in form.getlist("file") if isinstance(f, UploadFile)]
            if not files:
                raise BadRequest(
                    f"multipart body without a `file` part: send each image as a part named "
                    f"`file` (fields found: {sorted(set(form.keys())) or 'none'})"
                )
            return [(f.filename, await f.read(), f.content_type) for f in files]
        finally:
            await form.close()
    if is_raw_image(content_type):
        return [(None, await request.body(), content_type)]
    raise UnsupportedMediaType(
        f"unsupported content type {content_type or '(none)'!r}: send one image as the raw body "
        f"with an image/* content type ({ACCEPTED}), or images as multipart/form-data `file` parts"
    )


async def serve(
    state: AppState, params: PredictParameters, read: Callable[[int], Awaitable[list[Upload]]]
) -> bytes:
    """The JSON answer of POST /predict, from its parsed parameters and `read`, which gives the
    request's images (at most the given number): the route and the fast path both end here."""
    started = time.monotonic()
    settings = state.settings
    served = state.registry.get(params.model or settings.default_model, params.version)
    limit = settings.max_images_per_request
    with metrics.counted(served.series, started):
        uploads = await read(limit)
        if len(uploads) > limit:
            raise BadRequest(
                f"{len(uploads)} images in one request; the limit is {limit} "
                "(MIMO_MAX_IMAGES_PER_REQUEST)"
            )
        images = await preprocess_all(
            [(data, ctype) for _, data, ctype in uploads],
            served.contract.preprocess,
            settings.max_image_pixels,
        )
        rows = await state.pool.infer(served, images, started, packed=params.packed)
    return predict_answer(served, rows, [name for name, _, _ in uploads], params)


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=ERRORS,
    openapi_extra=REQUEST_BODY,
    dependencies=[ApiKey],
    summary="Classify images with one forward pass and ensemble uncertainty",
)
async def predict(
    request: Request, state: StateDep, params: Annotated[PredictParameters, Query()]
) -> Response:
    body = await serve(state, params, lambda limit: read_images(request, limit))
    return Response(body, media_type="application/json")
