"""service/runtime.py: a session runs where it was asked to, or the model is refused with the
reason; never a silent fallback. The CUDA and TensorRT providers cannot run here, so the cases
where one fails to start are made by an InferenceSession that refuses them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort
import pytest

from service import runtime
from service.runtime import CPU, CUDA, TENSORRT, ProviderError, create_session


@pytest.fixture
def model_file(model_repository: Path) -> str:
    return str(model_repository / "digits" / "1" / "model.onnx")


def test_cpu_is_the_cpu(model_file: str) -> None:
    session = create_session(model_file, "cpu", 1)
    assert session.get_providers() == [CPU]
    assert runtime.provider_name(session) == "cpu"


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="CUDA is here")
@pytest.mark.parametrize("choice", ["cuda", "tensorrt"])
def test_a_provider_that_is_not_there_is_an_error(model_file: str, choice: str) -> None:
    with pytest.raises(ProviderError, match=f"asked for {choice} but ONNX Runtime gave"):
        create_session(model_file, choice, 1)


def test_auto_takes_the_best_available() -> None:
    assert runtime.requested_providers("auto", [CPU]) == [CPU]
    cuda = (CUDA, runtime.CUDA_OPTIONS)
    assert runtime.requested_providers("auto", [CUDA, CPU]) == [cuda, CPU]
    assert runtime.requested_providers("auto", [TENSORRT, CUDA, CPU]) == [TENSORRT, cuda, CPU]
    assert runtime.requested_providers("cuda", [CPU]) == [cuda, CPU]
    with pytest.raises(ProviderError, match="use auto, cpu, cuda or tensorrt"):
        runtime.requested_providers("gpu", [CPU])


class Refusing:
    """ort.InferenceSession whose non-CPU providers fail to start, as onnxruntime-gpu's do
    when a CUDA library is missing (after its own fallback failed too)."""

    real = ort.InferenceSession

    def __new__(cls, path: str, options: Any = None, providers: list[Any] | None = None) -> Any:
        names = [p[0] if isinstance(p, tuple) else p for p in providers or [CPU]]
        if names != [CPU]:
            raise RuntimeError("libcudnn.so.9: cannot open shared object file")
        return cls.real(path, options, providers=[CPU])


@pytest.mark.parametrize("choice", ["cuda", "tensorrt"])
def test_a_provider_that_cannot_start_is_the_providers_fault(
    model_file: str, choice: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "requested_providers", lambda c, a: [(CUDA, {}), CPU])
    monkeypatch.setattr(runtime.ort, "InferenceSession", Refusing)
    with pytest.raises(ProviderError, match=rf"asked for {choice} but .*libcudnn\.so\.9"):
        create_session(model_file, choice, 1)


def test_auto_serves_on_the_cpu_when_the_gpu_cannot_start(
    model_file: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runtime, "requested_providers", lambda c, a: [CUDA, CPU])
    monkeypatch.setattr(runtime.ort, "InferenceSession", Refusing)
    session = create_session(model_file, "auto", 1)
    assert session.get_providers() == [CPU]
    assert "serving it on the CPU" in caplog.text


def test_a_broken_file_stays_the_files_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not a model")
    monkeypatch.setattr(runtime.ort, "InferenceSession", Refusing)
    with pytest.raises(Exception) as caught:
        create_session(str(broken), "cuda", 1)
    assert not isinstance(caught.value, ProviderError)
