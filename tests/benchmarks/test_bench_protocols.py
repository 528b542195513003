"""benchmarks/bench_protocols.py runs end to end on a tiny setting (it measures; it asserts no
timing, and neither does this test)."""

from __future__ import annotations

from pathlib import Path

from support import ROOT, SERVICE, free_port, service_env, start_service


def test_runs_against_a_real_server(scripts, model_repository: Path, tmp_path: Path) -> None:
    port, grpc_port = free_port(), free_port()
    env = service_env(model_repository, port, MIMO_GRPC_PORT=str(grpc_port))
    server = start_service(SERVICE, env, ROOT, tmp_path / "server.log")
    try:
        ran = scripts.run(
            "bench_protocols",
            f"--http=127.0.0.1:{port}",
            f"--grpc=127.0.0.1:{grpc_port}",
            "--model=digits",
            "--requests=4",
            "--repeats=1",
            "--warmup=1",
            "--batch=2",
            "--concurrency",
            "1",
            "2",
            out=tmp_path / "protocols.json",
        )
    finally:
        server.stop()
    assert "| grpc | 2 | 2 |" in ran.stdout
    rows = ran.result["rows"]
    assert {(r["protocol"], r["concurrency"]) for r in rows} == {
        (p, c) for p in ("http", "grpc") for c in (1, 2)
    }
    assert all(r["req_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0 for r in rows)
