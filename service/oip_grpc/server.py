"""`inference.GRPCInferenceService` on its own port, in the event loop of the HTTP server.

It shares everything with HTTP: the registry, the batchers (a gRPC and an HTTP request can
ride in one forward pass), the OIP model (service/oip_model.py), the API key, the metrics
(`endpoint` is `grpc:<method>`, `status` the HTTP code of the same outcome so that alerts and
dashboards count both) and the errors, mapped to gRPC status codes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from google.protobuf.message import Message
from starlette.datastructures import State

from service import metrics, model_config, oip, oip_model
from service.api.health import not_ready
from service.auth import check_api_key
from service.errors import BadRequest, ServiceError, internal_error
from service.oip_grpc import mimo_inference_pb2 as pb
from service.settings import Settings
from service.statistics import statistics

log = logging.getLogger("mimo.grpc")

SERVICE = "inference.GRPCInferenceService"
# HTTP status of a ServiceError -> the gRPC code that says the same.
STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
# Where InferTensorContents keeps the values of each datatype (of service.oip.DTYPES; a test
# checks that the two name the same datatypes).
CONTENTS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def inputs_of(request: pb.ModelInferRequest) -> dict[str, tuple[str, np.ndarray]]:
    """The request's tensors by name: from `raw_input_contents` when present, else `contents`."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: send one entry "
            "per input, in order, or none and the values in `contents`"
        )
    inputs: dict[str, tuple[str, np.ndarray]] = {}
    for i, spec in enumerate(request.inputs):
        field = CONTENTS.get(spec.datatype)
        data = list(getattr(spec.contents, field)) if field and not raw else None
        array = oip.tensor(
            spec.name, spec.datatype, list(spec.shape), raw[i] if raw else None, data
        )
        inputs[spec.name] = (spec.datatype, array)
    return inputs


def parameters_of(request: pb.ModelInferRequest) -> dict[str, Any]:
    """The request's parameters as Python values (None for one with no value set)."""
    return {
        name: getattr(value, field) if (field := value.WhichOneof("parameter_choice")) else None
        for name, value in request.parameters.items()
    }


def response_of(
    model_name: str, version: int, request_id: str, tensors: dict[str, np.ndarray]
) -> pb.ModelInferResponse:
    """Every output as raw little-endian bytes, as Triton answers."""
    response = pb.ModelInferResponse(
        model_name=model_name, model_version=str(version), id=request_id
    )
    for name, array in tensors.items():
        response.outputs.add(name=name, datatype=oip.datatype_of(array), shape=array.shape)
        response.raw_output_contents.append(np.ascontiguousarray(array).tobytes())
    return response


def metadata_response(meta: dict[str, Any]) -> pb.ModelMetadataResponse:
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=meta["name"],
        versions=meta["versions"],
        platform=meta["platform"],
        inputs=[tensor(**spec) for spec in meta["inputs"]],
        outputs=[tensor(**spec) for spec in meta["outputs"]],
    )


class InferenceServicer:
    """The eight calls; each reads what the HTTP app's lifespan built from `state`."""

    def __init__(self, state: State, settings: Settings) -> None:
        self.state = state
        self.settings = settings

    def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        headers = dict(context.invocation_metadata() or ())
        check_api_key(
            self.settings.api_key, headers.get("authorization", ""), headers.get("x-api-key", "")
        )

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> Message:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> Message:
        return pb.ServerReadyResponse(ready=not_ready(self.state) is None)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> Message:
        self.state.registry.get(request.name, oip_model.parse_version(request.version))
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> Message:
        return pb.ServerMetadataResponse(**oip_model.SERVER)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> Message:
        self._authorize(context)
        meta = oip_model.metadata(self.state.registry, request.name, request.version)
        return metadata_response(meta)

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> Message:
        self._authorize(context)
        config = model_config.config(
            self.state.registry, request.name, request.version, self.settings
        )
        return pb.ModelConfigResponse(config=json_format.ParseDict(config, pb.ModelConfig()))

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Any) -> Message:
        self._authorize(context)
        models = oip_model.versions_of(self.state.registry, request.name, request.version)
        return json_format.ParseDict(statistics(models), pb.ModelStatisticsResponse())

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> Message:
        started = time.monotonic()
        self._authorize(context)
        # Not ready (draining after SIGTERM) still answers, as HTTP does: readiness tells
        # balancers to stop sending, it refuses nobody.
        model = self.state.registry.get(
            request.model_name, oip_model.parse_version(request.model_version)
        )
        with metrics.counted(model.series, started):
            tensors = await oip_model.infer(
                model,
                self.state.pool,
                inputs_of(request),
                [o.name for o in request.outputs] or None,
                self.settings.max_images_per_request,
                started,
                parameters_of(request),
            )
        return response_of(model.name, model.version, request.id, tensors)


Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Message]]


def _instrumented(method: str, call: Handler) -> Handler:
    """Metrics and the error mapping around one call: a ServiceError becomes its status code
    and message (plus `retry-after` for 429/503), anything else INTERNAL without details."""
    endpoint = f"grpc:{method}"

    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Message:
        record = metrics.RequestRecord(endpoint)
        try:
            answer = await call(request, context)
            record.status = 200
            return answer
        except ServiceError as exc:
            record.status = exc.status_code
            if "Retry-After" in exc.headers:
                context.set_trailing_metadata((("retry-after", exc.headers["Retry-After"]),))
            code = STATUS_CODES.get(exc.status_code, grpc.StatusCode.INVALID_ARGUMENT)
            await context.abort(code, exc.message)
            raise  # abort raises; this line is never reached
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            log.exception("%s failed", endpoint)
            await context.abort(grpc.StatusCode.INTERNAL, internal_error(exc))
            raise
        finally:
            record.done()

    return handle


METHODS: dict[str, tuple[type[Message], type[Message]]] = {
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
    "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
    "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse),
    "ModelConfig": (pb.ModelConfigRequest, pb.ModelConfigResponse),
    "ModelStatistics": (pb.ModelStatisticsRequest, pb.ModelStatisticsResponse),
}


def handlers(servicer: InferenceServicer) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            name: grpc.unary_unary_rpc_method_handler(
                _instrumented(name, getattr(servicer, name)),
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
            for name, (request, response) in METHODS.items()
        },
    )


class GrpcError(RuntimeError):
    pass


async def start(state: State, settings: Settings) -> grpc.aio.Server | None:
    """Listen on MIMO_GRPC_PORT (None when it is 0). Several workers share the port."""
    if not settings.grpc_port:
        return None
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", -1),
            # Off with one process, so that a second server on the same port fails loudly
            # instead of quietly taking half the connections.
            ("grpc.so_reuseport", int(settings.workers > 1)),
        ]
    )
    server.add_generic_rpc_handlers((handlers(InferenceServicer(state, settings)),))
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    address = f"{host}:{settings.grpc_port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:
        raise GrpcError(
            f"cannot listen for gRPC on {address} ({exc}): is another server on that port? "
            "Set MIMO_GRPC_PORT to a free port, or 0 for no gRPC"
        ) from None
    await server.start()
    log.info("Open Inference Protocol gRPC on %s", address)
    return server
