"""What the OpenAPI schema says beyond the routes' signatures: every error answer a route can
give, the Open Inference Protocol bodies (the infer routes read their body raw), and no 422.

Every error is `{"error": "..."}` (service.schemas.ErrorResponse); request validation errors
answer 400, never FastAPI's 422 (service.main), so the schema must not promise a 422 either.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from service import oip
from service.oip import DTYPES
from service.oip_model import INPUT_DATATYPES
from service.parameters import DEFAULTS, MODES
from service.registry import NAME_PATTERN
from service.schemas import ErrorResponse

TEXT = {
    400: "malformed request: says what was wrong and what is accepted",
    401: "missing or wrong API key (with MIMO_API_KEY set)",
    403: "repository control is off (MIMO_MODEL_CONTROL=none)",
    404: "unknown model or version",
    408: "body not all received within MIMO_REQUEST_TIMEOUT_S (the connection closes)",
    409: "repository control refused: MIMO_WORKERS > 1 (each worker holds its own models)",
    413: "body over MIMO_MAX_BODY_BYTES",
    415: "unsupported content type",
    429: "queue full (see Retry-After)",
    503: "not ready, or the model is being unloaded (retry)",
    504: "no answer within MIMO_REQUEST_TIMEOUT_S",
}


def errors(*codes: int, **texts: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route: these error statuses, each an ErrorResponse.

    `texts` overrides a description by status (`e404="..."`)."""
    return {
        code: {"model": ErrorResponse, "description": texts.get(f"e{code}", TEXT[code])}
        for code in codes
    }


# --- the Open Inference Protocol (KServe v2) bodies ---------------------------------------------

_OUTPUT_PARAMETERS = {
    "type": "object",
    "properties": {"binary_data": {"type": "boolean", "description": "answer it as binary"}},
}
INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "description": "One input `images` [N, C, H, W]: FP32 pixels in [0, 1] or UINT8 pixels.",
    "properties": {
        "id": {"type": "string", "description": "echoed in the answer"},
        "parameters": {
            "type": "object",
            "properties": {
                "binary_data_output": {
                    "type": "boolean",
                    "description": "answer every output as binary unless it says otherwise",
                },
                "mode": {
                    "type": "string",
                    "enum": list(MODES),
                    "default": DEFAULTS.mode,
                    "description": "ensemble: each image tiled into the M slots, answered by "
                    "the heads' mean and their uncertainty. packed: M images per forward pass, "
                    "each answered by its own slot's head; outputs `probabilities` and `head` "
                    "only (the model metadata's parameters.modes lists each mode's outputs)",
                },
            },
        },
        "inputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "shape", "datatype"],
                "properties": {
                    "name": {"type": "string", "examples": ["images"]},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "datatype": {"type": "string", "enum": list(INPUT_DATATYPES)},
                    "data": {
                        "type": "array",
                        "description": "the values in row-major order, flat or nested; "
                        "absent when parameters.binary_data_size is given",
                    },
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "binary_data_size": {
                                "type": "integer",
                                "minimum": 0,
                                "description": "bytes of this tensor after the JSON header",
                            }
                        },
                    },
                },
            },
        },
        "outputs": {
            "type": "array",
            "description": "outputs to answer (default: all of the mode's)",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": _OUTPUT_PARAMETERS},
            },
        },
    },
}
INFER_RESPONSE = {
    "type": "object",
    "required": ["model_name", "model_version", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "datatype", "shape"],
                "properties": {
                    "name": {"type": "string"},
                    "datatype": {"type": "string", "enum": list(DTYPES)},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "data": {"type": "array"},
                    "parameters": {
                        "type": "object",
                        "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
                    },
                },
            },
        },
    },
}
_HEADER_LENGTH = oip.HEADER_NAME
_BINARY = {
    "schema": {"type": "string", "format": "binary"},
}
INFER = {
    "parameters": [
        {
            "name": _HEADER_LENGTH,
            "in": "header",
            "required": False,
            "description": "binary tensor extension: the body is this many bytes of JSON "
            "request, then the raw little-endian bytes of each input with binary_data_size",
            "schema": {"type": "string", "pattern": f"^{oip.DIGITS.pattern}$"},
        }
    ],
    "requestBody": {
        "required": True,
        "description": "An inference request. The tensor must also fit the model (GET "
        "/v2/models/{name}: one input `images` of that shape and an input datatype); one that "
        "does not is refused with 400, which no schema can say for every model at once.",
        "content": {
            "application/json": {"schema": INFER_REQUEST},
            "application/octet-stream": {
                "schema": {
                    **_BINARY["schema"],
                    "description": f"the binary tensor extension: {_HEADER_LENGTH} bytes of "
                    "JSON request (as application/json, each input with "
                    "parameters.binary_data_size and no data), then those inputs' bytes in order",
                }
            },
        },
    },
    "responses": {
        "200": {
            "description": "the outputs: JSON, or JSON and binary tensors when any output is "
            f"binary (`application/octet-stream`, split by {_HEADER_LENGTH})",
            "content": {
                "application/json": {"schema": INFER_RESPONSE},
                "application/octet-stream": _BINARY,
            },
        }
    },
}


def finish(app: FastAPI, max_images: int) -> None:
    """Serve the app's schema without FastAPI's automatic 422 (this service answers 400), and
    with this server's limit on the images of one /predict request (MIMO_MAX_IMAGES_PER_REQUEST)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()  # cached on app.openapi_schema, edited in place once
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
            models = schema.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                models.pop(name, None)
            body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
            body["multipart/form-data"]["schema"]["properties"]["file"]["maxItems"] = max_images
            for url, path in schema.get("paths", {}).items():
                if url.startswith("/v2/repository/models/{name}/"):  # names the registry loads
                    for operation in path.values():
                        for parameter in operation.get("parameters", []):
                            if parameter["name"] == "name":
                                parameter["schema"]["pattern"] = f"^{NAME_PATTERN.pattern}$"
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
