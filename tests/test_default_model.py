"""The shipped models keep their promises, through ONNX Runtime: models/mnist/2 (the default,
served when no version is named: a single network with outlier exposure, flagged by predictive
entropy) and models/mnist/1 (the MIMO ensemble it replaced, flagged by mutual information)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.contract import ModelContract, parse_contract
from service.postprocess import score
from service.uncertainty import ensemble_uncertainty
from training.data import load_dataset
from training.ood import EVALUATION_FAMILIES, make_ood

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = Path(os.environ.get("MNIST_DIR", ROOT.parent / "shared" / "data" / "mnist"))
# version -> (M, the measure its `uncertain` flag uses)
SHIPPED = {"1": (3, "mutual_information"), "2": (1, "predictive_entropy")}
DEFAULT_VERSION = max(SHIPPED, key=int)


@pytest.fixture(scope="module", params=sorted(SHIPPED))
def version(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def model(version: str) -> Path:
    path = ROOT / "models" / "mnist" / version / "model.onnx"
    assert path.is_file(), f"{path} is missing: its README.md says how it was made"
    return path


@pytest.fixture(scope="module")
def session(model: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def contract(session: ort.InferenceSession, model: Path) -> ModelContract:
    meta = session.get_modelmeta().custom_metadata_map
    return parse_contract(meta, session.get_inputs(), session.get_outputs(), str(model))


def logits(session: ort.InferenceSession, images: np.ndarray, m: int) -> np.ndarray:
    """float32 [N, C, H, W] -> [N, M, K], each image tiled into the M slots."""
    out = []
    for start in range(0, len(images), 1000):
        x = images[start : start + 1000]
        out.append(session.run(["logits"], {"images": np.repeat(x[:, None], m, axis=1)})[0])
    return np.concatenate(out)


def flagged(contract: ModelContract, images: np.ndarray, session: ort.InferenceSession) -> float:
    """The share of `images` the served `uncertain` flag raises (the service's own scoring)."""
    return float(
        np.mean(score(contract, logits(session, images, contract.ensemble_size)).uncertain)
    )


def test_is_small_and_keeps_the_contract(
    contract: ModelContract, model: Path, version: str
) -> None:
    assert model.stat().st_size < 5e6
    assert (contract.ensemble_size, contract.uncertain_measure) == SHIPPED[version]
    assert contract.input_shape == (1, 28, 28)
    assert contract.labels == tuple(str(d) for d in range(10))
    assert contract.preprocess["color"] == "L"
    assert contract.training["dataset"] == "mnist"
    assert contract.evaluation["clean"]["accuracy"] >= 0.993
    assert (model.parent / "README.md").is_file()


@pytest.fixture(scope="module")
def mnist_test():
    if not MNIST_DIR.is_dir():
        pytest.skip(f"no MNIST files at {MNIST_DIR} (set MNIST_DIR)")
    return load_dataset("mnist", "test", MNIST_DIR)


def test_accuracy_on_the_real_mnist_test_set(session, contract, mnist_test) -> None:
    x = mnist_test.images.astype(np.float32) / 255.0
    u = ensemble_uncertainty(logits(session, x, contract.ensemble_size), contract.temperature)
    accuracy = float((u.probabilities.argmax(1) == mnist_test.labels).mean())
    assert accuracy >= 0.993
    for m in range(contract.ensemble_size):
        assert (u.member_probabilities[:, m].argmax(1) == mnist_test.labels).mean() >= 0.98
    # The threshold is the validation 95th percentile: about 5% of real digits are flagged.
    assert flagged(contract, x, session) <= 0.07


@pytest.mark.parametrize("family", [*EVALUATION_FAMILIES])
def test_obvious_non_digits_are_uncertain(session, contract, family: str) -> None:
    share = flagged(contract, make_ood(family, 200, contract.input_shape, seed=123), session)
    assert share >= 0.5, f"only {share:.0%} of {family} images flagged uncertain"


def png_bytes(pixels: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def test_served_digits_are_certain_and_noise_is_uncertain(mnist_test) -> None:
    """What `make serve` promises, through the real app: the default version answers, digits
    right, noise flagged."""
    from fastapi.testclient import TestClient

    from service.main import create_app
    from service.settings import Settings

    app = create_app(Settings(repository=ROOT / "models", default_model="mnist"))
    with TestClient(app) as client:
        replies = [
            client.post(
                "/predict",
                content=png_bytes(mnist_test.images[i, 0]),
                headers={"content-type": "image/png"},
            ).json()
            for i in range(20)
        ]
        assert {(str(r["version"]), r["uncertain_measure"]) for r in replies} == {
            (DEFAULT_VERSION, SHIPPED[DEFAULT_VERSION][1])
        }
        answers = [r["predictions"][0] for r in replies]
        correct = [
            a["index"] == int(y) for a, y in zip(answers, mnist_test.labels[:20], strict=True)
        ]
        assert sum(correct) >= 19
        assert sum(a["uncertain"] for a in answers) <= 2
        assert all(a["uncertainty"]["mutual_information"] < 0.1 for a in answers)
        noise = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
        flagged = [
            client.post(
                "/predict", content=png_bytes(x), headers={"content-type": "image/png"}
            ).json()["predictions"][0]
            for x in noise
        ]
        assert all(a["uncertain"] for a in flagged), [a["uncertainty"] for a in flagged]
