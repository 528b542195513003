"""Packed mode: M different images share one forward pass, each answered by its own slot's
head (service/inference.py `pack`, service/postprocess.py `score_packed`, /predict?mode=packed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from service.inference import forward, pack, tile
from service.main import create_app
from service.settings import Settings
from service.uncertainty import softmax


def test_pack_puts_image_i_in_row_i_div_m_slot_i_mod_m() -> None:
    images = np.arange(5, dtype=np.float32).reshape(5, 1, 1, 1)  # image i holds the value i
    rows = pack(images, 3)
    assert rows.shape == (2, 3, 1, 1, 1)
    assert rows[:, :, 0, 0, 0].tolist() == [[0, 1, 2], [3, 4, 0]]  # the last row completed
    assert pack(images[:3], 3).shape == (1, 3, 1, 1, 1)
    assert pack(images[:1], 3)[0, :, 0, 0, 0].tolist() == [0, 0, 0]  # one image: tiled


@pytest.fixture(scope="module")
def client(model_repository: Path) -> Iterator[TestClient]:
    settings = Settings(repository=model_repository, default_model="digits", threads=1)
    with TestClient(create_app(settings)) as c:
        yield c


def test_packed_answers_name_their_head_and_carry_no_ensemble(
    client: TestClient, digit_pngs: list[tuple[bytes, int]]
) -> None:
    files = [("file", (f"{i}.png", data, "image/png")) for i, (data, _) in enumerate(digit_pngs)]
    packed = client.post("/predict", files=files, params={"mode": "packed"})
    assert packed.status_code == 200, packed.text
    body = packed.json()
    assert body["mode"] == "packed"
    predictions = body["predictions"]
    assert [p["head"] for p in predictions] == [i % 3 for i in range(len(digit_pngs))]
    for p in predictions:
        assert p["uncertainty"] is None and p["uncertain"] is None and p["members"] is None
        assert p["top_k"][0]["index"] == p["index"]
    correct = sum(
        p["index"] == label for p, (_, label) in zip(predictions, digit_pngs, strict=True)
    )
    assert correct >= 0.6 * len(digit_pngs)
    ensemble = client.post("/predict", files=files).json()
    assert ensemble["mode"] == "ensemble"
    assert all("head" not in p and p["uncertainty"] is not None for p in ensemble["predictions"])


def test_packed_equals_each_head_on_its_own_slot(
    client: TestClient, model_repository: Path, digit_pngs: list[tuple[bytes, int]]
) -> None:
    """The answer for image i is head i % M's softmax with the batch's images in the slots."""
    from service.preprocess import preprocess

    session = ort.InferenceSession(str(model_repository / "digits" / "1" / "model.onnx"))
    spec = {"color": "L", "resize": [8, 8], "resample": "bilinear", "invert": False}
    images = np.stack([preprocess(d, "image/png", spec, 10**6) for d, _ in digit_pngs[:6]])
    logits = forward(session, pack(images, 3)).reshape(6, -1)
    files = [("file", (f"{i}.png", d, "image/png")) for i, (d, _) in enumerate(digit_pngs[:6])]
    answer = client.post("/predict", files=files, params={"mode": "packed", "top_k": 10}).json()
    # The service applies the model's temperature to the head's logits.
    meta = session.get_modelmeta().custom_metadata_map
    expected = softmax(logits, float(meta["mimo.temperature"]))
    for i, p in enumerate(answer["predictions"]):
        got = {t["index"]: t["probability"] for t in p["top_k"]}
        np.testing.assert_allclose([got[k] for k in range(10)], expected[i], rtol=1e-4, atol=1e-6)
    # and differs from ensemble mode, where every slot holds the same image
    tiled = softmax(forward(session, tile(images, 3)), float(meta["mimo.temperature"]))
    assert not np.allclose(tiled.mean(axis=1), expected, atol=1e-6)


def test_bad_mode_is_a_400(client: TestClient, digit_pngs: list[tuple[bytes, int]]) -> None:
    answer = client.post(
        "/predict",
        content=digit_pngs[0][0],
        headers={"content-type": "image/png"},
        params={"mode": "bagged"},
    )
    assert answer.status_code == 400
    assert "mode" in answer.json()["error"]


@pytest.mark.parametrize("mode", ["ensemble", "packed"])
def test_fixed_batch_sizes_answer_as_any_size_does(
    client: TestClient,
    model_repository: Path,
    digit_pngs: list[tuple[bytes, int]],
    mode: str,
) -> None:
    """MIMO_FIXED_BATCH_SIZES=on (a GPU's default) pads each batch up to a session's size:
    the padding's answers never reach a client, and the images' answers do not change."""
    settings = Settings(
        repository=model_repository,
        default_model="digits",
        threads=1,
        max_batch_size=8,
        fixed_batch_sizes="on",
    )
    files = [("file", (f"{i}.png", d, "image/png")) for i, (d, _) in enumerate(digit_pngs[:5])]
    params = {"mode": mode, "top_k": 10}
    with TestClient(create_app(settings)) as fixed:
        padded = fixed.post("/predict", files=files, params=params)
    plain = client.post("/predict", files=files, params=params)
    assert padded.status_code == plain.status_code == 200
    a, b = padded.json()["predictions"], plain.json()["predictions"]
    assert len(a) == len(b) == 5
    for x, y in zip(a, b, strict=True):
        assert x["index"] == y["index"] and x.get("head") == y.get("head")
        assert x["probability"] == pytest.approx(y["probability"], abs=1e-5)
