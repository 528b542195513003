"""Triton's model-configuration extension: a served model's configuration as Triton's
`config.pbtxt` would hold it, built from what the service knows (the model's contract, its
provider and the settings), for Triton's tools (perf_analyzer, model_analyzer) and users.

One dict in Triton's JSON form: REST answers it as it is, gRPC parses it into ModelConfig.
"""

from __future__ import annotations

import json
from typing import Any

from service.layout import Layout
from service.oip_model import INPUT, PLATFORM, metadata, output_specs, parse_version
from service.registry import ModelRegistry, ServedModel
from service.settings import Settings

BACKEND = "onnxruntime"
FILENAME = "model.onnx"


def triton_type(datatype: str) -> str:
    """The protocol's tensor datatype ("FP32") as Triton's configuration names it."""
    return f"TYPE_{datatype}"


def instance_kind(provider: str) -> str:
    return "KIND_CPU" if provider == "cpu" else "KIND_GPU"


def output_config(spec: dict[str, Any]) -> dict[str, Any]:
    """An output's configuration: its dims without the batch dimension. A tensor of one value
    per image ([batch]) is dims [1] reshaped to [], as Triton writes it."""
    dims = spec["shape"][1:]
    config: dict[str, Any] = {
        "name": spec["name"],
        "data_type": triton_type(spec["datatype"]),
        "dims": dims or [1],
    }
    if not dims:
        config["reshape"] = {"shape": []}
    return config


def parameters(metadata: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The model metadata's `parameters` (the MIMO facts) as Triton's string parameters:
    strings as they are, anything else as JSON."""
    return {
        key: {"string_value": value if isinstance(value, str) else json.dumps(value)}
        for key, value in metadata["parameters"].items()
    }


def model_config(
    model: ServedModel, metadata: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    """The configuration of `model` (`metadata`: its OIP metadata, oip_model.metadata)."""
    workers = Layout.of(settings).workers
    return {
        "name": model.name,
        "platform": PLATFORM,
        "backend": BACKEND,
        # every version in the repository is served
        "version_policy": {"all": {}},
        "max_batch_size": settings.max_batch_size,
        "input": [
            {
                "name": INPUT,
                "data_type": triton_type("FP32"),
                "format": "FORMAT_NCHW",
                "dims": list(model.contract.input_shape),
            }
        ],
        "output": [output_config(spec) for spec in output_specs(model)],
        "dynamic_batching": {
            # the batch sizes the forward passes run at, where they are fixed (GPUs)
            "preferred_batch_size": sorted(model.fixed),
            "max_queue_delay_microseconds": round(settings.max_queue_delay_ms * 1000),
        },
        # one session of the model in each worker process
        "instance_group": [
            {"name": model.name, "kind": instance_kind(model.provider), "count": workers}
        ],
        "default_model_filename": FILENAME,
        "parameters": parameters(metadata)
        | {"max_images_per_request": {"string_value": str(settings.max_images_per_request)}},
    }


def config(
    registry: ModelRegistry, name: str, version: str | None, settings: Settings
) -> dict[str, Any]:
    """The configuration of a served model version (the highest when `version` is None or
    empty); 404 for one not served."""
    model = registry.get(name, parse_version(version))
    return model_config(model, metadata(registry, name, version), settings)
