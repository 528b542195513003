"""The Open Inference Protocol over a real socket: `python -m service` and the real tritonclient."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from support import ROOT, SERVICE, free_port, service_env, start_service
from tritonclient.utils import InferenceServerException

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
def server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of `python -m service` serving the digits repository on a free port."""
    port = free_port()
    log = tmp_path_factory.mktemp("v2-server") / "server.log"
    service = start_service(SERVICE, service_env(model_repository, port), ROOT, log)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        service.stop()


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(server.removeprefix("http://"), network_timeout=30)
    yield c
    c.close()


def images_input(array: np.ndarray, datatype: str, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("images", list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def infer_all(
    client: triton.InferenceServerClient,
    tensor: triton.InferInput,
    binary_outputs: bool = True,
    **kwargs: Any,
) -> dict[str, np.ndarray]:
    outputs = [triton.InferRequestedOutput(n, binary_data=binary_outputs) for n in OUTPUTS]
    result = client.infer("digits", [tensor], outputs=outputs, **kwargs)
    return {name: result.as_numpy(name) for name in OUTPUTS}


def check_answer(out: dict[str, np.ndarray], labels: np.ndarray) -> None:
    n = len(labels)
    p = out["probabilities"]
    assert p.shape == (n, 10) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    members = out["member_probabilities"]
    assert members.shape == (n, 3, 10)
    np.testing.assert_allclose(members.sum(axis=2), 1.0, atol=1e-5)
    np.testing.assert_allclose(members.mean(axis=1), p, atol=1e-6)
    assert out["kl_to_mean"].shape == (n, 3)
    np.testing.assert_allclose(out["kl_to_mean"].mean(axis=1), out["mutual_information"], atol=1e-5)
    for name in ("predictive_entropy", "expected_entropy", "mutual_information", "variance"):
        assert out[name].shape == (n,) and (out[name] >= 0).all(), name
    np.testing.assert_allclose(
        out["predictive_entropy"] - out["expected_entropy"], out["mutual_information"], atol=1e-5
    )
    assert ((out["disagreement"] >= 0) & (out["disagreement"] <= 1)).all()
    assert out["uncertain"].dtype == np.bool_ and out["uncertain"].shape == (n,)
    assert (p.argmax(axis=1) == labels).mean() >= 0.6


# --- health and metadata ---------------------------------------------------------------------


def test_server_live_and_ready(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()


def test_model_ready(client: triton.InferenceServerClient) -> None:
    assert client.is_model_ready("digits")
    assert client.is_model_ready("digits", "1")
    assert not client.is_model_ready("digits", "2")
    assert not client.is_model_ready("no-such-model")


def test_server_metadata(client: triton.InferenceServerClient) -> None:
    meta = client.get_server_metadata()
    assert meta["name"] == "mimo-serve" and meta["version"]
    assert "binary_tensor_data" in meta["extensions"]


@pytest.mark.parametrize("version", ["", "1"])
def test_model_metadata(client: triton.InferenceServerClient, version: str) -> None:
    meta = client.get_model_metadata("digits", version)
    assert meta["name"] == "digits" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    outputs = {o["name"]: o for o in meta["outputs"]}
    assert list(outputs) == [*OUTPUTS, "head"]
    assert outputs["head"] == {"name": "head", "datatype": "INT32", "shape": [-1]}
    assert meta["parameters"]["modes"] == {
        "ensemble": OUTPUTS,
        "packed": ["probabilities", "head"],
    }
    assert outputs["probabilities"]["shape"] == [-1, 10]
    assert outputs["member_probabilities"]["shape"] == [-1, 3, 10]
    assert outputs["kl_to_mean"]["shape"] == [-1, 3]
    assert outputs["mutual_information"] == {
        "name": "mutual_information",
        "datatype": "FP32",
        "shape": [-1],
    }
    assert outputs["uncertain"]["datatype"] == "BOOL"


def test_repository_index(client: triton.InferenceServerClient, server: str) -> None:
    assert {"name": "digits", "version": "1", "state": "READY"} in (
        client.get_model_repository_index()
    )
    answer = httpx.post(f"{server}/v2/repository/index", timeout=10)
    assert answer.status_code == 200
    assert {"name": "digits", "version": "1", "state": "READY"} in answer.json()


# --- inference -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("binary_input", "binary_outputs"),
    [(True, True), (True, False), (False, False)],
    ids=["binary-in-binary-out", "binary-in-json-out", "json-in-json-out"],
)
def test_infer(
    client: triton.InferenceServerClient,
    digits: tuple[np.ndarray, np.ndarray],
    binary_input: bool,
    binary_outputs: bool,
) -> None:
    images, labels = digits
    x = images.astype(np.float32) / 255.0
    out = infer_all(client, images_input(x, "FP32", binary_input), binary_outputs)
    check_answer(out, labels)


def test_infer_all_outputs_by_default_with_id(
    client: triton.InferenceServerClient, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = digits
    result = client.infer(
        "digits", [images_input(images[:2].astype(np.float32) / 255, "FP32")], request_id="req-7"
    )
    response = result.get_response()
    assert response["model_name"] == "digits" and response["model_version"] == "1"
    assert response["id"] == "req-7"
    assert sorted(o["name"] for o in response["outputs"]) == sorted(OUTPUTS)


def test_uint8_input_equals_scaled_fp32(
    client: triton.InferenceServerClient, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = digits
    as_uint8 = infer_all(client, images_input(images, "UINT8"))
    as_fp32 = infer_all(client, images_input(images.astype(np.float32) / 255.0, "FP32"))
    check_answer(as_uint8, labels)
    for name in OUTPUTS:
        np.testing.assert_allclose(as_uint8[name], as_fp32[name], atol=1e-6, err_msg=name)


def test_versioned_infer(
    client: triton.InferenceServerClient, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = digits
    x = images.astype(np.float32) / 255.0
    out = infer_all(client, images_input(x, "FP32"), model_version="1")
    check_answer(out, labels)


def test_selected_outputs_only(
    client: triton.InferenceServerClient, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = digits
    outputs = [
        triton.InferRequestedOutput("uncertain", binary_data=True),
        triton.InferRequestedOutput("probabilities", binary_data=False),
    ]
    result = client.infer("digits", [images_input(images[:3], "UINT8")], outputs=outputs)
    names = [o["name"] for o in result.get_response()["outputs"]]
    assert names == ["uncertain", "probabilities"]
    assert result.as_numpy("uncertain").shape == (3,)
    assert result.as_numpy("probabilities").shape == (3, 10)


def test_raw_http_json_infer(server: str, digits: tuple[np.ndarray, np.ndarray]) -> None:
    """Without tritonclient: plain JSON in and out, nested data, the documented answer."""
    images, _ = digits
    body = {
        "id": "plain",
        "inputs": [
            {
                "name": "images",
                "shape": [4, 1, 8, 8],
                "datatype": "FP32",
                "data": (images[:4].astype(np.float32) / 255.0).tolist(),
            }
        ],
        "outputs": [{"name": "probabilities"}],
    }
    answer = httpx.post(f"{server}/v2/models/digits/infer", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    payload = answer.json()
    assert payload["id"] == "plain" and payload["model_name"] == "digits"
    [output] = payload["outputs"]
    assert output["name"] == "probabilities" and output["shape"] == [4, 10]
    p = np.asarray(output["data"]).reshape(4, 10)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)


# --- packed mode (parameters.mode = "packed") --------------------------------------------------

PACKED = {"mode": "packed"}


@pytest.mark.parametrize("binary", [True, False], ids=["binary-out", "json-out"])
def test_packed_outputs(
    client: triton.InferenceServerClient, digits: tuple[np.ndarray, np.ndarray], binary: bool
) -> None:
    images, labels = digits
    outputs = [
        triton.InferRequestedOutput(n, binary_data=binary) for n in ("head", "probabilities")
    ]
    result = client.infer(
        "digits", [images_input(images, "UINT8")], outputs=outputs, parameters=PACKED
    )
    response = result.get_response()
    assert [(o["name"], o["datatype"]) for o in response["outputs"]] == [
        ("head", "INT32"),
        ("probabilities", "FP32"),
    ]
    head, p = result.as_numpy("head"), result.as_numpy("probabilities")
    assert head.dtype == np.int32 and head.tolist() == [i % 3 for i in range(20)]
    assert p.dtype == np.float32 and p.shape == (20, 10)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert (p.argmax(axis=1) == labels).mean() >= 0.6


def test_packed_answer_is_the_answering_heads_ensemble_row(
    client: triton.InferenceServerClient, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """Each image is answered by its own slot's head, at the model's temperature.

    A head also sees the other slots, so the reference is exact only when a packed row holds
    one image in all M slots, as ensemble mode does: each image sent M times in a row, copy j
    lands in slot j and its answer is the ensemble's member_probabilities[:, j]."""
    images = digits[0]
    wanted = [triton.InferRequestedOutput("member_probabilities")]
    members = client.infer("digits", [images_input(images, "UINT8")], outputs=wanted).as_numpy(
        "member_probabilities"
    )
    pick = np.argsort(-np.ptp(members, axis=1).max(axis=1))[:2]  # where the heads differ most
    assert np.ptp(members[pick], axis=1).max() > 1e-3  # else no head could be told apart
    copies = np.repeat(images[pick], 3, axis=0)  # [a, a, a, b, b, b]
    packed = client.infer("digits", [images_input(copies, "UINT8")], parameters=PACKED)
    head = packed.as_numpy("head")
    assert head.tolist() == [0, 1, 2, 0, 1, 2]
    expected = members[pick][np.arange(6) // 3, head]
    np.testing.assert_allclose(packed.as_numpy("probabilities"), expected, atol=1e-5)


def packed_body(array: np.ndarray, **extra: Any) -> dict[str, Any]:
    images = {"name": "images", "shape": list(array.shape), "datatype": "UINT8"}
    return {"parameters": PACKED, "inputs": [{**images, "data": array.ravel().tolist()}], **extra}


def test_packed_raw_json_answers_both_outputs(
    server: str, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """The README's curl request: no `outputs`, so both of packed mode's, as JSON."""
    answer = httpx.post(
        f"{server}/v2/models/digits/infer", json=packed_body(digits[0][:4]), timeout=10
    )
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert list(outputs) == ["probabilities", "head"]
    assert outputs["head"] == {
        "name": "head",
        "datatype": "INT32",
        "shape": [4],
        "data": [0, 1, 2, 0],
    }
    assert outputs["probabilities"]["shape"] == [4, 10]


PACKED_ERRORS = {
    # case: (request parameters, outputs, words of the 400)
    "bad-mode": (
        {"mode": "fast"},
        None,
        'parameter "mode" must be "ensemble" or "packed", got "fast"',
    ),
    "mode-not-a-string": ({"mode": 1}, None, 'must be "ensemble" or "packed", got 1'),
    "ensemble-output-in-packed": (
        PACKED,
        ["probabilities", "mutual_information"],
        "outputs ['mutual_information'] need the ensemble",
    ),
}


def test_head_in_ensemble_mode_is_every_head(
    server: str, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """Asked for in ensemble mode (Triton's perf_analyzer asks for every output the metadata
    lists), `head` is -1 for each image: all M heads answered it."""
    body = packed_body(digits[0][:3], parameters={})
    body["outputs"] = [{"name": "head"}, {"name": "uncertain"}]
    answer = httpx.post(f"{server}/v2/models/digits/infer", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert outputs["head"] == {"name": "head", "datatype": "INT32", "shape": [3], "data": [-1] * 3}


@pytest.mark.parametrize("case", list(PACKED_ERRORS))
def test_packed_errors(server: str, digits: tuple[np.ndarray, np.ndarray], case: str) -> None:
    parameters, outputs, words = PACKED_ERRORS[case]
    body = packed_body(digits[0][:2], parameters=parameters)
    if outputs is not None:
        body["outputs"] = [{"name": o} for o in outputs]
    answer = httpx.post(f"{server}/v2/models/digits/infer", json=body, timeout=10)
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    payload = answer.json()
    assert set(payload) == {"error"} and words in payload["error"]
    if case == "ensemble-output-in-packed":
        assert "['probabilities', 'head']" in payload["error"]  # what packed mode answers


def model_requests(server: str) -> dict[str, float]:
    """mimo_model_requests_total of the digits model, by status."""
    counts: dict[str, float] = {}
    for line in httpx.get(f"{server}/metrics", timeout=10).text.splitlines():
        if line.startswith("mimo_model_requests_total{") and 'model="digits"' in line:
            status = line.split('status="', 1)[1].split('"', 1)[0]
            counts[status] = counts.get(status, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def test_packed_requests_are_counted_and_limited(
    server: str, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    before = model_requests(server)
    url = f"{server}/v2/models/digits/infer"
    assert httpx.post(url, json=packed_body(digits[0][:2]), timeout=10).status_code == 200
    over = np.zeros((65, 1, 8, 8), np.uint8)  # MIMO_MAX_IMAGES_PER_REQUEST is 64
    refused = httpx.post(url, json=packed_body(over), timeout=10)
    assert refused.status_code == 400 and "send 1 to 64" in refused.json()["error"]
    after = model_requests(server)
    assert after.get("200", 0) == before.get("200", 0) + 1
    assert after.get("400", 0) == before.get("400", 0) + 1


# --- errors ----------------------------------------------------------------------------------


def tensor(name: str, array: np.ndarray, datatype: str) -> triton.InferInput:
    t = triton.InferInput(name, list(array.shape), datatype)
    t.set_data_from_numpy(array)
    return t


GOOD = np.full((2, 1, 8, 8), 0.5, np.float32)
NAN = GOOD.copy()
NAN[1, 0, 3, 3] = np.nan
ERRORS: dict[str, tuple[dict[str, Any], str, str]] = {
    # case: (infer keyword arguments, status, words of the server's message)
    "wrong-shape": (
        {"inputs": [tensor("images", np.zeros((2, 1, 28, 28), np.float32), "FP32")]},
        "400",
        "shape [2, 1, 28, 28]",
    ),
    "wrong-name": ({"inputs": [tensor("pixels", GOOD, "FP32")]}, "400", "named 'images'"),
    "fp64": ({"inputs": [tensor("images", GOOD.astype(np.float64), "FP64")]}, "400", "FP64"),
    "nan": ({"inputs": [tensor("images", NAN, "FP32")]}, "400", "NaN"),
    "over-one": ({"inputs": [tensor("images", GOOD * 3, "FP32")]}, "400", "[0, 1]"),
    "unknown-model": (
        {"model_name": "no-such-model", "inputs": [tensor("images", GOOD, "FP32")]},
        "404",
        "unknown model 'no-such-model'",
    ),
    "unknown-version": (
        {"model_version": "9", "inputs": [tensor("images", GOOD, "FP32")]},
        "404",
        "no version 9",
    ),
    "unknown-output": (
        {
            "inputs": [tensor("images", GOOD, "FP32")],
            "outputs": [triton.InferRequestedOutput("logits")],
        },
        "400",
        "unknown outputs ['logits']",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_through_tritonclient(client: triton.InferenceServerClient, case: str) -> None:
    kwargs, status, words = ERRORS[case]
    kwargs = {"model_name": "digits", **kwargs}
    with pytest.raises(InferenceServerException) as info:
        client.infer(**kwargs)
    assert info.value.status() == status
    assert words in info.value.message()


def raw_body(name: str, array: np.ndarray, datatype: str, outputs: list[str] | None) -> bytes:
    request: dict[str, Any] = {
        "inputs": [
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": array.nbytes},
            }
        ]
    }
    if outputs is not None:
        request["outputs"] = [{"name": o} for o in outputs]
    return json.dumps(request).encode()


RAW_ERRORS = {
    # case: (path, input name, array, datatype, outputs, status, words)
    "wrong-shape": (
        "digits",
        "images",
        np.zeros((1, 1, 28, 28), np.float32),
        "FP32",
        None,
        400,
        "shape",
    ),
    "wrong-name": ("digits", "pixels", GOOD, "FP32", None, 400, "'images'"),
    "fp64": ("digits", "images", GOOD.astype(np.float64), "FP64", None, 400, "FP64"),
    "nan": ("digits", "images", NAN, "FP32", None, 400, "NaN"),
    "over-one": ("digits", "images", GOOD * 3, "FP32", None, 400, "[0, 1]"),
    "unknown-model": ("nope", "images", GOOD, "FP32", None, 404, "unknown model"),
    "unknown-version": ("digits/versions/9", "images", GOOD, "FP32", None, 404, "no version 9"),
    "bad-version": ("digits/versions/one", "images", GOOD, "FP32", None, 404, "positive"),
    "unknown-output": ("digits", "images", GOOD, "FP32", ["logits"], 400, "unknown outputs"),
}


@pytest.mark.parametrize("case", list(RAW_ERRORS))
def test_errors_raw_http(server: str, case: str) -> None:
    path, name, array, datatype, outputs, status, words = RAW_ERRORS[case]
    head = raw_body(name, array, datatype, outputs)
    answer = httpx.post(
        f"{server}/v2/models/{path}/infer",
        content=head + array.tobytes(),
        headers={
            "Inference-Header-Content-Length": str(len(head)),
            "Content-Type": "application/octet-stream",
        },
        timeout=10,
    )
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    payload = answer.json()
    assert set(payload) == {"error"} and words in payload["error"]


@pytest.mark.parametrize(
    ("content", "headers", "words"),
    [
        (b'{"inputs": [', {}, "not valid JSON"),
        (b'{"inputs": []}', {"Inference-Header-Content-Length": "999"}, "does not fit"),
        (
            json.dumps(
                {"inputs": [{"name": "images", "shape": [1, 1, 8, 8], "datatype": "FP32"}]}
            ).encode(),
            {},
            "neither `data` nor binary_data_size",
        ),
        (
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "images",
                            "shape": [1, 1, 8, 8],
                            "datatype": "UINT8",
                            "data": [300] * 64,
                        }
                    ]
                }
            ).encode(),
            {},
            "not a UINT8 array",
        ),
        (b'{"inputs": [], "parameters": 1}', {}, "`parameters` of the request"),
    ],
    ids=["bad-json", "header-past-body", "no-data", "uint8-overflow", "bad-parameters"],
)
def test_malformed_bodies(server: str, content: bytes, headers: dict[str, str], words: str) -> None:
    answer = httpx.post(
        f"{server}/v2/models/digits/infer", content=content, headers=headers, timeout=10
    )
    assert answer.status_code == 400, answer.text
    assert words in answer.json()["error"]


def test_metadata_errors_raw_http(server: str) -> None:
    for path, status in [
        ("/v2/models/nope", 404),
        ("/v2/models/digits/versions/3", 404),
        ("/v2/models/nope/ready", 404),
        ("/v2/models/digits/versions/3/ready", 404),
    ]:
        answer = httpx.get(server + path, timeout=10)
        assert answer.status_code == status, path
        assert "error" in answer.json(), path


def test_refused_outputs_record_no_prediction(server: str) -> None:
    """A request refused for an unknown output is a 400, not a success with its predictions."""

    def counts() -> tuple[float, float]:
        text = httpx.get(f"{server}/metrics", timeout=10).text
        ok = failed = 0.0
        for line in text.splitlines():
            if line.startswith("mimo_model_requests_total{") and 'model="digits"' in line:
                value = float(line.rsplit(" ", 1)[1])
                if 'status="200"' in line:
                    ok += value
                elif 'status="400"' in line:
                    failed += value
        return ok, failed

    before = counts()
    head = raw_body("images", GOOD, "FP32", ["bogus"])
    answer = httpx.post(
        f"{server}/v2/models/digits/infer",
        content=head + GOOD.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(head))},
        timeout=10,
    )
    assert answer.status_code == 400
    after = counts()
    assert after[0] == before[0] and after[1] == before[1] + 1
