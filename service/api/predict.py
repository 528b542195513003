"""POST /predict: images in, ensemble prediction and the heads' disagreement out."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from service import metrics
from service.deps import ApiKey, PoolDep, RegistryDep, SettingsDep
from service.encode import predict_answer
from service.errors import BadRequest, UnsupportedMediaType
from service.preprocess import ACCEPTED, is_raw_image, preprocess_all
from service.schemas import ErrorResponse, PredictResponse

router = APIRouter(tags=["predict"])

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/bmp", "image/tiff", "image/webp")
_binary = {"schema": {"type": "string", "format": "binary"}}
REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "description": "One image as the raw body, or one or more multipart `file` parts.",
        "content": {
            **{t: _binary for t in IMAGE_TYPES},
            "application/octet-stream": _binary,
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "array", "items": _binary["schema"]}},
                    "required": ["file"],
                }
            },
        },
    }
}
ERRORS = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "empty, foreign, truncated or corrupt image; bad parameters",
        401: "missing or wrong API key",
        404: "unknown model or version",
        408: "body not all received within the request timeout (the connection closes)",
        413: "body or image over the limits",
        415: "unsupported content type",
        429: "queue full (see Retry-After)",
        503: "the model is being unloaded (see Retry-After)",
        504: "no answer within the request timeout",
    }.items()
}


async def read_images(request: Request, limit: int) -> list[tuple[str | None, bytes, str | None]]:
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


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=ERRORS,
    openapi_extra=REQUEST_BODY,
    dependencies=[ApiKey],
    summary="Classify images with one forward pass and ensemble uncertainty",
)
async def predict(
    request: Request,
    registry: RegistryDep,
    pool: PoolDep,
    settings: SettingsDep,
    model: Annotated[
        str | None, Query(description="model name (default: the default model)")
    ] = None,
    version: Annotated[int | None, Query(ge=1, description="version (default: highest)")] = None,
    top_k: Annotated[int, Query(ge=1, le=1000, description="classes to list")] = 3,
    members: Annotated[bool, Query(description="include each head's prediction")] = True,
    member_probabilities: Annotated[
        bool, Query(description="include each head's probabilities over all classes")
    ] = False,
    mode: Annotated[
        Literal["ensemble", "packed"],
        Query(
            description="ensemble: one image per forward-pass row, tiled into the M slots, "
            "answered by the mean of the M heads with their disagreement. packed: M images "
            "per row, each answered by its own slot's head: up to M times the images/s when "
            "requests queue, no ensemble and no uncertainty"
        ),
    ] = "ensemble",
) -> Response:
    started = time.monotonic()
    served = registry.get(model or settings.default_model, version)
    with metrics.counted(served.labels, started):
        uploads = await read_images(request, settings.max_images_per_request)
        if len(uploads) > settings.max_images_per_request:
            raise BadRequest(
                f"{len(uploads)} images in one request; the limit is "
                f"{settings.max_images_per_request} (MIMO_MAX_IMAGES_PER_REQUEST)"
            )
        images = await preprocess_all(
            [(data, ctype) for _, data, ctype in uploads],
            served.contract.preprocess,
            settings.max_image_pixels,
        )
        rows = await pool.infer(served, images, started, packed=mode == "packed")
    body = predict_answer(
        served, rows, [u[0] for u in uploads], top_k, members, member_probabilities
    )
    return Response(body, media_type="application/json")
