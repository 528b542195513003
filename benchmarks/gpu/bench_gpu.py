"""The GPU path checked and measured in one call: the service on CUDA against the same
machine's CPU cores, side by side in one run, and ONNX Runtime alone beside it.

    python -m benchmarks.gpu.bench_gpu --out results/            # on the GPU machine
    python -m benchmarks.gpu.bench_gpu --out /tmp/r --provider cpu --tiny   # anywhere

In order of what matters most, each step written out as soon as it is done (so a run stopped
at its time limit still leaves what it measured), the rest skipped when `--budget-s` runs out:

1. the machine: ONNX Runtime's providers (CUDA among them?), the GPU, the CUDA libraries;
2. the models: models/mnist/1 and a CIFAR-size WRN-16-4 at M=3 and M=1
   (benchmarks/make_cifar_model.py, untrained: speed only), each served by `python -m service`
   with MIMO_PROVIDERS=<provider> and =cpu at once;
3. checks: /models names the provider; /predict's member probabilities on 100 real digits (and
   100 random CIFAR-size images) equal the CPU's within `--tolerance`; MIMO_PROVIDERS=tensorrt
   where TensorRT is absent refuses the model with the service's error (no silent fallback);
4. ONNX Runtime alone (the service's own session options) at batch 1, 32, 256: images/s;
   cuDNN's convolution search (the first pass at each new batch size, exhaustive vs
   heuristic); I/O binding and CUDA graphs at the largest batch;
5. the service under `hey` at 1, 32 and 256 clients: GPU and CPU, ensemble and packed mode,
   M=3 and M=1; p50/p99 and the server's CPU per request.

It writes <out>/gpu.json (everything), <out>/gpu.md (the tables), <out>/log.txt and
<out>/servers.txt (the servers' own output). It asserts no timing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.bench_serving import free_port, hey, stop
from benchmarks.common import lone_repository, machine_info, service_session, time_calls

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
MNIST = ROOT / "models" / "mnist" / "1" / "model.onnx"
MODULE = "benchmarks.gpu.bench_gpu"
LIBS_FLAG = "MIMO_GPU_BENCH_LIBS"  # set once the CUDA libraries are on the loader's path
BATCHES = (1, 32, 256)
CLIENTS = (1, 32, 256)


# ---------------------------------------------------------------- the CUDA libraries


def nvidia_library_dirs() -> list[str]:
    """Where pip's NVIDIA packages (the CUDA runtime, cuBLAS, cuDNN, ...) keep their shared
    libraries: onnxruntime-gpu finds them there only with the loader's path pointing at them
    (onnxruntime.preload_dlls looks beside onnxruntime itself, which pip --target moves)."""
    found: list[str] = []
    for entry in sys.path:
        base = Path(entry or ".") / "nvidia"
        if not base.is_dir():
            continue
        for lib in sorted(base.glob("*/lib")):
            if any(lib.glob("*.so*")) and str(lib) not in found:
                found.append(str(lib))
    return found


def with_cuda_libraries() -> None:
    """Re-run this module once with LD_LIBRARY_PATH naming those folders: the loader reads it
    at start only, and the servers started from here inherit it."""
    if os.environ.get(LIBS_FLAG):
        return
    dirs = nvidia_library_dirs()
    env = dict(os.environ)
    env[LIBS_FLAG] = "1"
    if dirs:
        env["LD_LIBRARY_PATH"] = ":".join([*dirs, env.get("LD_LIBRARY_PATH", "")]).rstrip(":")
    # as a module again, from the same folder (sys.argv[0] is this file's path)
    os.execve(PY, [PY, "-m", MODULE, *sys.argv[1:]], env)


# ---------------------------------------------------------------- the report


@dataclass
class Report:
    out: Path
    started: float = field(default_factory=time.monotonic)
    data: dict[str, Any] = field(default_factory=dict)

    def log(self, text: str) -> None:
        line = f"[{time.monotonic() - self.started:6.1f} s] {text}"
        print(line, flush=True)
        with (self.out / "log.txt").open("a") as f:
            f.write(line + "\n")

    def save(self) -> None:
        self.data["elapsed_s"] = round(time.monotonic() - self.started, 1)
        (self.out / "gpu.json").write_text(json.dumps(self.data, indent=1, default=str))
        (self.out / "gpu.md").write_text(render(self.data))


@dataclass
class Deadline:
    budget_s: float
    started: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)


def step(report: Report, deadline: Deadline, name: str, need_s: float, run: Callable[[], Any]):
    """Run one step if the time left allows; its result (or its error) goes into the report,
    which is saved at once."""
    if deadline.left() < need_s:
        report.data.setdefault("skipped", []).append(f"{name}: {deadline.left():.0f} s left")
        report.log(f"skip {name} ({deadline.left():.0f} s left, needs ~{need_s:.0f})")
        report.save()
        return None
    report.log(f"{name} ...")
    try:
        result = run()
    except Exception as exc:
        report.data.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
        report.log(f"{name} failed: {type(exc).__name__}: {exc}")
        result = None
    report.save()
    return result


# ---------------------------------------------------------------- the machine


def environment(provider: str) -> dict[str, Any]:
    import onnxruntime as ort

    facts: dict[str, Any] = machine_info() | {
        "onnxruntime_file": ort.__file__,
        "providers_available": ort.get_available_providers(),
        "provider_wanted": provider,
        "ld_library_path": os.environ.get("LD_LIBRARY_PATH", ""),
    }
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        facts["gpu"] = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout.strip()
    facts["provider_listed"] = PROVIDERS[provider] in facts["providers_available"]
    return facts


PROVIDERS = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


# ---------------------------------------------------------------- models and servers


@dataclass
class Served:
    key: str  # e.g. "cifar@cuda"
    model: str
    provider: str
    repo: Path
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def make_cifar(work: Path) -> dict[str, Path]:
    """WRN-16-4 at M=3 (`cifar`) and M=1 (`cifar-m1`), one repository each, built at once."""
    made = {}
    procs = []
    for name, m in (("cifar", 3), ("cifar-m1", 1)):
        repo = work / name
        command = [PY, "-m", "benchmarks.make_cifar_model", "--out", str(repo)]
        command += ["--ensemble-size", str(m), "--name", name]
        procs.append(
            subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
        made[name] = repo
    for p in procs:
        out, _ = p.communicate(timeout=300)
        if p.returncode:
            raise RuntimeError(f"make_cifar_model failed: {out.decode(errors='replace')[-800:]}")
    return made


def start(
    key: str, repo: Path, model: str, provider: str, work: Path, env: dict[str, str]
) -> Served:
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("MIMO_")}
    settings = {
        "MIMO_REPOSITORY": str(repo),
        "MIMO_DEFAULT_MODEL": model,
        "MIMO_PORT": str(port),
        "MIMO_GRPC_PORT": "0",
        "MIMO_LOG_LEVEL": "warning",
        "MIMO_PROVIDERS": provider,
    }
    log = work / f"server-{key.replace('@', '-')}.log"
    process = subprocess.Popen(
        [PY, "-m", "service"],
        env=base | settings | env,
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # stopping it stops its workers too
    )
    return Served(key, model, provider, repo, process, port, log)


def ready(server: Served, image: bytes, timeout: float) -> None:
    """Answering /predict, or why not: a model the server refused (its provider could not
    start, say) fails at once instead of at the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"exited with {server.process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            answer = httpx.post(
                f"{server.url}/predict",
                content=image,
                headers={"content-type": "image/png"},
                timeout=10,
            )
            if answer.status_code == 200:
                return
            refused = httpx.get(f"{server.url}/models", timeout=5).json().get("unavailable")
            if refused:
                raise RuntimeError(f"model refused: {refused}")
        time.sleep(0.3)
    raise TimeoutError(f"{server.url}/predict not answering within {timeout:.0f} s")


def png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_images(model: str, digits: Path | None, count: int) -> list[bytes]:
    """Real MNIST digits when given (an .npz with `images` [N, 28, 28] uint8), else random
    pixels of the model's size (any image checks that two providers agree)."""
    rng = np.random.default_rng(0)
    if model == "mnist":
        if digits is not None:
            return [png(d) for d in np.load(digits)["images"][:count]]
        return [png(rng.integers(0, 256, (28, 28), dtype=np.uint8)) for _ in range(count)]
    return [png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(count)]


# ---------------------------------------------------------------- checks


def models_say(server: Served) -> dict[str, Any]:
    answer = httpx.get(f"{server.url}/models", timeout=10).json()
    return {
        "providers": {m["name"]: m["provider"] for m in answer["models"]},
        "unavailable": answer["unavailable"],
    }


def member_probabilities(server: Served, images: list[bytes]) -> np.ndarray:
    rows = []
    with httpx.Client(timeout=30) as client:
        for image in images:
            answer = client.post(
                f"{server.url}/predict?member_probabilities=true&members=false",
                content=image,
                headers={"content-type": "image/png"},
            )
            answer.raise_for_status()
            rows.append(answer.json()["predictions"][0]["member_probabilities"])
    return np.asarray(rows, np.float64)  # [N, M, K]


def agreement(gpu: Served, cpu: Served, images: list[bytes], tolerance: float) -> dict[str, Any]:
    a, b = member_probabilities(gpu, images), member_probabilities(cpu, images)
    diff = float(np.abs(a - b).max())
    same_class = int((a.mean(1).argmax(-1) == b.mean(1).argmax(-1)).sum())
    return {
        "images": len(images),
        "max_abs_diff": diff,
        "tolerance": tolerance,
        "equal_within_tolerance": diff <= tolerance,
        "same_predicted_class": same_class,
    }


def tensorrt_refused(work: Path) -> dict[str, Any]:
    """MIMO_PROVIDERS=tensorrt without TensorRT: the model must be refused, not served on
    CUDA or the CPU in its place."""
    server = start("mnist@tensorrt", lone_repository(MNIST), "mnist", "tensorrt", work, {})
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and server.process.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.url}/v2/health/live", timeout=2).status_code == 200:
                    break
            time.sleep(0.3)
        if server.process.poll() is not None:
            return {"exited": server.process.returncode, "log": server.log.read_text()[-1500:]}
        said = models_say(server)
        answer = httpx.post(
            f"{server.url}/predict",
            content=png(np.zeros((28, 28), np.uint8)),
            headers={"content-type": "image/png"},
            timeout=10,
        )
        return said | {
            "refused": "mnist" not in said["providers"],
            "predict_status": answer.status_code,
            "predict_answer": answer.text[:400],
        }
    finally:
        stop(server.process)


# ---------------------------------------------------------------- ONNX Runtime alone


def timed_runs(run: Callable[[], Any], seconds: float) -> float:
    """Median seconds per call over `seconds` (at least 5 calls), after 3 warm-up calls."""
    return time_calls(run, seconds, warmup=3, min_calls=5).median_s


def random_input(session: Any, batch: int) -> np.ndarray:
    shape = session.get_inputs()[0].shape  # [batch, M, C, H, W]
    rng = np.random.default_rng(batch)
    return rng.random((batch, *shape[1:]), dtype=np.float32)


def raw_throughput(
    path: Path, provider: str, seconds: float, threads: int, batches: tuple[int, ...]
) -> dict[str, Any]:
    """The service's own session (service/runtime.py) fed in-memory tensors, no HTTP."""
    session = service_session(path, threads, provider)
    rows = {}
    for batch in batches:
        x = random_input(session, batch)
        per_call = timed_runs(lambda x=x: session.run(["logits"], {"images": x}), seconds)
        rows[str(batch)] = {"ms_per_batch": per_call * 1000, "images_per_s": batch / per_call}
    return {"providers": session.get_providers(), "batches": rows}


def conv_search(path: Path) -> dict[str, Any]:
    """cuDNN's convolution algorithm search as the service sets it (EXHAUSTIVE) against
    HEURISTIC: the first pass at each new batch size (the dynamic batcher makes many) and the
    steady time at the largest."""
    import onnxruntime as ort

    from service.runtime import CUDA_OPTIONS

    found = {}
    for search in ("EXHAUSTIVE", "HEURISTIC"):
        options = CUDA_OPTIONS | {"cudnn_conv_algo_search": search}
        session = ort.InferenceSession(
            str(path), providers=[("CUDAExecutionProvider", options), "CPUExecutionProvider"]
        )
        first = {}
        for batch in (1, 2, 3, 5, 8, 13, 21, 32, 256):
            x = random_input(session, batch)
            t = time.perf_counter()
            session.run(["logits"], {"images": x})
            first[str(batch)] = (time.perf_counter() - t) * 1000
        x = random_input(session, BATCHES[-1])
        steady = timed_runs(lambda x=x, s=session: s.run(["logits"], {"images": x}), 1.0)
        found[search] = {
            "first_pass_ms": first,
            "first_passes_total_ms": sum(first.values()),
            f"steady_ms_batch{BATCHES[-1]}": steady * 1000,
        }
    return found


def shape_changes(path: Path, provider: str = "cuda") -> dict[str, Any]:
    """ms per pass when the batch size changes at every pass (as a dynamic batcher's do):
    on one session (the CUDA provider plans its convolutions again at each change of shape),
    and on the service's session per size (ServedModel.fixed), also from a new thread."""
    import threading

    from service.registry import load_model

    model = load_model(path, "cifar", 1, provider, 1, 32, fixed_sizes=True)
    sizes = sorted(model.fixed)
    inputs = {b: random_input(model.session, b) for b in sizes}
    found: dict[str, Any] = {}

    def alternate(label: str, session_for: Callable[[int], Any]) -> None:
        times = []
        for _ in range(3):
            for b in sizes:
                t = time.perf_counter()
                session_for(b).run(["logits"], {"images": inputs[b]})
                times.append((time.perf_counter() - t) * 1000)
        found[label] = {"median_ms": statistics.median(times), "max_ms": max(times)}

    alternate("one session, size changing every pass", lambda b: model.session)
    alternate("a session per size", lambda b: model.fixed[b])
    worker = threading.Thread(
        target=alternate, args=("a session per size, new thread", lambda b: model.fixed[b])
    )
    worker.start()
    worker.join()
    found["sizes"] = sizes
    return found


def binding_and_graphs(path: Path, seconds: float) -> dict[str, Any]:
    """At the largest batch, with the service's CUDA options: plain run (host tensors in and
    out), TF32 allowed, I/O binding (tensors kept on the GPU: the copies' share), and a CUDA
    graph replayed (launch overhead's share)."""
    import onnxruntime as ort

    from service.runtime import CUDA_OPTIONS

    batch = BATCHES[-1]
    found: dict[str, Any] = {}
    cuda = [("CUDAExecutionProvider", CUDA_OPTIONS)]
    plain = ort.InferenceSession(str(path), providers=cuda)
    x = random_input(plain, batch)
    found["plain_ms"] = 1000 * timed_runs(lambda: plain.run(["logits"], {"images": x}), seconds)
    tf32 = ort.InferenceSession(
        str(path), providers=[("CUDAExecutionProvider", CUDA_OPTIONS | {"use_tf32": "1"})]
    )
    found["tf32_ms"] = 1000 * timed_runs(lambda: tf32.run(["logits"], {"images": x}), seconds)
    a, b = plain.run(["logits"], {"images": x})[0], tf32.run(["logits"], {"images": x})[0]
    found["tf32_max_abs_logit_diff"] = float(np.abs(a - b).max())
    x_gpu = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
    binding = plain.io_binding()
    binding.bind_ortvalue_input("images", x_gpu)
    binding.bind_output("logits", "cuda")
    found["io_binding_ms"] = 1000 * timed_runs(lambda: plain.run_with_iobinding(binding), seconds)
    try:
        graphed = ort.InferenceSession(
            str(path),
            providers=[("CUDAExecutionProvider", CUDA_OPTIONS | {"enable_cuda_graph": "1"})],
        )
        logits = graphed.get_outputs()[0].shape
        y_gpu = ort.OrtValue.ortvalue_from_shape_and_type(
            [batch, *logits[1:]], np.float32, "cuda", 0
        )
        binding_g = graphed.io_binding()
        binding_g.bind_ortvalue_input("images", x_gpu)
        binding_g.bind_ortvalue_output("logits", y_gpu)
        found["cuda_graph_ms"] = 1000 * timed_runs(
            lambda: graphed.run_with_iobinding(binding_g), seconds
        )
    except Exception as exc:  # not every graph can be captured
        found["cuda_graph_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    return found


# ---------------------------------------------------------------- under load


def load_run(
    server: Served, image: Path, mode: str, clients: int, seconds: float
) -> dict[str, Any]:
    path = "/predict" + ("?mode=packed" if mode == "packed" else "")
    result = hey(server.url + path, image, clients, seconds, server.process.pid)
    result["non_200"] = sum(n for code, n in result.pop("statuses").items() if code != 200)
    return {"server": server.key, "mode": mode, "clients": clients} | result


def render(data: dict[str, Any]) -> str:
    """gpu.md: the tables a reader wants, from gpu.json's data."""
    env = data.get("environment", {})
    lines = [
        f"# GPU run: {env.get('gpu', 'no GPU read')}, {env.get('cores')} cores, "
        f"onnxruntime {env.get('onnxruntime')} ({', '.join(env.get('providers_available', []))})",
        "",
    ]
    checks = data.get("checks", {})
    if checks:
        lines += ["## Checks", ""]
        for name, value in checks.items():
            lines.append(f"- **{name}**: `{json.dumps(value, default=str)[:600]}`")
        lines.append("")
    raw = data.get("raw", {})
    if raw:
        lines += ["## ONNX Runtime alone (the service's session options; images/s)", ""]
        batches = data["batches"]
        lines += ["| model | provider | " + " | ".join(f"batch {b}" for b in batches) + " |"]
        lines += ["|---|---|" + "---:|" * len(batches)]
        for key, facts in raw.items():
            cells = [f"{facts['batches'][str(b)]['images_per_s']:.0f}" for b in batches]
            model, provider = key.split("@")
            lines.append(f"| {model} | {provider} | " + " | ".join(cells) + " |")
        lines.append("")
    runs = data.get("load", [])
    if runs:
        lines += ["## The service under hey (req/s; p50 / p99 ms)", ""]
        lines += [
            "| server | mode | clients | req/s | p50 ms | p99 ms | non-200 | server CPU ms/req |"
        ]
        lines += ["|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in runs:
            lines.append(
                f"| {r['server']} | {r['mode']} | {r['clients']} | {r['req_per_s']:.0f} | "
                f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['non_200']} | "
                f"{r['server_cpu_ms']:.3f} |"
            )
        lines.append("")
    derived = data.get("derived", {})
    if derived:
        lines += ["## Derived", ""]
        lines += [
            f"- {k}: {v:.3f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in derived.items()
        ]
        lines.append("")
    for key in ("conv_search", "binding_and_graphs", "shape_changes", "skipped", "errors"):
        if data.get(key):
            lines += [f"## {key}", "", "```", json.dumps(data[key], indent=1), "```", ""]
    lines.append(f"elapsed {data.get('elapsed_s')} s")
    return "\n".join(lines) + "\n"


def derive(data: dict[str, Any], provider: str) -> dict[str, Any]:
    """The issue's ratios from what was measured: M=3 against M=1 per image, the service
    against ONNX Runtime alone at the largest batch, the GPU against the CPU."""
    out: dict[str, Any] = {}
    raw = data.get("raw", {})
    big = str(data["batches"][-1])
    m3, m1 = raw.get(f"cifar@{provider}"), raw.get(f"cifar-m1@{provider}")
    if m3 and m1:
        out[f"raw M=3 / M=1 time per image, batch {big}"] = (
            m1["batches"][big]["images_per_s"] / m3["batches"][big]["images_per_s"]
        )
    graphs = data.get("binding_and_graphs", {})
    if "io_binding_ms" in graphs.get("cifar", {}) and "io_binding_ms" in graphs.get("cifar-m1", {}):
        out[f"raw M=3 / M=1 time per image, batch {big}, tensors on the GPU"] = (
            graphs["cifar"]["io_binding_ms"] / graphs["cifar-m1"]["io_binding_ms"]
        )
    rps = {(r["server"], r["mode"], r["clients"]): r["req_per_s"] for r in data.get("load", [])}
    top = data["clients"][-1]
    for model in ("mnist", "cifar"):
        served = rps.get((f"{model}@{provider}", "ensemble", top))
        if served and raw.get(f"{model}@{provider}"):
            alone = raw[f"{model}@{provider}"]["batches"][big]["images_per_s"]
            out[f"{model}: service c={top} / raw batch {big}"] = served / alone
        on_cpu = rps.get((f"{model}@cpu", "ensemble", top))
        if served and on_cpu and provider != "cpu":
            out[f"{model}: {provider} / cpu req/s at c={top}"] = served / on_cpu
    one, three = (
        rps.get((f"cifar-m1@{provider}", "ensemble", top)),
        rps.get((f"cifar@{provider}", "ensemble", top)),
    )
    if one and three:
        out[f"service M=3 / M=1 time per image at c={top}"] = one / three
    return out


# ---------------------------------------------------------------- the run


@contextlib.contextmanager
def servers_stopped(started: list[Served], report: Report) -> Iterator[None]:
    """Every server stopped at the end (also on SIGTERM: a server left running outlives the
    call on the GPU machine), its output kept in servers.txt."""

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except KeyboardInterrupt as exc:
        report.data.setdefault("errors", {})["stopped"] = str(exc) or "interrupted"
    finally:
        with (report.out / "servers.txt").open("w") as f:
            for s in started:
                stop(s.process)
                f.write(f"===== {s.key} (exit {s.process.returncode})\n")
                f.write(s.log.read_text(errors="replace")[-4000:] + "\n")
        report.save()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the results")
    parser.add_argument("--provider", choices=sorted(PROVIDERS), default="cuda")
    parser.add_argument("--budget-s", type=float, default=330, help="stop starting steps after")
    parser.add_argument("--seconds", type=float, default=4.0, help="hey -z per load run")
    parser.add_argument("--digits", type=Path, help="an .npz of real digits (`images`)")
    parser.add_argument("--images", type=int, default=100, help="images of the equality check")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument(
        "--tiny", action="store_true", help="a seconds-long run of every step (the tests)"
    )
    args = parser.parse_args(argv)
    with_cuda_libraries()
    args.out.mkdir(parents=True, exist_ok=True)
    report = Report(args.out)
    deadline = Deadline(args.budget_s)
    gpu, cpu = args.provider, "cpu"
    providers = list(dict.fromkeys([gpu, cpu]))  # one server per provider when they are one
    seconds = 0.3 if args.tiny else args.seconds
    raw_s = 0.1 if args.tiny else 1.0
    clients = (1, 4) if args.tiny else CLIENTS
    batches = (1, 4) if args.tiny else BATCHES
    work = Path(tempfile.mkdtemp(prefix="mimo-gpu-bench-"))
    report.data["args"] = {k: str(v) for k, v in vars(args).items()}
    report.data["batches"], report.data["clients"] = batches, clients
    report.data["environment"] = env = environment(gpu)
    report.log(json.dumps(env))
    report.save()
    if not env["provider_listed"]:
        report.log(f"ONNX Runtime lists no {PROVIDERS[gpu]}: measuring the CPU alone")
    started: list[Served] = []
    checks = report.data.setdefault("checks", {})
    with servers_stopped(started, report):
        repos = {"mnist": lone_repository(MNIST)}  # (models/ would serve its newest, M=1)
        started += [start(f"mnist@{p}", repos["mnist"], "mnist", p, work, {}) for p in providers]
        made = step(report, deadline, "build the CIFAR-size models", 60, lambda: make_cifar(work))
        if made:
            repos |= made
            for m, p in [*(("cifar", p) for p in providers), ("cifar-m1", gpu)]:
                started.append(start(f"{m}@{p}", repos[m], m, p, work, {}))
            if gpu != cpu:
                # more HTTP workers, to feed the GPU from more cores
                wide = {"MIMO_WORKERS": "8"}
                started.append(start(f"cifar-w8@{gpu}", repos["cifar"], "cifar", gpu, work, wide))
        up: dict[str, Served] = {}
        for server in started:
            try:
                ready(server, test_images(server.model, None, 1)[0], 180)
                up[server.key] = server
                report.log(f"{server.key} serving on {server.port}")
            except Exception as exc:
                checks[f"{server.key} start"] = f"failed: {exc}: {server.log.read_text()[-800:]}"
                report.log(f"{server.key} did not start: {exc}")
        report.save()
        for key, server in up.items():
            step(
                report,
                deadline,
                f"/models of {key}",
                5,
                lambda s=server: checks.__setitem__(f"/models of {s.key}", models_say(s)),
            )
        for model in ("mnist", "cifar"):
            a, b = up.get(f"{model}@{gpu}"), up.get(f"{model}@{cpu}")
            if a and b and gpu != cpu:
                images = test_images(model, args.digits if model == "mnist" else None, args.images)
                step(
                    report,
                    deadline,
                    f"{model}: {gpu} equals cpu",
                    20,
                    lambda a=a, b=b, i=images: checks.__setitem__(
                        f"{a.model} {gpu} = cpu", agreement(a, b, i, args.tolerance)
                    ),
                )
        if gpu == "cuda" and not args.tiny:
            step(
                report,
                deadline,
                "tensorrt is refused",
                40,
                lambda: checks.__setitem__("MIMO_PROVIDERS=tensorrt", tensorrt_refused(work)),
            )
        raw = report.data.setdefault("raw", {})
        for model in repos:
            path = repos[model] / model / "1" / "model.onnx"
            for provider in providers:
                if model == "cifar-m1" and provider == cpu:
                    continue
                step(
                    report,
                    deadline,
                    f"raw {model}@{provider}",
                    10,
                    lambda p=path, pr=provider, m=model: raw.__setitem__(
                        f"{m}@{pr}", raw_throughput(p, pr, raw_s, os.cpu_count() or 1, batches)
                    ),
                )
        cifar = repos["cifar"] / "cifar" / "1" / "model.onnx" if "cifar" in repos else None
        if gpu == "cuda" and cifar:
            step(
                report,
                deadline,
                "cuDNN convolution search",
                40,
                lambda: report.data.__setitem__("conv_search", conv_search(cifar)),
            )
            graphs = report.data.setdefault("binding_and_graphs", {})
            for name in ("cifar", "cifar-m1"):  # M=3 against M=1 without the copies too
                step(
                    report,
                    deadline,
                    f"I/O binding and CUDA graphs, {name}",
                    20,
                    lambda n=name: graphs.__setitem__(
                        n, binding_and_graphs(repos[n] / n / "1" / "model.onnx", raw_s)
                    ),
                )
        if cifar:
            step(
                report,
                deadline,
                "shape changes",
                20,
                lambda: report.data.__setitem__("shape_changes", shape_changes(cifar, gpu)),
            )
        runs = report.data.setdefault("load", [])
        # in order of what matters: the ensemble on both providers, M=1, then packed mode
        plan = [(f"{m}@{p}", "ensemble") for m in ("mnist", "cifar") for p in providers]
        plan += [(f"cifar-m1@{gpu}", "ensemble")]
        plan += [(f"{m}@{p}", "packed") for m in ("mnist", "cifar") for p in providers]
        plan += [(f"cifar-w8@{gpu}", "ensemble")]
        images = {m: work / f"{m}.png" for m in repos}
        for m, path in images.items():
            path.write_bytes(test_images(m, args.digits if m == "mnist" else None, 1)[0])
        for key, mode in plan:
            server = up.get(key)
            if server is None:
                continue
            need = len(clients) * (seconds + 0.5) + 1
            step(
                report,
                deadline,
                f"warm {key} {mode}",
                need,
                lambda s=server, mo=mode: load_run(
                    s, images[s.model], mo, clients[-1], min(1.0, seconds)
                ),
            )
            for c in clients:
                step(
                    report,
                    deadline,
                    f"load {key} {mode} c={c}",
                    seconds + 0.5,
                    lambda s=server, mo=mode, c=c: runs.append(
                        load_run(s, images[s.model], mo, c, seconds)
                    ),
                )
        report.data["derived"] = derive(report.data, gpu)
    report.log("done")
    print(render(report.data))


if __name__ == "__main__":
    main()
