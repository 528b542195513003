"""Latency and throughput of a running mimo-serve: /predict and the OIP infer route.

Starts nothing: point it at a server (`make serve` in another shell).

    python -m benchmarks.bench_predict                         # http://127.0.0.1:8000
    python -m benchmarks.bench_predict --requests 500 --out bench.json

Four measurements, each after a short warm-up:
1. /predict, one call at a time over one keep-alive connection: the latency of a lone request.
2. /predict, `--concurrency` clients at once: throughput and the latency under load (the
   server's dynamic batcher groups the concurrent images into shared forward passes).
3. and 4. the same for POST /v2/models/<model>/infer with a binary FP32 tensor.
The mean batch size the server formed during each run is read from its /metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.common import machine_info, percentile

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    parser.add_argument(
        "--image",
        type=Path,
        help="PNG to send (default: a real test digit: MNIST from ../shared/data/mnist, or an "
        "sklearn digit when the model takes 8x8 images)",
    )
    parser.add_argument(
        "--requests", type=int, default=200, help="calls in each of the four measurements"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls before each run")
    parser.add_argument("--model", help="model name (default: the server's default model)")
    parser.add_argument("--mnist-dir", type=Path, default=MNIST_DIR, help="MNIST IDX files")
    parser.add_argument("--api-key", help="sent as `Authorization: Bearer <key>`")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.warmup < 0:
        parser.error("--requests and --concurrency must be positive, --warmup non-negative")
    return args


def default_image(model: dict[str, Any], mnist_dir: Path) -> tuple[bytes, str]:
    """A real test digit as PNG bytes, and where it came from."""
    from PIL import Image

    from training.data import load_dataset

    if model["input_shape"][1:] == [8, 8]:
        ds, source = load_dataset("digits", "test"), "sklearn digits test[0]"
    else:
        ds, source = load_dataset("mnist", "test", mnist_dir), f"MNIST test[0] ({mnist_dir})"
    buffer = io.BytesIO()
    Image.fromarray(ds.images[0, 0], mode="L").save(buffer, format="PNG")
    return buffer.getvalue(), f"{source}, label {ds.labels[0]}"


def oip_body(tensor: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """An OIP request with `images` as a binary FP32 tensor [1, C, H, W], all outputs binary."""
    raw = np.ascontiguousarray(tensor[None], dtype="<f4").tobytes()
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "shape": [1, *tensor.shape],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(head)),
    }
    return head + raw, headers


def batch_totals(text: str, model: str) -> tuple[float, float]:
    """(sum, count) of mimo_batch_size for a model, summed over versions."""
    total = count = 0.0
    pattern = re.compile(r"^mimo_batch_size_(sum|count)\{([^}]*)\} (\S+)$")
    for line in text.splitlines():
        found = pattern.match(line)
        if found and f'model="{model}"' in found[2]:
            if found[1] == "sum":
                total += float(found[3])
            else:
                count += float(found[3])
    return total, count


async def scrape(client: httpx.AsyncClient, model: str) -> tuple[float, float] | None:
    try:
        answer = await client.get("/metrics")
    except httpx.HTTPError:
        return None
    return batch_totals(answer.text, model) if answer.status_code == 200 else None


async def run(
    client: httpx.AsyncClient,
    name: str,
    send: Any,
    requests: int,
    concurrency: int,
    warmup: int,
    model: str,
) -> dict[str, Any]:
    """`requests` calls of `send`, `concurrency` at a time; latencies in milliseconds."""
    for _ in range(warmup):
        await send()
    before = await scrape(client, model)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            started = time.perf_counter()
            try:
                answer = await send()
                status = str(answer.status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            if status == "200":
                latencies.append((time.perf_counter() - started) * 1000.0)
            else:
                errors[status] = errors.get(status, 0) + 1

    started = time.perf_counter()
    if concurrency == 1:
        for _ in range(requests):
            await one()
    else:
        await asyncio.gather(*(one() for _ in range(requests)))
    wall = time.perf_counter() - started
    after = await scrape(client, model)
    mean_batch = None
    if before and after and after[1] > before[1]:
        mean_batch = (after[0] - before[0]) / (after[1] - before[1])
    return {
        "name": name,
        "requests": requests,
        "concurrency": concurrency,
        "ok": len(latencies),
        "errors": errors,
        "seconds": wall,
        "requests_per_s": len(latencies) / wall,
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies, default=float("nan")),
        "mean_batch_size": mean_batch,
    }


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| measurement | clients | requests | ok | req/s | p50 ms | p90 ms | p99 ms | mean batch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        batch = f"{r['mean_batch_size']:.2f}" if r["mean_batch_size"] else "n/a"
        rows.append(
            f"| {r['name']} | {r['concurrency']} | {r['requests']} | {r['ok']} "
            f"| {r['requests_per_s']:.1f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} "
            f"| {r['p99_ms']:.2f} | {batch} |"
        )
    return "\n".join(rows)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    async with httpx.AsyncClient(
        base_url=args.url, headers=headers, timeout=60, limits=limits
    ) as client:
        try:
            listing = await client.get("/models")
        except httpx.TransportError as exc:
            raise SystemExit(
                f"no server at {args.url} ({exc}): start one first (`make serve`)"
            ) from None
        if listing.status_code != 200:
            raise SystemExit(f"GET /models answered {listing.status_code}: {listing.text}")
        served = listing.json()["models"]
        chosen = [m for m in served if (m["name"] == args.model if args.model else m["default"])]
        if not chosen:
            names = sorted({m["name"] for m in served})
            raise SystemExit(f"model {args.model or '(default)'} not served; served: {names}")
        model = max(chosen, key=lambda m: m["version"])
        if args.image is not None:
            png, source = args.image.read_bytes(), str(args.image)
        else:
            png, source = default_image(model, args.mnist_dir)

        from service.preprocess import preprocess

        # The very tensor /predict computes from the PNG, so both routes do the same work.
        tensor = preprocess(png, "image/png", model["preprocess"], 10**8)
        body, oip_headers = oip_body(tensor)
        name = model["name"]
        predict_path = f"/predict?model={name}"
        infer_path = f"/v2/models/{name}/infer"

        first = await client.post(predict_path, content=png, headers={"Content-Type": "image/png"})
        if first.status_code != 200:
            raise SystemExit(f"/predict answered {first.status_code}: {first.text}")
        answer = first.json()["predictions"][0]

        def predict() -> Any:
            return client.post(predict_path, content=png, headers={"Content-Type": "image/png"})

        def infer() -> Any:
            return client.post(infer_path, content=body, headers=oip_headers)

        results = []
        for label, send in (("/predict", predict), ("OIP infer", infer)):
            for concurrency in (1, args.concurrency):
                results.append(
                    await run(
                        client,
                        label,
                        send,
                        args.requests,
                        concurrency,
                        args.warmup,
                        name,
                    )
                )
    return {
        "url": args.url,
        "model": {k: model[k] for k in ("name", "version", "ensemble_size", "provider")},
        "image": {"source": source, "bytes": len(png)},
        "prediction": {
            "label": answer["label"],
            "probability": answer["probability"],
            "mutual_information": answer["uncertainty"]["mutual_information"],
        },
        "client": machine_info() | {"httpx": httpx.__version__},
        "results": results,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = asyncio.run(bench(args))
    m = report["model"]
    p = report["prediction"]
    print(
        f"{report['url']}: {m['name']} v{m['version']} (M={m['ensemble_size']}, {m['provider']}); "
        f"image: {report['image']['source']} ({report['image']['bytes']} bytes) -> "
        f"{p['label']} (p={p['probability']:.3f}, MI={p['mutual_information']:.4f} nats)\n"
    )
    print(table(report["results"]))
    failed = {
        r["name"] + f" x{r['concurrency']}": r["errors"] for r in report["results"] if r["errors"]
    }
    if failed:
        print(f"\nerrors: {failed}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
