"""service/fastpath.py: a raw-body /predict with plain parameters skips FastAPI's machinery
and answers exactly what the route answers; anything unusual goes on to the route."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.fastpath import plain_parameters
from service.main import create_app
from service.parameters import DEFAULTS
from service.settings import Settings


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (b"", {}),
        (b"top_k=5&members=false", {"top_k": 5, "members": False}),
        (
            b"model=digits&version=1&mode=packed",
            {"model": "digits", "version": 1, "mode": "packed"},
        ),
        (b"member_probabilities=1", {"member_probabilities": True}),
        (b"other=1", {}),  # ignored, as the route ignores it
    ],
)
def test_plain_parameters(query: bytes, expected: dict) -> None:
    parsed = plain_parameters(query)
    assert parsed is not None
    assert parsed.model_dump() == DEFAULTS.model_dump() | expected


@pytest.mark.parametrize(
    "query",
    [
        b"top_k=0",
        b"top_k=1001",
        b"top_k=abc",
        b"top_k=3&top_k=4",
        b"version=%C2%B2",
        b"version=0",
        b"members=maybe",
        b"mode=bagged",
    ],
)
def test_anything_unusual_goes_to_the_route(query: bytes) -> None:
    assert plain_parameters(query) is None


@pytest.fixture(scope="module")
def client(model_repository: Path) -> Iterator[TestClient]:
    settings = Settings(
        repository=model_repository, default_model="digits", threads=1, api_key="k3y"
    )
    with TestClient(create_app(settings), headers={"X-API-Key": "k3y"}) as c:
        yield c


def test_same_answer_as_the_route(client: TestClient, digit_pngs) -> None:
    data = digit_pngs[3][0]
    for params in ({}, {"top_k": 10, "member_probabilities": "true"}, {"mode": "packed"}):
        fast = client.post(
            "/predict", content=data, headers={"content-type": "image/png"}, params=params
        )
        routed = client.post(
            "/predict", files=[("file", ("x.png", data, "image/png"))], params=params
        )  # multipart: always the route
        assert fast.status_code == routed.status_code == 200
        assert fast.headers["content-type"] == routed.headers["content-type"]
        expected = routed.json()
        expected["predictions"][0]["filename"] = None  # a raw body has no file name
        assert fast.json() == expected


def test_errors_as_the_route_words_them(client: TestClient, digit_pngs) -> None:
    png = {"content-type": "image/png"}
    # refused by the fast path itself
    missing = client.post("/predict", content=digit_pngs[0][0], headers={**png, "X-API-Key": ""})
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "missing API key" in missing.json()["error"]
    broken = client.post("/predict", content=b"\x89PNG\r\n\x1a\nbroken", headers=png)
    assert broken.status_code == 400 and list(broken.json()) == ["error"]
    unknown = client.post(
        "/predict", content=digit_pngs[0][0], headers=png, params={"model": "nope"}
    )
    assert unknown.status_code == 404 and "unknown model" in unknown.json()["error"]
    # handed on to the route, which validates
    bad = client.post("/predict", content=digit_pngs[0][0], headers=png, params={"top_k": "x"})
    assert bad.status_code == 400 and "top_k" in bad.json()["error"]
    # the same bytes whichever way the request went (one error renderer)
    for params in ({"version": "9" * 40}, {"model": "nö"}):
        fast = client.post("/predict", content=digit_pngs[0][0], headers=png, params=params)
        routed = client.post(
            "/predict", files=[("file", ("x.png", digit_pngs[0][0], "image/png"))], params=params
        )
        assert fast.status_code == routed.status_code == 404
        assert fast.content == routed.content


def test_inside_cors_and_the_metrics(model_repository: Path, digit_pngs) -> None:
    """The fast path skips FastAPI's layers, not this service's: a browser page still gets
    its CORS header, and the request is counted like any other."""
    settings = Settings(
        repository=model_repository,
        default_model="digits",
        threads=1,
        cors_origins=["https://page.example"],
    )
    with TestClient(create_app(settings)) as c:
        answer = c.post(
            "/predict",
            content=digit_pngs[0][0],
            headers={"content-type": "image/png", "Origin": "https://page.example"},
        )
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "https://page.example"
        exposition = c.get("/metrics").text
    assert 'mimo_requests_total{endpoint="/predict",status="200"}' in exposition
    assert 'mimo_model_requests_total{model="digits",status="200",version="1"}' in exposition
