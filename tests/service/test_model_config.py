"""Triton's model-configuration extension over HTTP and gRPC: `python -m service` on real
sockets, read with the real tritonclient (HTTP and gRPC), as Triton's tools read it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from fastapi.testclient import TestClient
from support import serve_with_grpc
from tritonclient.utils import InferenceServerException

from service.main import create_app
from service.model_config import config, output_config
from service.registry import ModelRegistry
from service.settings import Settings


@pytest.fixture(scope="module")
def server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of HTTP, then of gRPC: two workers, a batch limit of 16, a 2 ms delay."""
    log = tmp_path_factory.mktemp("config-server") / "server.log"
    process, where = serve_with_grpc(
        model_repository,
        log,
        MIMO_WORKERS="2",
        MIMO_MAX_BATCH_SIZE="16",
        MIMO_MAX_QUEUE_DELAY_MS="2",
    )
    try:
        yield f"{where.http.removeprefix('http://')} {where.grpc}"
    finally:
        process.stop()


def test_http_config_is_tritons_for_the_model(server: str) -> None:
    http, _ = server.split()
    client = triton_http.InferenceServerClient(http)
    config = client.get_model_config("digits")
    assert config == client.get_model_config("digits", "1")
    assert config["name"] == "digits"
    assert config["platform"] == "onnxruntime_onnx" and config["backend"] == "onnxruntime"
    assert config["max_batch_size"] == 16  # MIMO_MAX_BATCH_SIZE
    assert config["version_policy"] == {"all": {}}
    # Triton's convention with max_batch_size > 0: no batch dimension
    assert config["input"] == [
        {"name": "images", "data_type": "TYPE_FP32", "format": "FORMAT_NCHW", "dims": [1, 8, 8]}
    ]
    outputs = {o["name"]: o for o in config["output"]}
    assert outputs["probabilities"] == {
        "name": "probabilities",
        "data_type": "TYPE_FP32",
        "dims": [10],
    }
    assert outputs["member_probabilities"]["dims"] == [3, 10]
    assert outputs["uncertain"] == {
        "name": "uncertain",
        "data_type": "TYPE_BOOL",
        "dims": [1],
        "reshape": {"shape": []},
    }
    assert outputs["head"]["data_type"] == "TYPE_INT32"
    # the outputs are the metadata's, in its order
    metadata = client.get_model_metadata("digits")
    assert list(outputs) == [o["name"] for o in metadata["outputs"]]
    assert config["dynamic_batching"] == {
        "preferred_batch_size": [],  # (sizes are fixed on GPUs only)
        "max_queue_delay_microseconds": 2000,
    }
    assert config["instance_group"] == [{"name": "digits", "kind": "KIND_CPU", "count": 2}]
    assert config["default_model_filename"] == "model.onnx"
    # The MIMO facts, where a Triton user looks: the metadata's parameters, as strings.
    parameters = {k: v["string_value"] for k, v in config["parameters"].items()}
    assert parameters["ensemble_size"] == "3"
    assert parameters["labels"] == '["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]'
    assert parameters["uncertain_measure"] == metadata["parameters"]["uncertain_measure"]
    assert parameters["provider"] == "cpu"
    assert parameters["max_images_per_request"] == "64"
    assert set(metadata["parameters"]) <= set(parameters)


def test_grpc_config_is_the_http_config(server: str) -> None:
    http, grpc = server.split()
    rest = triton_http.InferenceServerClient(http).get_model_config("digits")
    client = triton_grpc.InferenceServerClient(grpc)
    answer = client.get_model_config("digits", as_json=True)["config"]
    # protobuf's JSON writes 64-bit integers as strings and leaves out what is empty or 0
    answer["input"][0]["dims"] = [int(d) for d in answer["input"][0]["dims"]]
    for output in answer["output"]:
        output["dims"] = [int(d) for d in output["dims"]]
        if "reshape" in output:
            output["reshape"].setdefault("shape", [])
    answer["dynamic_batching"]["max_queue_delay_microseconds"] = int(
        answer["dynamic_batching"]["max_queue_delay_microseconds"]
    )
    answer["dynamic_batching"].setdefault("preferred_batch_size", [])
    assert answer == rest
    # the parsed message, as perf_analyzer reads it
    message = client.get_model_config("digits", "1").config
    assert message.max_batch_size == 16 and list(message.input[0].dims) == [1, 8, 8]
    assert message.WhichOneof("scheduling_choice") == "dynamic_batching"


def test_unknown_model_and_version(server: str) -> None:
    http, grpc = server.split()
    for path, why in (
        ("/v2/models/nope/config", "unknown model 'nope'"),
        ("/v2/models/digits/versions/7/config", "has no version 7"),
        ("/v2/models/digits/versions/x/config", "positive integer"),
    ):
        response = httpx.get(f"http://{http}{path}")
        assert response.status_code == 404, path
        assert why in response.json()["error"]
    client = triton_grpc.InferenceServerClient(grpc)
    with pytest.raises(InferenceServerException, match="has no version 7") as error:
        client.get_model_config("digits", "7")
    assert error.value.status() == "StatusCode.NOT_FOUND"


def test_server_metadata_names_the_extensions(server: str) -> None:
    http, grpc = server.split()
    extensions = triton_http.InferenceServerClient(http).get_server_metadata()["extensions"]
    assert {"model_configuration", "statistics"} <= set(extensions)
    grpc_meta = triton_grpc.InferenceServerClient(grpc).get_server_metadata(as_json=True)
    assert grpc_meta["extensions"] == extensions


def test_needs_the_api_key(model_repository: Path) -> None:
    settings = Settings(repository=model_repository, default_model="digits", api_key="k3y")
    with TestClient(create_app(settings)) as client:
        for path in ("/v2/models/digits/config", "/v2/models/stats"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers={"x-api-key": "k3y"}).status_code == 200, path


def test_fixed_batch_sizes_are_the_preferred_ones(model_repository: Path) -> None:
    """Where passes run at fixed sizes (GPUs, or MIMO_FIXED_BATCH_SIZES=on), the dynamic
    batcher's preferred sizes are those."""
    settings = Settings(repository=model_repository, max_batch_size=8, fixed_batch_sizes="on")
    registry = ModelRegistry(
        settings.repository, "cpu", 1, settings.max_batch_size, 0, settings.fixed_sizes()
    )
    registry.load_all()
    batching = config(registry, "digits", None, settings)["dynamic_batching"]
    assert batching["preferred_batch_size"] == [1, 2, 4, 8]


def test_output_config() -> None:
    one_per_image = {"name": "u", "datatype": "BOOL", "shape": [-1]}
    assert output_config(one_per_image) == {
        "name": "u",
        "data_type": "TYPE_BOOL",
        "dims": [1],
        "reshape": {"shape": []},
    }
    rows = {"name": "p", "datatype": "FP32", "shape": [-1, 3, 10]}
    assert output_config(rows) == {"name": "p", "data_type": "TYPE_FP32", "dims": [3, 10]}
