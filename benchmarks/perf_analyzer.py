"""Triton's load generator, perf_analyzer, against this service, beside `hey` on the same
requests, in one run.

perf_analyzer comes from PyPI's `perf-analyzer` wheel, which is built for glibc 2.38
(manylinux_2_38): newer than Debian 12's, and a plain `pip install perf-analyzer` here gets a
0.1.0 placeholder without the program. So the real wheel is fetched for its platform and its
program runs in a Debian 13 (trixie) container built from Debian's packages with podman
(benchmarks/podman.py), on the host's network.

    python -m benchmarks.perf_analyzer                       # models/mnist/1, c = 1, 8, 32
    python -m benchmarks.perf_analyzer --concurrency 8 --seconds 3 --out /tmp/pa

perf_analyzer's default input is random bytes, NaN among them, which the service refuses
(400: "contains NaN or infinity"); here it sends real digits (`input_data`), as a user should
(or `--input-data zero`).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# tests/deploy/test_perf_analyzer.py imports this file as the module `perf_analyzer`, with
# benchmarks/ on sys.path, for `run` and the image alone: there `podman` is a module of its own
# and `measure` (bench_serving's servers) is never called.
if __package__:
    from benchmarks.bench_serving import free_port, hey, servers, serving
    from benchmarks.podman import DebianImage, ensure_image, podman, unusable
else:
    from podman import DebianImage, ensure_image, podman, unusable

ROOT = Path(__file__).resolve().parents[1]
VERSION = "2.60.0"
WHEEL_PLATFORM = "manylinux_2_38_x86_64"
# the wheel's program, unpacked here once (git-ignored)
CACHE = ROOT / ".cache" / f"perf_analyzer-{VERSION}"
PROGRAM = "perf_analyzer/bin/perf_analyzer"
IMAGE = DebianImage(
    "localhost/mimo-test/debian-trixie-perf-analyzer",
    "trixie",
    ("libstdc++6", "libssl3t64", "zlib1g"),
    "Debian 13 (trixie), glibc 2.41, for perf_analyzer: built here from Debian's packages",
)
THROUGHPUT = re.compile(r"Throughput: ([\d.]+) infer/sec")


def fetch(cache: Path = CACHE) -> Path:
    """The folder holding perf_analyzer/bin/perf_analyzer, fetched from PyPI once."""
    program = cache / PROGRAM
    if program.exists():
        return cache
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--platform",
                WHEEL_PLATFORM,
                f"perf-analyzer=={VERSION}",
                "-d",
                folder,
            ],
            check=True,
            timeout=600,
        )
        (wheel,) = Path(folder).glob("perf_analyzer-*.whl")
        partial = cache.with_name(cache.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(PROGRAM, partial)
        (partial / PROGRAM).chmod(0o755)
        shutil.rmtree(cache, ignore_errors=True)
        partial.rename(cache)  # (whole or not at all)
    return cache


def input_data(images: np.ndarray) -> dict[str, Any]:
    """perf_analyzer's --input-data JSON: one batch-1 request per image (float32 [N, C, H, W]
    in [0, 1]), sent in turn."""
    return {
        "data": [
            {"images": {"content": image.ravel().tolist(), "shape": list(image.shape)}}
            for image in images
        ]
    }


@dataclass
class Run:
    protocol: str  # "http" or "grpc"
    concurrency: int
    output: str  # what it printed
    rows: list[dict[str, str]]  # its CSV (-f), one row per concurrency

    @property
    def throughput(self) -> float:
        return float(self.rows[0]["Inferences/Second"])

    def latency_ms(self, which: str) -> float:
        """ "p50", "p99", "Avg": the client's latency."""
        return float(self.rows[0][f"{which} latency"]) / 1000


def run(
    url: str,
    protocol: str,
    model: str,
    concurrency: int,
    data: Path,
    seconds: float = 2.0,
    extra: tuple[str, ...] = (),
    timeout: float = 300,
) -> Run:
    """perf_analyzer at one concurrency against `url` (host:port of `protocol`), sending the
    requests of the --input-data file `data`; windows of `seconds`."""
    program = fetch()
    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(data, Path(folder) / "data.json")
        done = podman(
            "run",
            "--rm",
            "--network",
            "host",
            "-v",
            f"{program}:/pa:ro",
            "-v",
            f"{folder}:/work",
            IMAGE.name,
            f"/pa/{PROGRAM}",
            "-m",
            model,
            "-u",
            url,
            "-i",
            protocol,
            "--concurrency-range",
            str(concurrency),
            "--input-data",
            "/work/data.json",
            "--shared-memory",
            "none",
            "-p",
            str(round(seconds * 1000)),
            "-f",
            "/work/out.csv",
            *extra,
            timeout=timeout,
            check=False,
        )
        output = done.stdout + done.stderr
        if done.returncode != 0:
            raise RuntimeError(f"perf_analyzer exited {done.returncode}:\n{output[-3000:]}")
        with open(Path(folder) / "out.csv", newline="") as file:
            rows = list(csv.DictReader(file))
    return Run(protocol, concurrency, output, rows)


def oip_request(image: np.ndarray) -> tuple[bytes, int]:
    """A binary OIP request of one image, as perf_analyzer's HTTP sends it: the JSON header,
    then the tensor's bytes; and the header's length."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "shape": [1, *image.shape],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": image.nbytes},
                }
            ]
        }
    ).encode()
    return header + image.astype("<f4").tobytes(), len(header)


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """perf_analyzer (HTTP, gRPC) and hey (the same binary OIP request; /predict with a PNG)
    at each concurrency, against one service."""
    from PIL import Image

    images = digits(args.data_dir)
    work = Path(tempfile.mkdtemp())  # (the digits stay out of the repository)
    data = work / "data.json"
    data.write_text(json.dumps(input_data(images)))
    body, header_length = oip_request(images[0])
    (work / "oip.bin").write_bytes(body)
    Image.fromarray(np.round(images[0, 0] * 255).astype(np.uint8)).save(work / "digit.png")
    png = (work / "digit.png").read_bytes()

    port, grpc_port = free_port(), free_port()
    model_path = args.model_dir / args.model / "1" / "model.onnx"
    server = servers(model_path, port, 0)["mimo"]
    server.env = server.env | {"MIMO_GRPC_PORT": str(grpc_port)}
    infer_url = f"http://127.0.0.1:{port}/v2/models/{args.model}/infer"
    binary = {"Inference-Header-Content-Length": str(header_length)}
    rows = []
    with serving(server, port, png) as (predict_url, session):
        hey(predict_url, work / "digit.png", max(args.concurrency), 1.0)  # warm-up
        for c in args.concurrency:
            for protocol, where in (("http", port), ("grpc", grpc_port)):
                pa = run(f"127.0.0.1:{where}", protocol, args.model, c, data, args.seconds)
                server_us = {
                    stage: float(pa.rows[0][f"Server {stage}"])
                    for stage in ("Queue", "Compute Input", "Compute Infer", "Compute Output")
                }
                rows.append(
                    {
                        "concurrency": c,
                        "generator": f"perf_analyzer {protocol}",
                        "req_per_s": pa.throughput,
                        "p50_ms": pa.latency_ms("p50"),
                        "p99_ms": pa.latency_ms("p99"),
                        "server_us": server_us,
                    }
                )
                print(rows[-1], flush=True)
            # hey runs about as long as perf_analyzer's three stable windows
            for what, url, path, kind, headers in (
                (
                    "hey http (the same OIP request)",
                    infer_url,
                    work / "oip.bin",
                    "application/octet-stream",
                    binary,
                ),
                ("hey /predict (a PNG)", predict_url, work / "digit.png", "image/png", None),
            ):
                result = hey(url, path, c, 3 * args.seconds, session, kind, headers)
                if result["errors"] or set(result["statuses"]) != {200}:
                    raise RuntimeError(f"{what} at c={c}: {result['statuses']}")
                rows.append(
                    {
                        "concurrency": c,
                        "generator": what,
                        "req_per_s": result["req_per_s"],
                        "p50_ms": result["p50_ms"],
                        "p99_ms": result["p99_ms"],
                    }
                )
                print(rows[-1], flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| clients | load generator | req/s | p50 ms | p99 ms | server: queue / input / infer / "
        "output (us, per image) |",
        "|---:|---|---:|---:|---:|---|",
    ]
    for row in rows:
        server = row.get("server_us")
        stages = " / ".join(f"{v:.0f}" for v in server.values()) if server else ""
        lines.append(
            f"| {row['concurrency']} | {row['generator']} | {row['req_per_s']:,.0f} | "
            f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {stages} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default="mnist")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=2.0, help="measurement window")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("MNIST_DIR", ROOT.parent / "shared" / "data" / "mnist")),
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "perf-analyzer")
    args = parser.parse_args()
    if why := unusable():
        parser.error(f"no container can run here: {why}")
    if shutil.which("hey") is None:
        parser.error("needs `hey` (Debian package hey)")
    ensure_image(IMAGE)
    fetch()
    rows = measure(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    (args.out / "table.md").write_text(table(rows))
    print(table(rows))


def digits(data_dir: Path) -> np.ndarray:
    """100 real MNIST test digits, float32 [100, 1, 28, 28] in [0, 1]."""
    from training.data import load_dataset

    test = load_dataset("mnist", "test", data_dir)
    return (test.images[:100].astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)


if __name__ == "__main__":
    main()
