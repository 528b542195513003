"""The capacity question on one GPU: widths 2, 4 and 8 x {single network, single + outlier
exposure, MIMO M=2 and M=3 at rho 0.5 without and with the outlier loss} x 3 seeds, 12 epochs
each, several runs at once, inside a time budget; the records as docs/results/grid/ keeps them
(here under docs/results/grid12/: 12 epochs, where the CPU grid has 3).

On the lent GPU machine (no network; docs/benchmarks.md "On a GPU"), after
`bash benchmarks/gpu/prepare_grid.sh` here:

    bash benchmarks/gpu/run.sh grid --budget-s 420      # the call carrying .gpu-grid/part*

Each run is `python -m training train` (CUDA, bf16 autocast: the config's precision `auto`)
and `python -m training evaluate`, as the CPU grid runs them; `--jobs` of them at a time share
the GPU. New runs start while the budget lasts; at its end the runs still going are stopped
and left out. Into --out (at most 8 files): records.json (every finished point's record),
summary.md (a table of them), log.txt. Back here:

    python -m benchmarks.gpu.grid --import <files_at>/records.json   # -> docs/results/grid12/

`--tiny` runs the same pipeline at toy size on any machine (the test does, on the CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.thread import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from training.experiments.grid import GridPoint
from training.experiments.records import RECORDS
from training.files import write_atomic

ROOT = Path(__file__).resolve().parents[2]

RECORDS_12 = RECORDS / "grid12"
TINY = ("--max-steps", "3", "--val-size", "50", "--batch-size", "32")


def configurations(widths: list[float], seeds: list[int]) -> list[GridPoint]:
    """Seeds outer, widths, then the six configurations: an early stop keeps every
    configuration at fewer seeds."""
    out = []
    for seed in seeds:
        for width in widths:
            out += [
                GridPoint(width, 1, seed=seed),
                GridPoint(width, 1, outlier=True, seed=seed, oe=True),
                GridPoint(width, 2, 0.5, seed=seed),
                GridPoint(width, 2, 0.5, outlier=True, seed=seed),
                GridPoint(width, 3, 0.5, seed=seed),
                GridPoint(width, 3, 0.5, outlier=True, seed=seed),
            ]
    return out


def run_point(point: GridPoint, args: argparse.Namespace, log: Path) -> Path:
    """One point in a process of its own (its own session: stopped whole at the budget)."""
    command = [
        sys.executable,
        "-c",
        "import sys; from pathlib import Path; "
        "from training.experiments.grid import parse; "
        "from training.experiments.running import grid_point; "
        "grid_point(parse(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), "
        "int(sys.argv[5]), Path(sys.argv[6]), sys.argv[7:])",
        point.name,
        str(args.runs),
        str(args.data_dir),
        str(args.epochs),
        str(args.threads),
        str(args.records),
        *(TINY if args.tiny else ()),
    ]
    with log.open("a") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        RUNNING[point.name] = process
        try:
            code = process.wait()
        finally:
            RUNNING.pop(point.name, None)
    if code:
        raise RuntimeError(f"{point.name} exited {code}")
    return args.records / f"{point.name}.json"


RUNNING: dict[str, subprocess.Popen[bytes]] = {}


def stop_all() -> None:
    for process in list(RUNNING.values()):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def summary(records: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| point | train s | accuracy | NLL | ECE | corrupted acc | OOD flagged |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, record in sorted(records.items()):
        m = record["metrics"]
        clean, corrupted = m["clean"], m["corrupted"]["mean"]
        flagged = m.get("ood_mean", {}).get("uncertain_fraction", float("nan"))
        lines.append(
            f"| {name} | {record['train_seconds']:.0f} | {clean['accuracy']:.4f} | "
            f"{clean['nll']:.4f} | {clean['ece']:.4f} | {corrupted['accuracy']:.4f} | "
            f"{flagged:.3f} |"
        )
    return "\n".join(lines) + "\n"


def write_out(out: Path, records_dir: Path, started: float, notes: list[str]) -> None:
    """records.json and summary.md from what is recorded so far (called after each run)."""
    records = {p.stem: json.loads(p.read_text()) for p in sorted(records_dir.glob("*.json"))}
    write_atomic(out / "records.json", json.dumps(records) + "\n")
    text = summary(records) + "\n" + "\n".join(notes) + "\n"
    text += f"\n{len(records)} points recorded in {time.monotonic() - started:.0f} s\n"
    write_atomic(out / "summary.md", text)


def grid(args: argparse.Namespace) -> None:
    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    args.records.mkdir(parents=True, exist_ok=True)
    log = args.out / "log.txt"
    points = configurations(args.widths, args.seeds)
    notes = [f"{len(points)} points, {args.jobs} at a time, budget {args.budget_s:.0f} s"]
    print(notes[0], flush=True)
    deadline = started + args.budget_s
    pending = list(points)
    with ThreadPoolExecutor(args.jobs) as pool:
        running: dict[Future[Path], GridPoint] = {}
        while pending or running:
            while pending and len(running) < args.jobs and time.monotonic() < deadline:
                point = pending.pop(0)
                running[pool.submit(run_point, point, args, log)] = point
            if not running:
                break
            done, _ = wait(
                running, timeout=max(1.0, deadline - time.monotonic()), return_when=FIRST_COMPLETED
            )
            for future in done:
                point = running.pop(future)
                error = future.exception()
                seconds = time.monotonic() - started
                line = f"{'failed' if error else 'done'} {point.name} at {seconds:.0f} s"
                if error:
                    line += f": {error}"
                notes.append(line)
                print(line, flush=True)
                write_out(args.out, args.records, started, notes)
            if time.monotonic() >= deadline and running:
                notes.append(f"budget over: stopped {sorted(p.name for p in running.values())}")
                print(notes[-1], flush=True)
                stop_all()
                wait(running)
                running.clear()
        if pending:
            notes.append(f"not started: {[p.name for p in pending]}")
    write_out(args.out, args.records, started, notes)


def import_records(path: Path, into: Path) -> None:
    """The records of a GPU run's records.json into docs/results/grid12/ (one file each)."""
    into.mkdir(parents=True, exist_ok=True)
    for name, record in json.loads(path.read_text()).items():
        write_atomic(into / f"{name}.json", json.dumps(record, indent=1) + "\n")
        print(f"recorded {into / name}.json")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--import", dest="import_from", type=Path, help="records.json to record")
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".gpu-grid" / "mnist")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "grid-results")))
    parser.add_argument("--runs", type=Path, default=Path("/tmp/mimo-grid-runs"))
    parser.add_argument("--records", type=Path, default=RECORDS_12)
    parser.add_argument("--widths", type=float, nargs="+", default=[2.0, 4.0, 8.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--jobs", type=int, default=12, help="runs at a time on the one GPU")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    parser.add_argument("--budget-s", type=float, default=420.0, help="no run starts after")
    parser.add_argument("--tiny", action="store_true", help="toy size (tests, smoke runs)")
    args = parser.parse_args(argv)
    if args.import_from:
        import_records(args.import_from, args.records)
        return
    grid(args)


if __name__ == "__main__":
    main()
