"""Serving throughput and latency, side by side in one run: this service (batching on and off,
1 and 2 workers), the plain FastAPI app a user would write, LitServe with batching, the most
trivial FastAPI endpoint, and ONNX Runtime alone with no HTTP (the service's session options).

Starts each server itself on a free loopback port, one at a time, loads it with `hey`
(Debian package `hey`) at each concurrency for `--seconds`, stops it; the whole round is
repeated `--repeats` times (interleaved, so that drift of a shared machine hits every server
alike) and the table gives medians and the ratio to the plain app and the trivial endpoint
(the median of each repeat's own ratio, and their range). With `--side-by-side` every server
is up at once and they take turns every `--seconds`: on a machine whose speed drifts within
minutes, this is the finer interleaving (an A-vs-A run of the service against itself gives
1.00, quartiles 0.97-1.04, at 2-second turns).

    python -m benchmarks.bench_serving                             # the default model
    python -m benchmarks.bench_serving --servers mimo plain trivial --concurrency 1 32
    python -m benchmarks.bench_serving --side-by-side --seconds 2 --repeats 15 \
        --tree /tmp/before --servers mimo@before mimo plain trivial
    python -m benchmarks.bench_serving --model models/cifar/1/model.onnx --image cat.png
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.common import lone_repository, machine_info, service_session, time_calls

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
# The MIMO model (M=3): what the one-forward-pass claim is about, and every committed run.
DEFAULT_MODEL = ROOT / "models" / "mnist" / "1" / "model.onnx"
DEFAULT_IMAGE = ROOT / "service" / "static" / "examples" / "clear.png"


@dataclass
class Server:
    name: str
    what: str
    command: list[str]
    env: dict[str, str]
    cwd: Path = ROOT
    path: str = "/predict"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def servers(
    model: Path, port: int, threads: int, trees: list[Path] | None = None
) -> dict[str, Server]:
    """Every server the benchmark knows, listening on `port`."""
    repo = lone_repository(model)  # (models/ would answer with its newest version)
    name = model.parent.parent.name
    base = {k: v for k, v in os.environ.items() if not k.startswith("MIMO_")}
    mimo = base | {
        "MIMO_REPOSITORY": str(repo),
        "MIMO_DEFAULT_MODEL": name,
        "MIMO_PORT": str(port),
        "MIMO_GRPC_PORT": "0",
        "MIMO_LOG_LEVEL": "warning",
    }
    if threads:
        mimo["MIMO_THREADS"] = str(threads)
    uvicorn = [
        PY,
        "-m",
        "uvicorn",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    plain_env = base | {"MODEL": str(model)}
    # The service as another checkout has it (`git worktree add /tmp/before <commit>`): the
    # "before" of a change, measured in the same run.
    other = {
        f"mimo@{tree.name}": Server(
            f"mimo@{tree.name}",
            f"this service as in {tree}",
            [PY, "-m", "service"],
            mimo | {"PYTHONPATH": str(tree)},
            tree,
        )
        for tree in trees or []
    }
    return other | {
        "mimo": Server("mimo", "this service, defaults", [PY, "-m", "service"], mimo),
        "mimo-packed": Server(
            "mimo-packed",
            "this service, packed mode (/predict?mode=packed: M requests per forward-pass row)",
            [PY, "-m", "service"],
            mimo,
            path="/predict?mode=packed",
        ),
        "mimo-nobatch": Server(
            "mimo-nobatch",
            "this service, batching off (MIMO_MAX_BATCH_SIZE=1)",
            [PY, "-m", "service"],
            mimo | {"MIMO_MAX_BATCH_SIZE": "1"},
        ),
        "mimo-1w": Server(
            "mimo-1w",
            "this service, MIMO_WORKERS=1",
            [PY, "-m", "service"],
            mimo | {"MIMO_WORKERS": "1"},
        ),
        "mimo-2w": Server(
            "mimo-2w",
            "this service, MIMO_WORKERS=2",
            [PY, "-m", "service"],
            mimo | {"MIMO_WORKERS": "2"},
        ),
        "plain": Server(
            "plain",
            "plain FastAPI app (benchmarks/baselines/plain_fastapi.py)",
            [*uvicorn, "benchmarks.baselines.plain_fastapi:app"],
            plain_env,
        ),
        "litserve": Server(
            "litserve",
            "LitServe 0.2, batching 32 / 5 ms (benchmarks/baselines/litserve_app.py)",
            [
                PY,
                "-m",
                "benchmarks.baselines.litserve_app",
                "--port",
                str(port),
                "--model",
                str(model),
            ],
            base,
        ),
        "trivial": Server(
            "trivial",
            "trivial FastAPI endpoint (benchmarks/baselines/trivial.py)",
            [*uvicorn, "benchmarks.baselines.trivial:app"],
            base,
        ),
    }


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's whole process group, SIGKILL to what is left after 30 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def wait_ready(url: str, image: bytes, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            answer = httpx.post(
                url, content=image, headers={"content-type": "image/png"}, timeout=5
            )
            if answer.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} not answering within {timeout:.0f} s")


HEY_RPS = re.compile(r"Requests/sec:\s+([0-9.]+)")
HEY_PCT = re.compile(r"\s(50|99)% in ([0-9.]+) secs")
HEY_STATUS = re.compile(r"\[(\d{3})\]\s+(\d+) responses")


def session_cpu_s(session: int) -> float:
    """CPU seconds (user + system) of the live processes of a session: a server and its
    workers (started with start_new_session, so the session id is the server's pid)."""
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:  # after the ")" of the command name: state, ppid, pgrp, session, ...
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def hey(
    url: str,
    image_path: Path,
    concurrency: int,
    seconds: float,
    server: int | None = None,
    content_type: str = "image/png",
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One hey run posting the file `image_path` (as `content_type`, with `headers`); with
    `server` (its session id), the CPU that the server and hey spent per request: both run on
    the same cores, so these say where the machine's time went."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_s = session_cpu_s(server) if server else float("nan")
    done = subprocess.run(
        [
            "hey",
            "-z",
            f"{seconds}s",
            "-c",
            str(concurrency),
            "-m",
            "POST",
            "-T",
            content_type,
            *(arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")),
            "-D",
            str(image_path),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    server_s = (session_cpu_s(server) if server else float("nan")) - server_s
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # hey, reaped by now
    hey_s = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    out = done.stdout
    statuses = {int(code): int(n) for code, n in HEY_STATUS.findall(out)}
    pct = {int(p): float(s) * 1000 for p, s in HEY_PCT.findall(out)}
    rps = float(HEY_RPS.search(out).group(1))
    requests = max(1.0, rps * seconds)
    return {
        "req_per_s": rps,
        "p50_ms": pct.get(50, float("nan")),
        "p99_ms": pct.get(99, float("nan")),
        "statuses": statuses,
        "errors": "Error distribution" in out,
        "server_cpu_ms": 1000 * server_s / requests,
        "hey_cpu_ms": 1000 * hey_s / requests,
    }


@contextlib.contextmanager
def serving(server: Server, port: int, image: bytes) -> Iterator[tuple[str, int]]:
    """The server started and answering (its URL and session id), stopped afterwards."""
    url = f"http://127.0.0.1:{port}{server.path}"
    with tempfile.TemporaryFile() as log:
        # A session of its own: stopping it stops its workers too (LitServe's, uvicorn's).
        process = subprocess.Popen(
            server.command,
            env=server.env,
            cwd=server.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_ready(url, image, process, 120)
            yield url, process.pid
        except Exception:
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-3000:])
            raise
        finally:
            stop(process)


def measure_server(
    server: Server, port: int, image: bytes, image_path: Path, args: argparse.Namespace
) -> dict[int, dict[str, Any]]:
    with serving(server, port, image) as (url, session):
        hey(url, image_path, max(args.concurrency), 1.0)  # warm-up, not counted
        return {c: hey(url, image_path, c, args.seconds, session) for c in args.concurrency}


def start_all(
    stack: contextlib.ExitStack, names: list[str], image: bytes, args: argparse.Namespace
) -> dict[str, tuple[Server, int, str, int]]:
    """Every named server started on a free port of its own, stopped when `stack` closes: its
    definition, port, URL and session id."""
    up = {}
    for name in names:
        port = free_port()
        server = servers(args.model, port, args.threads, args.tree)[name]
        url, session = stack.enter_context(serving(server, port, image))
        up[name] = (server, port, url, session)
    return up


def side_by_side(
    names: list[str], image: bytes, args: argparse.Namespace
) -> Iterator[dict[tuple[str, int], dict[str, Any]]]:
    """Every server up at once, each on its port; per repeat, one hey run per (concurrency,
    server), the servers' order turning from one repeat to the next: runs seconds apart, so
    the drift of a shared machine hits every server alike (the idle ones wait)."""
    with contextlib.ExitStack() as stack:
        up = {
            name: (url, session)
            for name, (_, _, url, session) in start_all(stack, names, image, args).items()
        }
        for url, _ in up.values():
            hey(url, args.image, max(args.concurrency), 1.0)  # warm-up, not counted
        for repeat in range(args.repeats):
            order = names[repeat % len(names) :] + names[: repeat % len(names)]
            print(f"[{repeat + 1}/{args.repeats}] side by side: {' '.join(order)}", file=sys.stderr)
            yield {
                (name, c): hey(up[name][0], args.image, c, args.seconds, up[name][1])
                for c in args.concurrency
                for name in order
            }


def raw_ort(model: Path, image: np.ndarray, threads: int, seconds: float) -> dict[str, float]:
    """ONNX Runtime alone, with the service's session options: the same decode-free tensor, one
    image per run and 32 per run, as fast as it goes."""
    session = service_session(model, threads)
    m = session.get_inputs()[0].shape[1]
    out: dict[str, float] = {}
    for batch in (1, 32):
        x = np.ascontiguousarray(np.broadcast_to(image[None, None], (batch, m, *image.shape)))
        timing = time_calls(lambda x=x: session.run(None, {"images": x}), seconds, warmup=20)
        out[f"images_per_s_batch{batch}"] = timing.per_second(batch)
    return out


def add_server_options(
    parser: argparse.ArgumentParser, servers: list[str], servers_help: str | None = None
) -> None:
    """The options that say which servers run and on what: this script's and bench_latency's
    (`servers`: the default of --servers)."""
    parser.add_argument("--servers", nargs="+", default=servers, help=servers_help)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument(
        "--threads", type=int, default=0, help="MIMO_THREADS (0: the service's rule)"
    )
    parser.add_argument(
        "--tree",
        type=Path,
        nargs="*",
        default=[],
        help="other checkouts of this repository to serve too, as server mimo@<folder name> "
        "(name it in --servers)",
    )
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_options(parser, ["mimo", "mimo-nobatch", "mimo-2w", "plain", "litserve", "trivial"])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--seconds", type=float, default=5.0, help="hey -z per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--side-by-side",
        action="store_true",
        help="start every server at once and take turns every --seconds (finer interleaving "
        "than one server after the other; the ratios are medians of each repeat's own)",
    )
    args = parser.parse_args(argv)
    if shutil.which("hey") is None:
        parser.error("needs `hey` (Debian package hey)")
    return args


def model_tensor(model: Path, image: Path) -> np.ndarray:
    """`image` as the model takes it, [C, H, W] in [0, 1]: what ONNX Runtime alone is fed."""
    import onnxruntime as ort
    from PIL import Image

    images = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_inputs()[0]
    _, _, c, h, w = images.shape
    pixels = Image.open(image).convert("L" if c == 1 else "RGB").resize((w, h))
    tensor = np.asarray(pixels, np.float32) / 255.0
    return tensor[None] if tensor.ndim == 2 else tensor.transpose(2, 0, 1)


Runs = dict[tuple[str, int], list[dict[str, Any]]]


def measure(args: argparse.Namespace) -> tuple[Runs, list[dict[str, float]]]:
    """Every hey run of every (server, concurrency), and each repeat's ONNX Runtime alone."""
    image = args.image.read_bytes()
    tensor = model_tensor(args.model, args.image)
    runs: Runs = {}
    raw: list[dict[str, float]] = []

    def ort_alone() -> None:
        raw.append(raw_ort(args.model, tensor, os.cpu_count() or 1, args.seconds / 2))
        one = raw_ort(args.model, tensor, 1, args.seconds / 2)
        raw[-1]["one_thread_images_per_s_batch32"] = one["images_per_s_batch32"]

    if args.side_by_side:
        for results in side_by_side(args.servers, image, args):
            for key, result in results.items():
                runs.setdefault(key, []).append(result)
        for _ in range(args.repeats):
            ort_alone()
    for repeat in range(0 if args.side_by_side else args.repeats):
        for name in args.servers:
            port = free_port()
            server = servers(args.model, port, args.threads, args.tree)[name]
            print(f"[{repeat + 1}/{args.repeats}] {name}", file=sys.stderr)
            for c, result in measure_server(server, port, image, args.image, args).items():
                runs.setdefault((name, c), []).append(result)
        ort_alone()
    return runs, raw


def summarize(runs: Runs) -> list[dict[str, Any]]:
    """A row per (server, concurrency): medians over the repeats, and each repeat's own ratio
    to the plain app and the trivial endpoint."""
    rows = []
    for (name, c), results in runs.items():
        rows.append(
            {
                "server": name,
                "concurrency": c,
                "runs": len(results),
                "req_per_s": statistics.median(r["req_per_s"] for r in results),
                "p50_ms": statistics.median(r["p50_ms"] for r in results),
                "p99_ms": statistics.median(r["p99_ms"] for r in results),
                "non_200": sum(
                    n for r in results for code, n in r["statuses"].items() if code != 200
                ),
                "server_cpu_ms": statistics.median(r["server_cpu_ms"] for r in results),
                "hey_cpu_ms": statistics.median(r["hey_cpu_ms"] for r in results),
            }
        )
    for row in rows:
        for ref in ("plain", "trivial"):
            other = runs.get((ref, row["concurrency"]), [])
            mine = runs[row["server"], row["concurrency"]]
            # each repeat's own ratio: both measured minutes (or, side by side, seconds) apart
            ratios = [a["req_per_s"] / b["req_per_s"] for a, b in zip(mine, other, strict=False)]
            row[f"vs_{ref}"] = statistics.median(ratios) if ratios else None
            row[f"vs_{ref}_range"] = (min(ratios), max(ratios)) if ratios else None
    return rows


def print_report(
    args: argparse.Namespace,
    machine: dict[str, Any],
    rows: list[dict[str, Any]],
    raw: dict[str, float],
    what: dict[str, str],
) -> None:
    model = args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model
    print(
        f"# {machine['cpu']}, {machine['cores']} cores; model {model}; "
        f"hey -z {args.seconds}s, medians of {args.repeats}"
        + (", side by side" if args.side_by_side else "")
    )
    print(
        "| server | clients | req/s | x plain | x plain, each repeat | x trivial | p50 ms "
        "| p99 ms | non-200 | server CPU ms/req | hey CPU ms/req |"
    )
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: (r["concurrency"], args.servers.index(r["server"]))):
        fmt = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
        spread = r["vs_plain_range"]
        spread = "" if spread is None else f"{spread[0]:.2f}-{spread[1]:.2f}"
        print(
            f"| {r['server']} | {r['concurrency']} | {r['req_per_s']:.0f} | {fmt(r['vs_plain'])} | "
            f"{spread} | {fmt(r['vs_trivial'])} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['non_200']} | {r['server_cpu_ms']:.3f} | {r['hey_cpu_ms']:.3f} |"
        )
    print(
        f"\nONNX Runtime alone, no HTTP ({os.cpu_count()} threads): "
        f"{raw['images_per_s_batch1']:.0f} images/s at batch 1, "
        f"{raw['images_per_s_batch32']:.0f} at batch 32; on one thread at batch 32 "
        f"{raw['one_thread_images_per_s_batch32']:.0f} images/s, that is "
        f"{1000 / raw['one_thread_images_per_s_batch32']:.3f} CPU ms per image"
    )
    for name, text in what.items():
        print(f"- `{name}`: {text}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    machine = machine_info()
    runs, raw = measure(args)
    rows = summarize(runs)
    raw_median = {k: statistics.median(r[k] for r in raw) for k in raw[0]}
    catalogue = servers(args.model, 0, args.threads, args.tree)
    what = {name: catalogue[name].what for name in args.servers}
    print_report(args, machine, rows, raw_median, what)
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "machine": machine,
                    "rows": rows,
                    "raw_ort": raw_median,
                    "servers": what,
                    "args": {k: str(v) for k, v in vars(args).items()},
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
