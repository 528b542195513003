"""What the benchmarks share, so that two scripts' numbers mean the same thing.

- `time_calls`: the one timing loop. A callable is called (after untimed warm-up calls) until
  a time has passed and a number of calls is reached, each call timed with
  `time.perf_counter`; the caller takes the mean (`Timing.mean_s`, `Timing.per_second`) or the
  median (`Timing.median_s`) of the same calls.
- `percentile`: the one percentile, numpy's default: linear interpolation between the two
  nearest ranks. Every latency percentile a script computes itself uses it (hey and
  perf_analyzer report their own). bench_latency.py took the nearest rank until this module
  existed; the results committed before (docs/benchmarks/latency-c1.json) were computed so.
- `machine_info`: the one description of the machine a result was measured on.
- `service_session`: ONNX Runtime "alone" with the service's own session options
  (`service.runtime.create_session`: all graph optimisations, sequential, threads that do not
  spin), so that "alone" differs from the service by the server and nothing else.
"""

from __future__ import annotations

import atexit
import functools
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnxruntime as ort

# The instructions that decide how fast int8 (and fp32) kernels can be, when the CPU has them.
VECTOR_FLAGS = frozenset({"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"})


@dataclass(frozen=True)
class Timing:
    """The calls of one `time_calls`: each call's seconds, and the seconds of them all."""

    times: list[float]
    elapsed: float

    @property
    def calls(self) -> int:
        return len(self.times)

    @property
    def mean_s(self) -> float:
        return self.elapsed / self.calls

    @property
    def median_s(self) -> float:
        return statistics.median(self.times)

    def per_second(self, items_per_call: int = 1) -> float:
        return items_per_call * self.calls / self.elapsed


def time_calls(
    run: Callable[[], object], seconds: float, warmup: int = 0, min_calls: int = 1
) -> Timing:
    """`run` called `warmup` times untimed, then until `seconds` have passed and it has been
    called at least `min_calls` times (at least once)."""
    for _ in range(warmup):
        run()
    times: list[float] = []
    start = now = time.perf_counter()
    # One clock read per call: it ends one call's time and starts the next one's.
    while now - start < seconds or len(times) < max(1, min_calls):
        before = now
        run()
        now = time.perf_counter()
        times.append(now - before)
    return Timing(times, now - start)


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`th percentile (0 to 100) of `values`, interpolated linearly; NaN when empty."""
    return float(np.percentile(np.asarray(values, np.float64), q)) if len(values) else float("nan")


@functools.cache
def lone_repository(model: Path) -> Path:
    """A model repository holding only `model` (a <repo>/<name>/<version>/model.onnx), in a
    temporary folder removed at exit: a service started on it answers with that very file, not
    with a newer version beside it (the default is the highest version)."""
    repo = Path(tempfile.mkdtemp(prefix="mimo-bench-models-"))
    atexit.register(shutil.rmtree, repo, True)
    target = repo / model.parent.parent.name / model.parent.name
    target.mkdir(parents=True)
    shutil.copy2(model, target / "model.onnx")
    return repo


def cores() -> int:
    """The cores this process may run on (its affinity, where the system says)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    """The CPU, the cores this process may use, the platform, and the versions that move a
    measurement (Python, numpy, ONNX Runtime where installed)."""
    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": cores(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": None,
        "vector_instructions": [],
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # the HTTP clients run without it
        pass
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux
        return info
    fields = dict(
        (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in text.splitlines())
    )
    info["cpu"] = fields.get("model name", info["cpu"])
    info["vector_instructions"] = sorted(set(fields.get("flags", "").split()) & VECTOR_FLAGS)
    return info


def service_session(path: str | Path, threads: int, provider: str = "cpu") -> ort.InferenceSession:
    """An ONNX Runtime session exactly as the service makes one for `provider`."""
    # Imported here, not at the top: benchmarks/gpu/ and the HTTP clients import this module
    # where the service's own dependencies may be missing or unwanted.
    from service.runtime import create_session

    return create_session(str(path), provider, threads)
