"""The Open Inference Protocol over gRPC: `python -m service` on real sockets, the real
`tritonclient.grpc` (binary tensors) and a plain grpc channel for the `contents` encoding."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.http as triton_http
from support import (
    ROOT,
    Endpoints,
    failed_start,
    free_port,
    serve_with_grpc,
    service_env,
)
from tritonclient.utils import InferenceServerException

from service.oip_grpc import mimo_inference_pb2 as pb
from service.oip_grpc.server import SERVICE as SERVICE_NAME

OUTPUTS = [
    "probabilities",
    "member_probabilities",
    "predictive_entropy",
    "expected_entropy",
    "mutual_information",
    "disagreement",
    "variance",
    "kl_to_mean",
    "uncertain",
]


@pytest.fixture(scope="module")
def server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    log = tmp_path_factory.mktemp("grpc-server") / "server.log"
    process, where = serve_with_grpc(model_repository, log)
    try:
        yield where
    finally:
        process.stop()


@pytest.fixture(scope="module")
def client(server: Endpoints) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(server.grpc)
    yield c
    c.close()


def infer(
    client: triton.InferenceServerClient, array: np.ndarray, datatype: str, **kwargs: object
) -> dict[str, np.ndarray]:
    tensor = triton.InferInput("images", list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    result = client.infer("digits", [tensor], **kwargs)
    return {o.name: result.as_numpy(o.name) for o in result.get_response().outputs}


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("digits")
    assert client.is_model_ready("digits", "1")
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "mimo-serve"
    assert "binary_tensor_data" in server["extensions"]
    meta = client.get_model_metadata("digits", as_json=True)
    assert meta["versions"] == ["1"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [
        {"name": "images", "datatype": "FP32", "shape": ["-1", "1", "8", "8"]}
    ]
    assert [o["name"] for o in meta["outputs"]] == [*OUTPUTS, "head"]
    assert meta["outputs"][-1] == {"name": "head", "datatype": "INT32", "shape": ["-1"]}


def test_metadata_is_the_rest_metadata(
    client: triton.InferenceServerClient, server: Endpoints
) -> None:
    rest = httpx.get(f"{server.http}/v2/models/digits").json()
    grpc_meta = client.get_model_metadata("digits", as_json=True)
    as_ints = [[int(d) for d in t["shape"]] for t in grpc_meta["outputs"]]
    assert as_ints == [t["shape"] for t in rest["outputs"]]
    assert [t["datatype"] for t in grpc_meta["outputs"]] == [t["datatype"] for t in rest["outputs"]]


def test_infer_real_digits_as_http_does(
    client: triton.InferenceServerClient, server: Endpoints, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = digits
    out = infer(client, images.astype(np.float32) / 255.0, "FP32")
    assert list(out) == OUTPUTS
    p = out["probabilities"]
    assert p.shape == (20, 10) and p.dtype == np.float32
    assert out["member_probabilities"].shape == (20, 3, 10)
    assert out["kl_to_mean"].shape == (20, 3)
    assert out["uncertain"].dtype == np.bool_ and out["uncertain"].shape == (20,)
    assert (p.argmax(1) == labels).mean() >= 0.8  # a real, if tiny, model
    # The same request over HTTP gets the same numbers: one model, one OIP core.
    http = triton_http.InferenceServerClient(server.http.removeprefix("http://"))
    tensor = triton_http.InferInput("images", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images.astype(np.float32) / 255.0)
    rest = http.infer("digits", [tensor])
    for name in OUTPUTS:
        np.testing.assert_allclose(rest.as_numpy(name), out[name], rtol=1e-5, atol=1e-6)


def test_uint8_equals_fp32(
    client: triton.InferenceServerClient, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = digits
    as_uint8 = infer(client, images[:4], "UINT8")
    as_fp32 = infer(client, images[:4].astype(np.float32) / 255.0, "FP32")
    np.testing.assert_allclose(as_uint8["probabilities"], as_fp32["probabilities"], atol=1e-6)


def test_requested_outputs_only_and_in_order(
    client: triton.InferenceServerClient, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    wanted = ["uncertain", "probabilities"]
    outputs = [triton.InferRequestedOutput(n) for n in wanted]
    out = infer(client, digits[0][:2], "UINT8", outputs=outputs, request_id="abc")
    assert list(out) == wanted


def test_request_id_comes_back(client: triton.InferenceServerClient, digits) -> None:
    tensor = triton.InferInput("images", [1, 1, 8, 8], "UINT8")
    tensor.set_data_from_numpy(digits[0][:1])
    result = client.infer("digits", [tensor], request_id="req-42", model_version="1")
    response = result.get_response()
    assert response.id == "req-42"
    assert (response.model_name, response.model_version) == ("digits", "1")


def test_packed_mode(
    client: triton.InferenceServerClient, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """parameters["mode"] = "packed": `probabilities` and `head` (INT32), each image answered
    by its own slot's head. Sent M times in a row an image fills one packed row (as ensemble
    mode tiles it), so copy j's answer is the ensemble's member_probabilities[:, j]."""
    images, labels = digits
    packed = infer(client, images, "UINT8", parameters={"mode": "packed"})
    assert list(packed) == ["probabilities", "head"]
    assert packed["head"].dtype == np.int32 and packed["head"].tolist() == [
        i % 3 for i in range(20)
    ]
    assert packed["probabilities"].shape == (20, 10)
    assert (packed["probabilities"].argmax(axis=1) == labels).mean() >= 0.6
    members = infer(client, images[:2], "UINT8")["member_probabilities"]
    copies = infer(client, np.repeat(images[:2], 3, axis=0), "UINT8", parameters={"mode": "packed"})
    assert copies["head"].tolist() == [0, 1, 2, 0, 1, 2]
    expected = members[np.arange(6) // 3, copies["head"]]
    np.testing.assert_allclose(copies["probabilities"], expected, atol=1e-5)


def call(server: Endpoints, method: str, request: object, response: type, **kwargs: object):
    """A plain grpc channel: the path every OIP client uses, no tritonclient in between."""
    with grpc.insecure_channel(server.grpc) as channel:
        stub = channel.unary_unary(
            f"/{SERVICE_NAME}/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=response.FromString,
        )
        return stub.with_call(request, timeout=30, **kwargs)


def contents_request(images: np.ndarray) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="digits")
    tensor = request.inputs.add(name="images", datatype="FP32", shape=images.shape)
    tensor.contents.fp32_contents.extend(images.ravel().tolist())
    return request


def test_typed_contents_instead_of_raw_bytes(
    client: triton.InferenceServerClient, server: Endpoints, digits
) -> None:
    images = digits[0][:3].astype(np.float32) / 255.0
    answer, _ = call(server, "ModelInfer", contents_request(images), pb.ModelInferResponse)
    names = [o.name for o in answer.outputs]
    assert names == OUTPUTS
    assert len(answer.raw_output_contents) == len(OUTPUTS)
    p = np.frombuffer(answer.raw_output_contents[0], "<f4").reshape(3, 10)
    np.testing.assert_allclose(p, infer(client, images, "FP32")["probabilities"], atol=1e-6)


def test_packed_typed_contents_answer_int32_heads(server: Endpoints) -> None:
    request = contents_request(np.full((4, 1, 8, 8), 0.5, np.float32))
    request.parameters["mode"].string_param = "packed"
    request.outputs.add(name="head")
    answer, _ = call(server, "ModelInfer", request, pb.ModelInferResponse)
    [output] = answer.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("head", "INT32", [4])
    assert np.frombuffer(answer.raw_output_contents[0], "<i4").tolist() == [0, 1, 2, 0]


def status_of(server: Endpoints, request: pb.ModelInferRequest, **kwargs: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(server, "ModelInfer", request, pb.ModelInferResponse, **kwargs)
    return caught.value


@pytest.mark.parametrize(
    ("mutate", "code", "words"),
    [
        (lambda r: setattr(r, "model_name", "nope"), grpc.StatusCode.NOT_FOUND, "unknown model"),
        (lambda r: setattr(r, "model_version", "7"), grpc.StatusCode.NOT_FOUND, "no version 7"),
        (lambda r: setattr(r, "model_version", "x"), grpc.StatusCode.NOT_FOUND, "positive"),
        (lambda r: r.inputs[0].shape.__setitem__(3, 7), grpc.StatusCode.INVALID_ARGUMENT, "values"),
        (
            lambda r: setattr(r.inputs[0], "datatype", "FP16"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "FP16",
        ),
        (lambda r: setattr(r.inputs[0], "name", "x"), grpc.StatusCode.INVALID_ARGUMENT, "'images'"),
        (
            lambda r: r.inputs[0].contents.fp32_contents.__setitem__(0, float("nan")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "NaN",
        ),
        (
            lambda r: r.inputs[0].contents.fp32_contents.__setitem__(0, 3.0),
            grpc.StatusCode.INVALID_ARGUMENT,
            "[0, 1]",
        ),
        (
            lambda r: r.outputs.add(name="logits"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown outputs",
        ),
        (
            lambda r: setattr(r.parameters["mode"], "string_param", "fast"),
            grpc.StatusCode.INVALID_ARGUMENT,
            'parameter "mode" must be "ensemble" or "packed", got "fast"',
        ),
        (
            lambda r: setattr(r.parameters["mode"], "bool_param", True),
            grpc.StatusCode.INVALID_ARGUMENT,
            'must be "ensemble" or "packed", got true',
        ),
        (
            lambda r: (
                setattr(r.parameters["mode"], "string_param", "packed"),
                r.outputs.add(name="kl_to_mean"),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "outputs ['kl_to_mean'] need the ensemble",
        ),
        (
            lambda r: r.raw_input_contents.extend([b"", b""]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "raw_input_contents",
        ),
        (
            lambda r: r.inputs[0].shape.__setitem__(0, -1),
            grpc.StatusCode.INVALID_ARGUMENT,
            "non-negative",
        ),
    ],
)
def test_bad_requests_get_the_http_error_as_a_status(
    server: Endpoints, mutate, code, words
) -> None:
    request = contents_request(np.zeros((1, 1, 8, 8), np.float32))
    mutate(request)
    error = status_of(server, request)
    assert error.code() == code
    assert words in error.details()


def test_raw_bytes_of_the_wrong_size(server: Endpoints) -> None:
    request = pb.ModelInferRequest(model_name="digits")
    request.inputs.add(name="images", datatype="FP32", shape=[1, 1, 8, 8])
    request.raw_input_contents.append(b"\0" * 10)
    error = status_of(server, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "10 binary bytes" in error.details()


def test_message_over_the_body_limit(model_repository: Path, tmp_path: Path) -> None:
    process, where = serve_with_grpc(model_repository, tmp_path / "log", MIMO_MAX_BODY_BYTES="4096")
    try:
        request = pb.ModelInferRequest(model_name="digits")
        request.inputs.add(name="images", datatype="FP32", shape=[64, 1, 8, 8])
        request.raw_input_contents.append(b"\0" * 64 * 64 * 4)
        error = status_of(where, request)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        process.stop()


def test_api_key_queue_limit_and_metrics(model_repository: Path, tmp_path: Path) -> None:
    process, where = serve_with_grpc(
        model_repository, tmp_path / "log", MIMO_API_KEY="s3cret", MIMO_MAX_QUEUE_SIZE="2"
    )
    try:
        request = contents_request(np.zeros((1, 1, 8, 8), np.float32))
        assert status_of(where, request).code() == grpc.StatusCode.UNAUTHENTICATED
        wrong = status_of(where, request, metadata=[("authorization", "Bearer nope")])
        assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED and "wrong" in wrong.details()
        # Health needs no key, as over HTTP; the model's metadata does.
        c = triton.InferenceServerClient(where.grpc)
        assert c.is_server_ready() and c.is_model_ready("digits")
        with pytest.raises(InferenceServerException, match="API key"):
            c.get_model_metadata("digits")
        headers = {"x-api-key": "s3cret"}
        assert c.get_model_metadata("digits", headers=headers).name == "digits"
        answer, _ = call(
            where,
            "ModelInfer",
            request,
            pb.ModelInferResponse,
            metadata=[("authorization", "Bearer s3cret")],
        )
        assert answer.model_name == "digits"
        # More images than the queue holds: 429's gRPC twin, with retry-after.
        big = contents_request(np.zeros((3, 1, 8, 8), np.float32))
        full = status_of(where, big, metadata=[("x-api-key", "s3cret")])
        assert full.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "queue full" in full.details()
        assert ("retry-after", "1") in full.trailing_metadata()
        # Packed requests: the same key, queue limit and counters (their own queue).
        request.parameters["mode"].string_param = "packed"
        big.parameters["mode"].string_param = "packed"
        call(
            where, "ModelInfer", request, pb.ModelInferResponse, metadata=[("x-api-key", "s3cret")]
        )
        full = status_of(where, big, metadata=[("x-api-key", "s3cret")])
        assert full.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "queue full" in full.details()
        scrape = httpx.get(f"{where.http}/metrics").text
        assert 'mimo_requests_total{endpoint="grpc:ModelInfer",status="200"} 2.0' in scrape
        assert 'mimo_requests_total{endpoint="grpc:ModelInfer",status="401"} 2.0' in scrape
        assert 'mimo_requests_total{endpoint="grpc:ModelInfer",status="429"} 2.0' in scrape
        assert 'mimo_model_requests_total{model="digits",status="200",version="1"} 2.0' in scrape
        assert 'mimo_model_requests_total{model="digits",status="429",version="1"} 2.0' in scrape
        # packed answers carry no uncertainty: only the ensemble request observed one
        assert 'mimo_mutual_information_nats_count{model="digits",version="1"} 1.0' in scrape
        c.close()
    finally:
        process.stop()


def test_grpc_and_http_requests_share_forward_passes(
    server: Endpoints, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """Many concurrent calls over both protocols: all answered, labels as over /predict."""
    images = digits[0].astype(np.float32) / 255.0

    def over_grpc(i: int) -> int:
        answer, _ = call(
            server, "ModelInfer", contents_request(images[i : i + 1]), pb.ModelInferResponse
        )
        return int(np.frombuffer(answer.raw_output_contents[0], "<f4").argmax())

    def over_http(i: int) -> int:
        body = {
            "inputs": [
                {
                    "name": "images",
                    "datatype": "FP32",
                    "shape": [1, 1, 8, 8],
                    "data": images[i].ravel().tolist(),
                }
            ]
        }
        out = httpx.post(f"{server.http}/v2/models/digits/infer", json=body, timeout=30).json()
        return int(np.argmax(out["outputs"][0]["data"]))

    with ThreadPoolExecutor(16) as pool:
        by_grpc = list(pool.map(over_grpc, range(20)))
        by_http = list(pool.map(over_http, range(20)))
    assert by_grpc == by_http


def test_port_in_use_fails_loudly(
    model_repository: Path, tmp_path: Path, server: Endpoints
) -> None:
    taken = server.grpc.split(":")[1]
    port = free_port()
    env = service_env(model_repository, port, MIMO_GRPC_PORT=taken)
    assert f"cannot listen for gRPC on 127.0.0.1:{taken}" in failed_start(env, tmp_path / "log")


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    folder = ROOT / "service" / "oip_grpc"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{folder}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            str(folder / "mimo_inference.proto"),
        ],
        check=True,
    )
    for name in ("mimo_inference_pb2.py", "mimo_inference_pb2.pyi"):
        assert filecmp.cmp(tmp_path / name, folder / name, shallow=False), (
            f"{name} is stale: regenerate it (see the top of mimo_inference.proto)"
        )


KSERVE_CLIENT = """
import asyncio, json, sys
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest

async def main():
    client = InferenceGRPCClient(sys.argv[1])
    health = [await client.is_server_live(), await client.is_server_ready(),
              await client.is_model_ready("digits")]
    images = np.load(sys.argv[2])
    answers = {}
    for binary in (True, False):  # raw_input_contents, then typed contents
        tensor = InferInput("images", list(images.shape), "FP32")
        tensor.set_data_from_numpy(images, binary_data=binary)
        result = await client.infer(InferRequest("digits", [tensor], request_id="k"))
        answers[str(binary)] = {o.name: o.as_numpy().tolist() for o in result.outputs}
    await client.close()
    print(json.dumps({"health": health, "id": result.id, "answers": answers}))

asyncio.run(main())
"""


def test_kserve_grpc_client(
    client: triton.InferenceServerClient, server: Endpoints, digits, tmp_path: Path
) -> None:
    """KServe's own InferenceGRPCClient. In a process of its own: its `inference.*` protobuf
    messages and tritonclient's cannot be loaded into one Python process."""
    import json

    images = digits[0][:3].astype(np.float32) / 255.0
    np.save(tmp_path / "images.npy", images)
    done = subprocess.run(
        [sys.executable, "-c", KSERVE_CLIENT, server.grpc, str(tmp_path / "images.npy")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["health"] == [True, True, True]
    assert answer["id"] == "k"
    expected = infer(client, images, "FP32")
    for encoding in ("True", "False"):
        outputs = answer["answers"][encoding]
        assert list(outputs) == OUTPUTS
        np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"], atol=1e-6)
        assert outputs["uncertain"] == expected["uncertain"].tolist()


def test_grpc_contents_cover_the_protocol_datatypes() -> None:
    """Every datatype the REST codec knows has its InferTensorContents field over gRPC."""
    from service import oip
    from service.oip_grpc.server import CONTENTS

    assert CONTENTS.keys() == oip.DTYPES.keys()
    assert all(hasattr(pb.InferTensorContents(), field) for field in CONTENTS.values())
