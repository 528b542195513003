"""int8 and fp16 exports are served like any other model: same registry, same answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.inference import forward, tile
from service.main import create_app
from service.registry import ModelRegistry
from service.settings import Settings


@pytest.fixture(scope="module")
def registry(precision_repository: Path) -> ModelRegistry:
    registry = ModelRegistry(precision_repository, providers="cpu", threads=1, warmup_batch=4)
    report = registry.load_all()
    assert report.failed == {}
    assert sorted(report.loaded) == ["digits/1", "digits/2", "digits/3"]
    return registry


def test_the_registry_serves_every_precision(registry: ModelRegistry) -> None:
    from training.data import load_dataset

    test = load_dataset("digits", "test")
    x = test.images.astype(np.float32) / 255.0
    fp32 = registry.get("digits", 1)
    assert fp32.contract.precision == "fp32"
    reference = forward(fp32.session, tile(x, 3)).mean(axis=1).argmax(axis=1)
    for version, precision in ((2, "int8"), (3, "fp16")):
        model = registry.get("digits", version)
        assert model.contract.precision == precision
        assert model.provider == "cpu"
        logits = forward(model.session, tile(x, 3))  # as the batcher runs it
        assert logits.shape == (len(x), 3, 10) and logits.dtype == np.float32
        top1 = logits.mean(axis=1).argmax(axis=1)
        assert (top1 == reference).mean() >= 0.95
        assert (top1 == test.labels).mean() > 0.5


@pytest.fixture(scope="module")
def client(precision_repository: Path) -> Iterator[TestClient]:
    settings = Settings(repository=precision_repository, default_model="digits", threads=1)
    with TestClient(create_app(settings)) as c:
        yield c


def test_predict_with_the_int8_model(
    client: TestClient, digit_pngs: list[tuple[bytes, int]]
) -> None:
    answers = {}
    for version in (1, 2):
        answers[version] = []
        for data, _ in digit_pngs:
            response = client.post(
                "/predict",
                content=data,
                headers={"content-type": "image/png"},
                params={"model": "digits", "version": version},
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert (body["model"], body["version"], body["ensemble_size"]) == ("digits", version, 3)
            [p] = body["predictions"]
            assert len(p["members"]) == 3 and p["uncertainty"]["mutual_information"] >= 0.0
            answers[version].append(p["index"])
    labels = [label for _, label in digit_pngs]
    assert np.mean(np.equal(answers[2], answers[1])) >= 0.9
    assert np.mean(np.equal(answers[2], labels)) >= 0.5
    # The newest version (fp16) answers by default, like any other model.
    response = client.post(
        "/predict", content=digit_pngs[0][0], headers={"content-type": "image/png"}
    )
    assert response.status_code == 200 and response.json()["version"] == 3
