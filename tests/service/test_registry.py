"""The model repository: broken versions refused and reported, atomic reloads, unloading."""

from __future__ import annotations

import asyncio
import io
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import numpy as np
import onnx
from PIL import Image

from service.main import create_app
from service.registry import ModelRegistry
from service.settings import Settings


def png() -> bytes:
    pixels = np.zeros((8, 8), np.uint8)
    pixels[1:7, 2:6] = 200
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


KEY = "repository-tests-key"


@asynccontextmanager
async def serving(repository: Path, **overrides: object) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, reached in process over real ASGI; repository
    control on (it needs an API key, which the client sends)."""
    settings = Settings(
        repository=repository,
        default_model="digits",
        threads=1,
        **{"model_control": "explicit", "api_key": KEY, **overrides},
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://mimo", headers=headers
        ) as client:
            yield client


async def predict(client: httpx.AsyncClient, **params: object) -> httpx.Response:
    return await client.post(
        "/predict", content=png(), headers={"content-type": "image/png"}, params=params
    )


def add_version(repo: Path, version: int, content: bytes | None = None) -> Path:
    """digits/<version>/model.onnx: a copy of version 1, or the given bytes."""
    path = repo / "digits" / str(version) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    if content is None:
        shutil.copyfile(repo / "digits" / "1" / "model.onnx", path)
    else:
        path.write_bytes(content)
    return path


def without_metadata_key(source: Path, target: Path, key: str) -> None:
    model = onnx.load(str(source))
    kept = [p for p in model.metadata_props if p.key != key]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))


def test_broken_versions_are_reported_and_the_valid_one_served(repository_copy: Path) -> None:
    add_version(repository_copy, 2, b"this is not an ONNX model\n")
    no_labels = repository_copy / "digits" / "3" / "model.onnx"
    without_metadata_key(repository_copy / "digits" / "1" / "model.onnx", no_labels, "mimo.labels")

    registry = ModelRegistry(repository_copy, "cpu", 1, 4)
    report = registry.load_all()
    assert report.loaded == ["digits/1"]
    assert set(report.failed) == {"digits/2", "digits/3"}
    # Named inside the repository: clients never see the server's file system.
    assert report.failed["digits/2"].startswith("digits/2/model.onnx: not a model")
    assert report.failed["digits/3"].startswith("digits/3/model.onnx: missing metadata")
    assert all(str(repository_copy) not in why for why in report.failed.values())
    assert "mimo.labels" in report.failed["digits/3"]
    assert registry.get("digits").version == 1

    async def scenario() -> None:
        async with serving(repository_copy) as client:
            assert (await client.get("/v2/health/ready")).status_code == 200
            models = (await client.get("/models")).json()
            assert [(m["name"], m["version"], m["default"]) for m in models["models"]] == [
                ("digits", 1, True)
            ]
            assert "digits/2/model.onnx" in models["unavailable"]["digits/2"]
            assert "missing metadata mimo.labels" in models["unavailable"]["digits/3"]
            response = await predict(client)
            assert response.status_code == 200 and response.json()["version"] == 1
            assert (await predict(client, version=2)).status_code == 404
            index = (await client.post("/v2/repository/index")).json()
            states = {(row["version"], row["state"]) for row in index}
            assert states == {("1", "READY"), ("2", "UNAVAILABLE"), ("3", "UNAVAILABLE")}

    asyncio.run(scenario())


def test_reload_serves_a_new_version_and_keeps_it_when_the_file_breaks(
    repository_copy: Path,
) -> None:
    async def scenario() -> None:
        async with serving(repository_copy) as client:
            first = await predict(client)
            assert first.json()["version"] == 1

            path = add_version(repository_copy, 2)
            loaded = await client.post("/v2/repository/models/digits/load")
            assert loaded.status_code == 200, loaded.text
            assert loaded.json() == {"name": "digits", "loaded": ["digits/1", "digits/2"]}
            models = (await client.get("/models")).json()["models"]
            assert [(m["version"], m["default"]) for m in models] == [(1, False), (2, True)]
            second = await predict(client)
            assert second.status_code == 200 and second.json()["version"] == 2
            # A copy of version 1 answers as version 1 did.
            assert second.json()["predictions"] == first.json()["predictions"]

            path.write_bytes(b"\x00garbage, not protobuf\xff" * 10)
            refused = await client.post("/v2/repository/models/digits/load")
            assert refused.status_code == 400
            assert list(refused.json()) == ["error"]
            # It names the file inside the repository, not the server's file system.
            assert "digits/2/model.onnx" in refused.json()["error"]
            assert str(repository_copy) not in refused.text
            assert "previous version keeps serving" in refused.json()["error"]
            # The session loaded before the file broke keeps serving version 2.
            still = await predict(client)
            assert still.status_code == 200 and still.json()["version"] == 2
            assert still.json()["predictions"] == first.json()["predictions"]
            models = (await client.get("/models")).json()["models"]
            assert [m["version"] for m in models] == [1, 2]

            unknown = await client.post("/v2/repository/models/nothing/load")
            assert unknown.status_code == 404 and "error" in unknown.json()

    asyncio.run(scenario())


def test_requests_in_flight_during_a_reload_all_succeed(repository_copy: Path) -> None:
    async def scenario() -> None:
        async with serving(repository_copy, max_queue_delay_ms=20.0) as client:
            add_version(repository_copy, 2)

            async def later(delay: float) -> httpx.Response:
                await asyncio.sleep(delay)
                return await predict(client)

            async def reload() -> httpx.Response:
                await asyncio.sleep(0.03)
                return await client.post("/v2/repository/models/digits/load")

            requests = [later(0.005 * i) for i in range(20)]
            *responses, reloaded = await asyncio.gather(*requests, reload())
            assert reloaded.status_code == 200, reloaded.text
            assert [r.status_code for r in responses] == [200] * 20, [r.text for r in responses]
            versions = [r.json()["version"] for r in responses]
            assert set(versions) <= {1, 2}
            assert versions[0] == 1  # sent well before the swap
            assert (await predict(client)).json()["version"] == 2

    asyncio.run(scenario())


def test_unload_then_load_again(repository_copy: Path) -> None:
    async def scenario() -> None:
        async with serving(repository_copy) as client:
            assert (await predict(client)).status_code == 200
            unloaded = await client.post("/v2/repository/models/digits/unload")
            assert unloaded.status_code == 200
            assert unloaded.json() == {"name": "digits", "unloaded": True}
            gone = await predict(client)
            assert gone.status_code == 404 and "unknown model 'digits'" in gone.json()["error"]
            assert (await client.get("/models")).json()["models"] == []
            again = await client.post("/v2/repository/models/digits/unload")
            assert again.status_code == 404 and list(again.json()) == ["error"]
            assert (await client.post("/v2/repository/models/digits/load")).status_code == 200
            assert (await predict(client)).status_code == 200

    asyncio.run(scenario())


def test_readiness_follows_what_is_served_and_model_info_drops_retired(
    repository_copy: Path,
) -> None:
    async def scenario() -> None:
        async with serving(repository_copy) as client:
            assert (await client.get("/v2/health/ready")).status_code == 200
            assert (
                'mimo_model_info{ensemble_size="3",model="digits",provider="cpu",version="1"} 1.0'
                in (await client.get("/metrics")).text
            )
            assert (await client.post("/v2/repository/models/digits/unload")).status_code == 200
            unready = await client.get("/v2/health/ready")
            assert unready.status_code == 503 and "no model is served" in unready.json()["error"]
            assert (
                'model="digits",provider="cpu",version="1"} 0.0'
                in (await client.get("/metrics")).text
            )
            assert (await client.post("/v2/repository/models/digits/load")).status_code == 200
            assert (await client.get("/v2/health/ready")).status_code == 200

    asyncio.run(scenario())


def test_repository_control_is_refused_with_several_workers(repository_copy: Path) -> None:
    async def scenario() -> None:
        async with serving(repository_copy, workers=2) as client:
            refused = await client.post("/v2/repository/models/digits/load")
            assert refused.status_code == 409
            assert "MIMO_WORKERS=2" in refused.json()["error"]
            assert (await client.post("/v2/repository/models/digits/unload")).status_code == 409
            assert (await predict(client)).status_code == 200

    asyncio.run(scenario())


def test_bad_model_name_and_odd_version_folders(repository_copy: Path) -> None:
    add_version(repository_copy, 2)
    (repository_copy / "digits" / "2").rename(repository_copy / "digits" / "02")

    async def scenario() -> None:
        async with serving(repository_copy) as client:
            # "02" is not a version folder: only version 1 is served.
            listed = (await client.get("/models")).json()["models"]
            assert [m["version"] for m in listed] == [1]
            bad = await client.post("/v2/repository/models/Bad%20Name/load")
            assert bad.status_code == 400 and "must match" in bad.json()["error"]

    asyncio.run(scenario())


def test_a_lone_image_runs_on_a_session_with_more_threads(repository_copy: Path) -> None:
    from service.inference import forward, tile

    registry = ModelRegistry(repository_copy, "cpu", 1, 4, lone_threads=2)
    registry.load_all()
    model = registry.get("digits", None)
    assert model.lone_session is not None
    assert model.session.get_session_options().intra_op_num_threads == 1
    assert model.lone_session.get_session_options().intra_op_num_threads == 2
    assert model.session_for(1, lone=True) is model.lone_session
    assert model.session_for(1, lone=False) is model.session
    assert not model.fixed and model.rows_for(3) == 3  # the CPU runs any batch size
    image = np.random.default_rng(0).random((1, *model.contract.input_shape), np.float32)
    inputs = tile(image, model.contract.ensemble_size)
    np.testing.assert_allclose(
        forward(model.lone_session, inputs), forward(model.session, inputs), atol=1e-5
    )
    # no thread of either spins, not even between the operators of a pass (service/runtime.py)
    for session in (model.lone_session, model.session):
        options = session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    plain = ModelRegistry(repository_copy, "cpu", 2, 4, lone_threads=0)  # (Layout.lone_threads)
    plain.load_all()
    assert plain.get("digits", None).lone_session is None


def test_fixed_batch_sizes_give_a_session_per_size(repository_copy: Path) -> None:
    """Settings.fixed_batch_sizes (on by default for GPUs): one session per power of two up to
    the batch limit, each warmed; a batch runs on the session of the first size that holds it."""
    from service.inference import forward, tile

    registry = ModelRegistry(repository_copy, "cpu", 1, 6, lone_threads=2, fixed_sizes=True)
    registry.load_all()
    model = registry.get("digits", None)
    assert sorted(model.fixed) == [1, 2, 4, 6]
    assert len({id(s) for s in model.fixed.values()}) == 4  # one session each
    assert model.fixed[6] is model.session and model.lone_session is None
    assert [model.rows_for(n) for n in (1, 2, 3, 5, 6)] == [1, 2, 4, 6, 6]
    assert model.session_for(4, lone=True) is model.fixed[4]
    images = np.random.default_rng(0).random((3, *model.contract.input_shape), np.float32)
    m = model.contract.ensemble_size
    padded = forward(model.session_for(4), tile(images, m, 4))[:3]
    np.testing.assert_allclose(padded, forward(model.session, tile(images, m)), atol=1e-5)
