"""One client, one request at a time: the latency of each server to the microsecond, side by side.

hey prints latencies to 0.1 ms, which is a tenth of a request here: at c=1 two servers 17 %
apart both read "0.9 ms". This client keeps one connection open, sends a request, reads the
whole answer and times it with `time.perf_counter`. Every server is up at once (the servers of
benchmarks/bench_serving.py, started the same way); each round gives every server a block of
`--requests` on a fresh connection (so blocks land on either worker of a multi-worker server),
in an order that turns from round to round, with a pause before each block so that threads a
server left spinning stop before the next one is timed. The table gives medians over all
requests (p90 and p99 interpolated: benchmarks/common.py) and the median of each round's ratio
to the first server, with its range.

    python -m benchmarks.bench_latency --servers plain mimo --rounds 20 --requests 300
    python -m benchmarks.bench_latency --tree /tmp/before --servers plain mimo@before mimo
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import sys
import time
from typing import Any

from benchmarks.bench_serving import add_server_options, start_all
from benchmarks.common import machine_info, percentile


def request_bytes(path: str, port: int, image: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: image/png\r\n"
        f"Content-Length: {len(image)}\r\n\r\n"
    )
    return head.encode() + image


def read_answer(sock: socket.socket) -> int:
    """Read one HTTP/1.1 answer with a Content-Length; its status code."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(
        (
            int(v)
            for k, _, v in (h.partition(b":") for h in lines[1:])
            if k.lower() == b"content-length"
        ),
        None,
    )
    if length is None:
        raise ValueError("an answer without Content-Length (this client reads no other kind)")
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-answer")
        body += chunk
    return int(lines[0].split()[1])


def block(port: int, request: bytes, n: int) -> list[float]:
    """`n` requests on one fresh keep-alive connection: each one's seconds."""
    times = []
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(n):
            started = time.perf_counter()
            sock.sendall(request)
            status = read_answer(sock)
            times.append(time.perf_counter() - started)
            if status != 200:
                raise RuntimeError(f"status {status} from port {port}")
    return times


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_server_options(
        parser, ["plain", "mimo"], "the first is the one the others are compared with"
    )
    parser.add_argument("--rounds", type=positive, default=20)
    parser.add_argument("--requests", type=positive, default=300, help="requests per block")
    parser.add_argument("--pause", type=float, default=0.15, help="seconds before each block")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    image = args.image.read_bytes()
    names = args.servers
    per_block: dict[str, list[float]] = {name: [] for name in names}  # each block's median
    every: dict[str, list[float]] = {name: [] for name in names}
    with contextlib.ExitStack() as stack:
        up = {
            name: (port, request_bytes(server.path, port, image))
            for name, (server, port, _, _) in start_all(stack, names, image, args).items()
        }
        for port, request in up.values():
            block(port, request, max(10, args.requests // 3))  # warm-up, not counted
        for round_ in range(args.rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                time.sleep(args.pause)
                times = block(*up[name], args.requests)
                per_block[name].append(statistics.median(times))
                every[name].extend(times)
            print(f"[{round_ + 1}/{args.rounds}] {' '.join(order)}", file=sys.stderr)
    base = names[0]
    rows: list[dict[str, Any]] = []
    for name in names:
        ratios = [a / b for a, b in zip(per_block[name], per_block[base], strict=True)]
        rows.append(
            {
                "server": name,
                "requests": len(every[name]),
                "p50_us": 1e6 * statistics.median(every[name]),
                "p90_us": 1e6 * percentile(every[name], 90),
                "p99_us": 1e6 * percentile(every[name], 99),
                "p50_vs_first": statistics.median(ratios),
                "p50_vs_first_range": [min(ratios), max(ratios)],
                "rounds_lower_than_first": sum(r < 1 for r in ratios),
            }
        )
    print(f"one client, one request at a time; {args.rounds} rounds of {args.requests} requests")
    print(
        f"| server | p50 us | p90 us | p99 us | p50 x {base} (each round) | rounds below {base} |"
    )
    print("|---|---:|---:|---:|---|---:|")
    for r in rows:
        low, high = r["p50_vs_first_range"]
        print(
            f"| {r['server']} | {r['p50_us']:.0f} | {r['p90_us']:.0f} | {r['p99_us']:.0f} | "
            f"{r['p50_vs_first']:.3f} ({low:.2f}-{high:.2f}) | "
            f"{r['rounds_lower_than_first']}/{args.rounds} |"
        )
    if args.out:
        settings = {k: str(v) for k, v in vars(args).items()}
        result = {"machine": machine_info(), "args": settings, "rows": rows}
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
