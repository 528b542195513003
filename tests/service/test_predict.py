"""POST /predict and its neighbours, in process (TestClient, lifespan run) and over a socket."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import struct
import subprocess
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from support import ROOT, SERVICE, Process, free_port, service_env, start_service

from service.main import create_app
from service.settings import Settings

MAX_BODY = 64 * 1024
MAX_IMAGES = 25
MEASURES = {
    "predictive_entropy",
    "expected_entropy",
    "mutual_information",
    "disagreement",
    "variance",
}


def png(pixels: np.ndarray | None = None, mode: str = "L") -> bytes:
    if pixels is None:
        pixels = np.zeros((8, 8), np.uint8)
        pixels[1:7, 3:5] = 255  # a "1"
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, "PNG")
    return buffer.getvalue()


def settings(repository: Path, **overrides: object) -> Settings:
    values = {
        "repository": repository,
        "default_model": "digits",
        "threads": 1,
        "max_body_bytes": MAX_BODY,
        "max_images_per_request": MAX_IMAGES,
        "max_queue_delay_ms": 5.0,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture(scope="module")
def client(model_repository: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings(model_repository))) as c:  # runs the lifespan
        yield c


def post_png(client: TestClient, data: bytes, **params: object) -> httpx.Response:
    return client.post(
        "/predict", content=data, headers={"content-type": "image/png"}, params=params
    )


def assert_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"]
    return body["error"]


def metric_samples(text: str) -> list:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


# --- answers ----------------------------------------------------------------------------------


def test_raw_image_prediction(client: TestClient) -> None:
    response = post_png(client, png(), top_k=5)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["version"], body["ensemble_size"]) == ("digits", 1, 3)
    [p] = body["predictions"]
    assert p["filename"] is None
    assert p["label"] == str(p["index"]) and 0 <= p["index"] < 10
    assert len(p["top_k"]) == 5
    assert p["top_k"][0] == {
        "label": p["label"],
        "index": p["index"],
        "probability": p["probability"],
    }
    probabilities = [c["probability"] for c in p["top_k"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert 0.1 <= p["probability"] <= 1.0

    u = p["uncertainty"]
    assert set(u) == MEASURES
    assert u["mutual_information"] >= 0.0
    assert u["predictive_entropy"] >= u["expected_entropy"] - 1e-9
    assert u["mutual_information"] == pytest.approx(
        u["predictive_entropy"] - u["expected_entropy"], abs=1e-6
    )
    assert 0.0 <= u["disagreement"] <= 1.0 and u["variance"] >= 0.0

    assert len(p["members"]) == 3
    kl = [m["kl_to_mean"] for m in p["members"]]
    assert all(k >= 0 for k in kl)
    assert np.mean(kl) == pytest.approx(u["mutual_information"], rel=1e-4, abs=1e-7)
    assert p["uncertain"] == (u["mutual_information"] > p["threshold"])
    # The members' disagreement agrees with their own labels.
    tops = [m["index"] for m in p["members"]]
    pairs = [(a, b) for i, a in enumerate(tops) for b in tops[i + 1 :]]
    assert u["disagreement"] == pytest.approx(np.mean([a != b for a, b in pairs]))


@pytest.mark.parametrize(("top_k", "expected"), [(1, 1), (3, 3), (10, 10), (50, 10)])
def test_top_k_length(client: TestClient, top_k: int, expected: int) -> None:
    response = post_png(client, png(), top_k=top_k)
    assert response.status_code == 200
    assert len(response.json()["predictions"][0]["top_k"]) == expected


def test_members_can_be_left_out(client: TestClient) -> None:
    response = post_png(client, png(), members="false")
    assert response.status_code == 200
    assert response.json()["predictions"][0]["members"] is None


def test_member_probabilities_only_when_asked(client: TestClient) -> None:
    default = post_png(client, png()).json()["predictions"][0]
    assert "member_probabilities" not in default  # the answer is unchanged without the flag
    assert set(default) == {
        "filename",
        "label",
        "index",
        "probability",
        "top_k",
        "uncertainty",
        "uncertain",
        "threshold",
        "members",
    }
    no = post_png(client, png(), member_probabilities="false").json()["predictions"][0]
    assert "member_probabilities" not in no


def test_member_probabilities_are_each_heads_distribution(client: TestClient) -> None:
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    response = client.post(
        "/predict",
        files=[
            ("file", ("one.png", png(), "image/png")),
            ("file", ("n.png", png(noise), "image/png")),
        ],
        params={"member_probabilities": "true", "top_k": 10},
    )
    assert response.status_code == 200, response.text
    for p in response.json()["predictions"]:
        heads = np.array(p["member_probabilities"])
        assert heads.shape == (3, 10)
        assert np.all(heads >= 0) and np.allclose(heads.sum(axis=1), 1.0, atol=1e-6)
        # Each head's top class and probability are those of `members`, and their mean is the
        # ensemble's answer.
        for head, member in zip(heads, p["members"], strict=True):
            assert int(head.argmax()) == member["index"]
            assert head[member["index"]] == pytest.approx(member["probability"])
        mean = heads.mean(axis=0)
        for c in p["top_k"]:
            assert mean[c["index"]] == pytest.approx(c["probability"], abs=1e-9)

        # The mutual information follows from them: H[mean] - mean H[head].
        def h(q: np.ndarray) -> np.ndarray:
            return -(q * np.log(np.maximum(q, 1e-300))).sum(axis=-1)

        mi = h(mean) - h(heads).mean()
        assert mi == pytest.approx(p["uncertainty"]["mutual_information"], abs=1e-6)


def test_member_probabilities_without_members(client: TestClient) -> None:
    p = post_png(client, png(), members="false", member_probabilities="true").json()
    p = p["predictions"][0]
    assert p["members"] is None
    assert len(p["member_probabilities"]) == 3


def test_uncertain_flag_follows_the_threshold(client: TestClient) -> None:
    """Over varied inputs (digits, noise, blanks) the flag is always MI > threshold."""
    rng = np.random.default_rng(1)
    files = [
        ("file", (f"{i}.png", png(rng.integers(0, 256, (8, 8), np.uint8)), "image/png"))
        for i in range(12)
    ]
    files += [("file", ("blank.png", png(np.zeros((8, 8), np.uint8)), "image/png"))]
    response = client.post("/predict", files=files)
    assert response.status_code == 200
    for p in response.json()["predictions"]:
        assert p["uncertain"] == (p["uncertainty"]["mutual_information"] > p["threshold"])


def test_multipart_images_answered_in_order(
    client: TestClient, digit_pngs: list[tuple[bytes, int]]
) -> None:
    names = ["a.png", "b.jpg", "c.png", "d.gif"]
    images = [digit_pngs[i][0] for i in range(4)]
    jpeg, gif = io.BytesIO(), io.BytesIO()
    Image.open(io.BytesIO(images[1])).save(jpeg, "JPEG", quality=95)
    Image.open(io.BytesIO(images[3])).save(gif, "GIF")
    images[1], images[3] = jpeg.getvalue(), gif.getvalue()
    types = ["image/png", "image/jpeg", "image/png", "image/gif"]
    files = [("file", (n, d, t)) for n, d, t in zip(names, images, types, strict=True)]
    response = client.post("/predict", files=files, params={"top_k": 2})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["filename"] for p in predictions] == names
    assert all(len(p["top_k"]) == 2 for p in predictions)
    # Each answer is that image's own: it matches the image sent alone.
    for data, p in zip(images, predictions, strict=True):
        alone = client.post("/predict", files=[("file", ("x", data, "image/png"))]).json()
        assert alone["predictions"][0]["probability"] == pytest.approx(p["probability"], rel=1e-5)


def test_real_digits_are_recognised(
    client: TestClient, digit_pngs: list[tuple[bytes, int]]
) -> None:
    files = [("file", (f"{i}.png", data, "image/png")) for i, (data, _) in enumerate(digit_pngs)]
    response = client.post("/predict", files=files)
    assert response.status_code == 200, response.text
    predicted = [p["index"] for p in response.json()["predictions"]]
    correct = sum(p == label for p, (_, label) in zip(predicted, digit_pngs, strict=True))
    assert correct >= 0.6 * len(digit_pngs), (predicted, [label for _, label in digit_pngs])
    # The raw body route gives the same answer for one of them.
    one = post_png(client, digit_pngs[0][0]).json()["predictions"][0]
    assert one["index"] == predicted[0]


# --- refusals: always JSON {"error": ...}, never a 500 ----------------------------------------


def test_unknown_model_and_version(client: TestClient) -> None:
    assert "unknown model 'nope'" in assert_error(post_png(client, png(), model="nope"), 404)
    message = assert_error(post_png(client, png(), version=9), 404)
    assert "no version 9" in message
    assert post_png(client, png(), model="digits", version=1).status_code == 200


@pytest.mark.parametrize("top_k", ["0", "-1", "abc"])
def test_bad_top_k(client: TestClient, top_k: str) -> None:
    assert "top_k" in assert_error(post_png(client, png(), top_k=top_k), 400)


def test_unsupported_content_type(client: TestClient) -> None:
    response = client.post("/predict", content=b"hello", headers={"content-type": "text/plain"})
    assert "text/plain" in assert_error(response, 415)
    assert_error(client.post("/predict", json={"image": "x"}), 415)


def test_body_over_the_limit_with_content_length(client: TestClient) -> None:
    response = post_png(client, b"\0" * (MAX_BODY + 1))
    assert "MIMO_MAX_BODY_BYTES" in assert_error(response, 413)


def test_body_over_the_limit_chunked(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(6):
            yield b"\0" * 16384

    response = client.post("/predict", content=chunks(), headers={"content-type": "image/png"})
    assert "MIMO_MAX_BODY_BYTES" in assert_error(response, 413)
    big = [("file", (f"{i}.png", b"\0" * 20000, "image/png")) for i in range(4)]
    assert_error(client.post("/predict", files=big), 413)
    # The refused requests are counted as 413s, not as server errors.
    counted = {
        s.labels["status"]
        for s in metric_samples(client.get("/metrics").text)
        if s.name == "mimo_model_requests_total" and s.labels["model"] == "digits"
    }
    assert "413" in counted and "500" not in counted


def test_too_many_images(client: TestClient) -> None:
    files = [("file", (f"{i}.png", png(), "image/png")) for i in range(MAX_IMAGES + 1)]
    message = assert_error(client.post("/predict", files=files), 400)
    assert f"the limit is {MAX_IMAGES} (MIMO_MAX_IMAGES_PER_REQUEST)" in message
    assert_error(client.post("/predict", files=files * 3), 400)
    files = files[:MAX_IMAGES]
    assert client.post("/predict", files=files).status_code == 200


def test_bad_images(client: TestClient) -> None:
    assert "empty" in assert_error(post_png(client, b""), 400)
    text = b"this is a text file, not a picture\n"
    files = [("file", ("notes.txt", text, "text/plain"))]
    message = assert_error(client.post("/predict", files=files), 400)
    assert "expected an image" in message and f"got {len(text)} bytes of text/plain" in message
    whole = png(np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8))
    assert "truncated" in assert_error(post_png(client, whole[: len(whole) // 2]), 400)


def test_decompression_bomb(client: TestClient) -> None:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 60002))
        + chunk(b"IEND", b"")
    )
    started = time.perf_counter()
    response = post_png(client, bomb)
    assert time.perf_counter() - started < 2.0
    assert_error(response, 413)


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"method": "GET", "url": "/predict"},
        {"method": "POST", "url": "/predict", "headers": {"content-type": "multipart/form-data"}},
        {"method": "POST", "url": "/predict", "data": {"image": "x"}, "files": {"other": b"1"}},
        {"method": "POST", "url": "/predict", "params": {"version": "x"}, "content": png()},
        {"method": "POST", "url": "/predict", "params": {"model": "../etc"}, "content": png()},
        {"method": "POST", "url": "/predict", "content": b"\xff\xd8\xff\xe0garbage"},
        {"method": "GET", "url": "/nowhere"},
    ],
    ids=["get", "no-boundary", "no-file-part", "bad-version", "bad-name", "bad-jpeg", "404"],
)
def test_every_error_is_json_never_500(client: TestClient, request_kwargs: dict) -> None:
    kwargs = dict(request_kwargs)
    if "content" in kwargs and "headers" not in kwargs:
        kwargs["headers"] = {"content-type": "image/jpeg"}
    response = client.request(**kwargs)
    assert 400 <= response.status_code < 500, response.text
    assert_error(response, response.status_code)


# --- API key ----------------------------------------------------------------------------------


def test_api_key(model_repository: Path) -> None:
    app = create_app(settings(model_repository, api_key="s3cret"))
    with TestClient(app) as c:
        missing = c.post("/predict", content=png(), headers={"content-type": "image/png"})
        assert "missing API key" in assert_error(missing, 401)
        assert missing.headers["www-authenticate"] == "Bearer"
        for headers in ({"authorization": "Bearer nope"}, {"x-api-key": "nope"}):
            wrong = c.post(
                "/predict", content=png(), headers={"content-type": "image/png", **headers}
            )
            assert "wrong API key" in assert_error(wrong, 401)
        assert_error(c.get("/models"), 401)
        for headers in ({"authorization": "Bearer s3cret"}, {"x-api-key": "s3cret"}):
            ok = c.post("/predict", content=png(), headers={"content-type": "image/png", **headers})
            assert ok.status_code == 200, ok.text
            assert c.get("/models", headers=headers).status_code == 200
        for path in ("/v2/health/live", "/v2/health/ready", "/metrics"):
            assert c.get(path).status_code == 200, path


# --- /models, /metrics, OpenAPI, readiness ----------------------------------------------------


def test_models_listing(client: TestClient) -> None:
    response = client.get("/models")
    assert response.status_code == 200
    body = response.json()
    [digits] = [m for m in body["models"] if m["name"] == "digits"]
    assert digits["version"] == 1 and digits["default"] is True
    assert digits["ensemble_size"] == 3
    assert digits["labels"] == [str(d) for d in range(10)]
    assert digits["input_shape"] == [1, 8, 8]
    assert digits["provider"] == "cpu"
    assert digits["preprocess"]["color"] == "L"
    assert "mutual_information" in digits["thresholds"]
    assert body["unavailable"] == {}


def test_metrics(client: TestClient) -> None:
    assert post_png(client, png()).status_code == 200
    response = client.get("/metrics", follow_redirects=False)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    samples = metric_samples(text)
    names = {s.name for s in samples}
    assert "mimo_requests_total" in names
    assert any(
        s.name == "mimo_requests_total" and s.labels == {"endpoint": "/predict", "status": "200"}
        for s in samples
    )
    assert "mimo_mutual_information_nats_bucket" in names
    assert any(s.name == "mimo_predictions_total" and "label" in s.labels for s in samples)
    assert any(s.name == "mimo_batch_size_count" and s.value >= 1 for s in samples)
    assert any(
        s.name == "mimo_model_info"
        and s.labels.get("provider") == "cpu"
        and s.labels.get("ensemble_size") == "3"
        and s.value == 1
        for s in samples
    )
    # The uncertain counter exists as soon as one prediction was flagged; it is declared anyway.
    assert "mimo_uncertain_predictions_total" in text


def test_openapi_documents_predict(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    post = schema["paths"]["/predict"]["post"]
    content = post["requestBody"]["content"]
    assert "image/png" in content and "multipart/form-data" in content
    assert content["multipart/form-data"]["schema"]["properties"]["file"]["type"] == "array"
    ok = post["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("/PredictResponse")
    for code in ("400", "404", "413", "415", "429"):
        assert code in post["responses"]
    example = schema["components"]["schemas"]["PredictResponse"]["examples"][0]
    assert example["predictions"][0]["uncertainty"]["mutual_information"] >= 0
    assert {p["name"] for p in post["parameters"]} >= {
        "model",
        "version",
        "top_k",
        "members",
        "member_probabilities",
    }
    prediction = schema["components"]["schemas"]["Prediction"]["properties"]
    assert "member_probabilities" in prediction


def test_readiness_before_and_after_loading(model_repository: Path) -> None:
    app = create_app(settings(model_repository))
    early = TestClient(app)  # not entered: the lifespan has not run, nothing is loaded
    assert "not ready" in assert_error(early.get("/v2/health/ready"), 503)
    assert early.get("/v2/health/live").status_code == 200
    with TestClient(app) as c:
        assert c.get("/v2/health/ready").json() == {"ready": True}
    # After shutdown it is not ready any more.
    assert_error(early.get("/v2/health/ready"), 503)


# --- a real server over a socket --------------------------------------------------------------


class Server:
    def __init__(self, process: subprocess.Popen, url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log

    def metrics(self) -> list:
        return metric_samples(httpx.get(f"{self.url}/metrics", timeout=10).text)


@pytest.fixture(scope="module")
def start_server(
    model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Server]]:
    started: list[Process] = []

    def start(**env: str) -> Server:
        port = free_port()
        log = tmp_path_factory.mktemp("server") / "server.log"
        service = start_service(SERVICE, service_env(model_repository, port, **env), ROOT, log)
        started.append(service)
        return Server(service.popen, f"http://127.0.0.1:{port}", log)

    yield start
    for service in started:
        service.stop()


@pytest.fixture(scope="module")
def server(start_server: Callable[..., Server]) -> Server:
    return start_server(MIMO_MAX_QUEUE_DELAY_MS="20", MIMO_MAX_BODY_BYTES=str(MAX_BODY))


def batches_over_one(server: Server) -> float:
    samples = [s for s in server.metrics() if s.labels.get("model") == "digits"]
    count = sum(s.value for s in samples if s.name == "mimo_batch_size_count")
    ones = sum(
        s.value for s in samples if s.name == "mimo_batch_size_bucket" and s.labels["le"] == "1.0"
    )
    return count - ones


@pytest.mark.slow
def test_server_predicts_a_png_file(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "one.png"
    pixels = np.zeros((28, 28), np.uint8)
    pixels[4:24, 12:16] = 255
    Image.fromarray(pixels).save(path)
    with path.open("rb") as f:
        response = httpx.post(
            f"{server.url}/predict", files={"file": ("one.png", f, "image/png")}, timeout=10
        )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["filename"] == "one.png"
    raw = httpx.post(
        f"{server.url}/predict",
        content=path.read_bytes(),
        headers={"content-type": "image/png"},
        timeout=10,
    )
    assert raw.status_code == 200
    assert raw.json()["predictions"][0]["label"] == response.json()["predictions"][0]["label"]
    assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 200


@pytest.mark.slow
def test_server_body_limit_chunked(server: Server) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(5):
            yield b"\0" * 16384

    response = httpx.post(
        f"{server.url}/predict", content=chunks(), headers={"content-type": "image/png"}, timeout=10
    )
    assert_error(response, 413)


@pytest.mark.slow
def test_server_batches_concurrent_requests(server: Server) -> None:
    before = batches_over_one(server)
    images = [png(np.full((8, 8), i * 8, np.uint8)) for i in range(32)]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
            return await asyncio.gather(
                *(
                    c.post("/predict", content=data, headers={"content-type": "image/png"})
                    for data in images
                )
            )

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 32
    assert batches_over_one(server) > before


@pytest.mark.slow
def test_server_full_queue_answers_429(start_server: Callable[..., Server]) -> None:
    server = start_server(MIMO_MAX_QUEUE_SIZE="2", MIMO_MAX_QUEUE_DELAY_MS="200")

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
            return await asyncio.gather(
                *(
                    c.post("/predict", content=png(), headers={"content-type": "image/png"})
                    for _ in range(20)
                )
            )

    responses = asyncio.run(burst())
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429}, codes
    assert 200 in codes and 429 in codes
    for r in responses:
        if r.status_code == 429:
            assert r.headers["retry-after"] == "1"
            assert "queue full" in assert_error(r, 429)


@pytest.mark.slow
def test_sigterm_finishes_requests_in_flight(start_server: Callable[..., Server]) -> None:
    server = start_server(MIMO_MAX_QUEUE_DELAY_MS="1500")
    count = 6

    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
            tasks = [
                asyncio.ensure_future(
                    c.post("/predict", content=png(), headers={"content-type": "image/png"})
                )
                for _ in range(count)
            ]
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as probe:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:  # wait until all are queued in the server
                    text = (await probe.get("/metrics")).text
                    depth = [
                        s.value
                        for s in metric_samples(text)
                        if s.name == "mimo_queue_depth" and s.labels.get("model") == "digits"
                    ]
                    if depth and depth[0] >= count:
                        break
                    await asyncio.sleep(0.02)
                else:
                    raise AssertionError("the requests never reached the queue")
            server.process.send_signal(signal.SIGTERM)
            return await asyncio.gather(*tasks)

    responses = asyncio.run(scenario())
    assert [r.status_code for r in responses] == [200] * count
    # A graceful exit: uvicorn re-raises the signal once it has shut down cleanly.
    assert server.process.wait(30) in (0, -signal.SIGTERM), server.log.read_text()
    assert "Traceback" not in server.log.read_text()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/v2/health/live", timeout=2)


def test_a_model_that_flags_by_predictive_entropy_says_so(
    model_repository: Path, tmp_path: Path, digit_pngs: list[tuple[bytes, int]]
) -> None:
    """mimo.uncertain_measure (training/flag.py's choice) raises `uncertain` by its measure,
    and /predict, /models and the OIP metadata name it."""
    import shutil

    import onnx
    from fastapi.testclient import TestClient

    from service.main import create_app
    from service.settings import Settings

    repo = tmp_path / "models"
    shutil.copytree(model_repository, repo)
    path = repo / "digits" / "1" / "model.onnx"
    proto = onnx.load(path)
    proto.metadata_props.add(key="mimo.uncertain_measure", value="predictive_entropy")
    thresholds = next(p for p in proto.metadata_props if p.key == "mimo.thresholds")
    values = json.loads(thresholds.value)
    values["predictive_entropy"] = 0.2
    thresholds.value = json.dumps(values)
    onnx.save(proto, path)
    settings = Settings(repository=repo, default_model="digits", threads=1)
    files = [("file", (f"{i}.png", d, "image/png")) for i, (d, _) in enumerate(digit_pngs)]
    with TestClient(create_app(settings)) as client:
        for batch in (files[:1], files):  # a lone image (scored in Python) and a batch
            answer = client.post("/predict", files=batch).json()
            assert answer["uncertain_measure"] == "predictive_entropy"
            for p in answer["predictions"]:
                assert p["threshold"] == 0.2
                assert p["uncertain"] == (p["uncertainty"]["predictive_entropy"] > 0.2)
        flags = {p["uncertain"] for p in client.post("/predict", files=files).json()["predictions"]}
        assert flags == {True, False}  # the threshold splits these digits: the test tests
        (listed,) = client.get("/models").json()["models"]
        assert listed["uncertain_measure"] == "predictive_entropy"
        meta = client.get("/v2/models/digits").json()
        assert meta["parameters"]["uncertain_measure"] == "predictive_entropy"
