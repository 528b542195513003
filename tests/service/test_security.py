"""Safe defaults: repository control off unless enabled (and then only with an API key), the
key compared in constant time, 401 as JSON, no CORS unless configured, names that cannot
leave the repository, no paths or tracebacks in error bodies."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr, ValidationError
from support import ROOT, SERVICE, service_env

from service.auth import check_api_key
from service.errors import Unauthorized
from service.main import create_app
from service.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def serving(repository: Path, **overrides: object) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(repository=repository, default_model="digits", threads=1, **overrides)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mimo") as client:
            yield client


async def test_repository_control_is_off_by_default(model_repository: Path) -> None:
    async with serving(model_repository) as client:
        for action in ("load", "unload"):
            answer = await client.post(f"/v2/repository/models/digits/{action}")
            assert answer.status_code == 403
            assert "MIMO_MODEL_CONTROL=explicit" in answer.json()["error"]
        # Reading the index changes nothing: it stays available.
        index = await client.post("/v2/repository/index")
        assert index.status_code == 200 and index.json()[0]["state"] == "READY"
        assert (await client.get("/v2/health/ready")).status_code == 200


def test_explicit_control_without_a_key_is_refused() -> None:
    with pytest.raises(ValidationError, match="MIMO_API_KEY"):
        Settings(model_control="explicit")
    with pytest.raises(ValidationError, match="MIMO_API_KEY"):
        Settings(model_control="explicit", api_key="")  # empty means none
    assert Settings(model_control="explicit", api_key="k").model_control == "explicit"


def test_the_service_does_not_start_with_open_control(model_repository: Path) -> None:
    env = service_env(model_repository, 1, MIMO_MODEL_CONTROL="explicit")
    done = subprocess.run(SERVICE, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "invalid settings: MIMO_MODEL_CONTROL=explicit" in done.stderr
    assert "Traceback" not in done.stderr


async def test_explicit_control_needs_the_key(model_repository: Path) -> None:
    async with serving(model_repository, model_control="explicit", api_key="k3y") as client:
        refused = await client.post("/v2/repository/models/digits/load")
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/json"
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "missing API key" in refused.json()["error"]
        wrong = await client.post(
            "/v2/repository/models/digits/load", headers={"X-API-Key": "k3y-but-longer"}
        )
        assert wrong.status_code == 401 and wrong.json() == {"error": "wrong API key"}
        ok = await client.post(
            "/v2/repository/models/digits/load", headers={"Authorization": "Bearer k3y"}
        )
        assert ok.status_code == 200


@pytest.mark.parametrize(
    "name",
    ["..", "..%2F..%2Fetc", "%2E%2E", "digits%2F..%2F..", "a%00b", ".hidden", "UPPER", "x" * 300],
)
async def test_names_never_leave_the_repository(model_repository: Path, name: str) -> None:
    headers = {"Authorization": "Bearer k"}
    async with serving(model_repository, model_control="explicit", api_key="k") as client:
        answer = await client.post(f"/v2/repository/models/{name}/load", headers=headers)
        assert answer.status_code in (400, 404), answer.text
        assert list(answer.json()) == ["error"]
        assert str(model_repository) not in answer.text
        answers = [
            await client.get(f"/v2/models/{name}", headers=headers),
            await client.get(f"/v2/models/{name}/ready"),
            await client.post(
                "/predict",
                params={"model": name},
                content=b"x",
                headers={**headers, "content-type": "image/png"},
            ),
        ]
        for got in answers:
            # `..` is resolved by the client before it is sent (then /v2 answers); anything
            # that names a model is refused as unknown.
            assert got.status_code in (200, 400, 404), got.text
            assert str(model_repository) not in got.text and "Traceback" not in got.text
            if got.status_code != 200:
                assert list(got.json()) == ["error"]


def test_key_comparison() -> None:
    key = SecretStr("s3cret")
    check_api_key(key, "Bearer s3cret", "")
    check_api_key(key, "bearer   s3cret ", "")
    check_api_key(key, "", "s3cret")
    check_api_key(None, "", "")  # no key set: open
    for authorization, header in [("", ""), ("Bearer wrong", ""), ("", "s3cre"), ("s3cret", "")]:
        with pytest.raises(Unauthorized):
            check_api_key(key, authorization, header)


async def test_no_cors_unless_configured(model_repository: Path) -> None:
    preflight = {
        "Origin": "https://page.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    async with serving(model_repository) as client:
        answer = await client.options("/predict", headers=preflight)
        assert "access-control-allow-origin" not in answer.headers
        plain = await client.get("/models", headers={"Origin": "https://page.example"})
        assert "access-control-allow-origin" not in plain.headers
    async with serving(model_repository, cors_origins="https://page.example") as client:
        answer = await client.options("/predict", headers=preflight)
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "https://page.example"
        other = await client.options("/predict", headers={**preflight, "Origin": "https://evil"})
        assert "access-control-allow-origin" not in other.headers
        plain = await client.get("/models", headers={"Origin": "https://page.example"})
        assert plain.headers["access-control-allow-origin"] == "https://page.example"


def test_cors_origins_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIMO_CORS_ORIGINS", "https://a.example, https://b.example")
    assert Settings().cors_origins == ["https://a.example", "https://b.example"]
    monkeypatch.setenv("MIMO_CORS_ORIGINS", "")
    assert Settings().cors_origins == []
