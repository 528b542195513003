"""benchmarks/bench_compute.py runs end to end on a tiny setting and writes the JSON it promises
(it measures; it asserts no timing, and neither does this test). The FLOP counts are exact, so
they are checked against a hand count of the small CNN."""

from __future__ import annotations

from pathlib import Path


def test_tiny_run_writes_the_promised_json(scripts, tmp_path: Path) -> None:
    ran = scripts.run(
        "bench_compute",
        "--networks=mnist-cnn",
        "--members",
        "1",
        "2",
        "--batches=1",
        "--threads=1",
        "--repeats=1",
        "--warmup=1",
        "--sample-s=0.01",
        "--peak-size=128",
        out=tmp_path / "compute.json",
        timeout=60,
    )
    assert "| mnist-cnn | 1 | 1 | MIMO M=2 |" in ran.stdout
    assert "| mnist-cnn | 1 | 1 | ensemble 2xM=1 |" in ran.stdout
    result = ran.result

    assert {"machine", "settings", "peak_sgemm", "networks", "rows", "targets"} <= set(result)
    assert result["machine"]["cores"] >= 1
    assert result["settings"]["members"] == [1, 2]
    assert set(result["peak_sgemm"]) >= {"1", str(result["machine"]["cores"])}
    assert all(p["gflops"] > 0 for p in result["peak_sgemm"].values())

    # FLOPs per image of the default model's CNN (1x28x28, 32-32-64-64 convs, FC 128, 10
    # classes), counted by hand: MIMO adds M-1 stems' input channels and M-1 heads, no more.
    flops = result["networks"]["mnist-cnn"]["flops_per_image"]
    body = 28 * 28 * 32 * 32 * 9 + 14 * 14 * 64 * 32 * 9 + 14 * 14 * 64 * 64 * 9 + 64 * 49 * 128
    for m in (1, 2):
        stem, head = 28 * 28 * 32 * 9 * m, 128 * 10 * m
        assert flops[str(m)] == {
            "total": 2 * (stem + body + head),
            "stem": 2 * stem,
            "head": 2 * head,
            "body": 2 * body,
            "extra_over_m1": 2 * (m - 1) * (28 * 28 * 32 * 9 + 128 * 10),
        }

    rows = result["rows"]
    assert [(r["kind"], r["members"]) for r in rows] == [
        ("mimo", 1),
        ("mimo", 2),
        ("ensemble", 2),
    ]
    for r in rows:
        assert (r["network"], r["threads"], r["batch"]) == ("mnist-cnn", 1, 1)
        assert len(r["ms_samples"]) == 1
        assert r["ms_per_batch"] > 0 and r["images_per_s"] > 0 and r["ratio_to_m1"] > 0
        assert r["gflops_per_s"] > 0 and r["percent_of_peak"] > 0
    assert rows[2]["gflop_per_image"] == 2 * rows[0]["gflop_per_image"]
    assert rows[2]["ensemble_over_mimo"] > 0 and rows[1]["ensemble_over_mimo"] is None
    assert result["targets"] == []  # M=3 was not measured
