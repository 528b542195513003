"""The Open Inference Protocol over gRPC beside HTTP: one running mimo-serve, the same model,
the same images, the same load generator (tritonclient's asyncio clients), interleaved runs.

Starts nothing: point it at a server with gRPC on (`make serve` listens on 8000 and 8001).

    python -m benchmarks.bench_protocols                   # 127.0.0.1:8000 and :8001
    python -m benchmarks.bench_protocols --concurrency 1 8 32 --repeats 3 --out protocols.json

Each measurement sends `--requests` infer calls of one image (`--batch` images with
`--batch` > 1) as a binary FP32 tensor, `c` calls in flight at once, and asks for every output;
the table gives the median over `--repeats` runs of requests/s and of the p50/p99 latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpc_aio
import tritonclient.http.aio as http_aio

from benchmarks.common import machine_info, percentile

PROTOCOLS = ("http", "grpc")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--http", default="127.0.0.1:8000", help="HTTP host:port")
    parser.add_argument("--grpc", default="127.0.0.1:8001", help="gRPC host:port")
    parser.add_argument("--model", default="mnist", help="model name")
    parser.add_argument(
        "--version", default="1", help="model version ('': the server's newest); 1: MIMO, M=3"
    )
    parser.add_argument("--requests", type=int, default=1000, help="calls per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--batch", type=int, default=1, help="images per call")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, interleaved")
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls before each run")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if min(args.requests, args.batch, args.repeats, *args.concurrency) < 1:
        parser.error("--requests, --batch, --repeats and --concurrency must be positive")
    return args


def make_client(protocol: str, where: str, concurrency: int) -> Any:
    if protocol == "grpc":
        return grpc_aio.InferenceServerClient(where)
    return http_aio.InferenceServerClient(where, conn_limit=concurrency)


def make_input(protocol: str, images: np.ndarray) -> Any:
    module = grpc_aio if protocol == "grpc" else http_aio
    tensor = module.InferInput("images", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    return tensor


async def measure(
    protocol: str,
    where: str,
    model: tuple[str, str],
    images: np.ndarray,
    requests: int,
    concurrency: int,
    warmup: int,
) -> dict[str, float]:
    """requests/s and latency percentiles of `requests` calls, `concurrency` at a time, to
    `model` (name, version)."""
    name, version = model
    client = make_client(protocol, where, concurrency)
    tensor = make_input(protocol, images)
    try:
        for _ in range(warmup):
            await client.infer(name, [tensor], model_version=version)
        latencies: list[float] = []
        left = requests

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                started = time.perf_counter()
                await client.infer(name, [tensor], model_version=version)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    finally:
        await client.close()
    ms = [1000 * s for s in latencies]
    return {
        "req_per_s": len(latencies) / elapsed,
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
    }


async def input_shape(where: str, model: str, version: str) -> list[int]:
    client = grpc_aio.InferenceServerClient(where)
    try:
        meta = await client.get_model_metadata(model, version, as_json=True)
    finally:
        await client.close()
    return [int(d) for d in meta["inputs"][0]["shape"][1:]]


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    shape = await input_shape(args.grpc, args.model, args.version)
    images = np.random.default_rng(0).random((args.batch, *shape), dtype=np.float32)
    where = {"http": args.http, "grpc": args.grpc}
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    for _ in range(args.repeats):  # interleaved: drift of the machine hits both alike
        for c in args.concurrency:
            for protocol in PROTOCOLS:
                result = await measure(
                    protocol,
                    where[protocol],
                    (args.model, args.version),
                    images,
                    args.requests,
                    c,
                    args.warmup,
                )
                runs.setdefault((protocol, c), []).append(result)
    rows = []
    for (protocol, c), results in runs.items():
        row: dict[str, Any] = {"protocol": protocol, "concurrency": c, "runs": len(results)}
        for key in results[0]:
            row[key] = statistics.median(r[key] for r in results)
        rows.append(row)
    for row in rows:
        http = next(
            r for r in rows if r["protocol"] == "http" and r["concurrency"] == row["concurrency"]
        )
        row["vs_http"] = row["req_per_s"] / http["req_per_s"]
    return rows


def table(rows: list[dict[str, Any]], batch: int) -> str:
    lines = [
        "| protocol | clients | images/call | req/s | x HTTP | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["concurrency"], r["protocol"] != "http")):
        lines.append(
            f"| {r['protocol']} | {r['concurrency']} | {batch} | {r['req_per_s']:.0f} | "
            f"{r['vs_http']:.2f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows = asyncio.run(run(args))
    machine = machine_info()
    print(
        f"# {machine['cpu']}, {machine['cores']} cores, "
        f"{args.requests} calls x {args.repeats} runs (medians)"
    )
    print(table(rows, args.batch))
    if args.out:
        settings = vars(args) | {"out": str(args.out)}
        result = {"machine": machine, "args": settings, "rows": rows}
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
