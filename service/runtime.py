"""ONNX Runtime sessions on the execution provider that was asked for, never a silent fallback.

onnxruntime-gpu quietly falls back to the CPU when CUDA cannot start (two lines on stderr), so
the providers a session really got are read back with `get_providers()`: asking for `cuda` or
`tensorrt` and getting the CPU is an error; `auto` takes the best available and logs it.
"""

from __future__ import annotations

import logging
from typing import Any

import onnxruntime as ort

log = logging.getLogger("mimo.runtime")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
SHORT = {CPU: "cpu", CUDA: "cuda", TENSORRT: "tensorrt"}


# cuDNN's HEURISTIC algorithm search, not ONNX Runtime's default EXHAUSTIVE: the exhaustive
# search plans again at each new batch size and picked slower kernels; and no TF32, so that a
# GPU's answers stay within fp32 rounding of the CPU's (docs/benchmarks.md, "On a GPU").
CUDA_OPTIONS = {"cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "0"}


# What to do when an accelerator's provider does not start, by setting value.
FIXES = {
    "cuda": "install onnxruntime-gpu with a working CUDA and cuDNN, or set MIMO_PROVIDERS=cpu",
    "tensorrt": "install TensorRT (libnvinfer) beside onnxruntime-gpu, or set MIMO_PROVIDERS=cuda",
}


class ProviderError(RuntimeError):
    pass


def requested_providers(choice: str, available: list[str]) -> list[Any]:
    """The provider list to hand to InferenceSession for a setting value."""
    if choice == "cpu":
        return [CPU]
    if choice == "cuda":
        return [(CUDA, CUDA_OPTIONS), CPU]
    if choice == "tensorrt":
        trt = {"trt_engine_cache_enable": True, "trt_fp16_enable": True}
        return [(TENSORRT, trt), (CUDA, CUDA_OPTIONS), CPU]
    if choice == "auto":
        return [
            (p, CUDA_OPTIONS) if p == CUDA else p for p in (TENSORRT, CUDA) if p in available
        ] + [CPU]
    raise ProviderError(f"unknown providers setting {choice!r}: use auto, cpu, cuda or tensorrt")


def create_session(path: str, choice: str, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # No spinning, not even within a run: threads left spinning burn the CPU that the next
    # request (or another worker) needs, and a server mostly waits; spinning between
    # operators made requests after an idle pause several times slower (docs/benchmarks.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    wanted = requested_providers(choice, ort.get_available_providers())
    try:
        session = ort.InferenceSession(path, options, providers=wanted)
    except Exception as exc:
        # A provider that cannot start (a CUDA or cuDNN library missing, no GPU) can fail the
        # whole session even after ONNX Runtime's own fallback: that is the provider's fault,
        # not the model's, when the CPU loads the same file.
        if choice == "cpu" or not _loads_on_cpu(path, options):
            raise
        if choice == "auto":
            first = wanted[0][0] if isinstance(wanted[0], tuple) else wanted[0]
            log.warning("%s: %s failed (%s); serving it on the CPU", path, first, exc)
            session = ort.InferenceSession(path, options, providers=[CPU])
        else:
            raise ProviderError(
                f"{path}: asked for {choice} but ONNX Runtime could not start it "
                f"({str(exc)[:300]}); {FIXES[choice]}"
            ) from None
    got = session.get_providers()
    if choice in ("cuda", "tensorrt"):
        needed = CUDA if choice == "cuda" else TENSORRT
        if needed not in got:
            raise ProviderError(
                f"{path}: asked for {choice} but ONNX Runtime gave {got} (available: "
                f"{ort.get_available_providers()}); {FIXES[choice]}"
            )
    log.info("%s runs on %s", path, got[0])
    return session


def _loads_on_cpu(path: str, options: ort.SessionOptions) -> bool:
    try:
        ort.InferenceSession(path, options, providers=[CPU])
    except Exception:
        return False
    return True


def provider_name(session: ort.InferenceSession) -> str:
    first = session.get_providers()[0]
    return SHORT.get(first, first)
