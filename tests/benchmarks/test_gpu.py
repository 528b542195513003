"""benchmarks/gpu/: what can run without a GPU runs here. The payload's pack, receive and
install on wheels made by the test, in parts of a few KiB; the measurement script end to end
on the CPU provider at a tiny size, and stopped half way (it must leave its results and no
server behind)."""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from support import ROOT

# payload.py imports nothing of the package (it runs on the GPU machine before anything is
# installed): loaded from its file, as pytest's path cannot import `benchmarks`.
spec = importlib.util.spec_from_file_location("payload", ROOT / "benchmarks/gpu/payload.py")
payload = importlib.util.module_from_spec(spec)
spec.loader.exec_module(payload)  # type: ignore[union-attr]


def make_wheel(folder: Path, name: str, files: dict[str, bytes]) -> Path:
    """A real wheel of package `name`: its files, METADATA, WHEEL and a RECORD of hashes."""
    dist = f"{name}-1.0.dist-info"
    files = files | {
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    wheel = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in files.items():
            z.writestr(path, data)
        z.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
    return wheel


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    folder = tmp_path / "wheels"
    folder.mkdir()
    # big: travels unpacked (random bytes: the xz stream stays larger than one part)
    make_wheel(
        folder,
        "bigpkg",
        {"bigpkg/__init__.py": b"ANSWER = 42\n", "bigpkg/blob.bin": os.urandom(20_000)},
    )
    make_wheel(folder, "smallpkg", {"smallpkg/__init__.py": b"NAME = 'small'\n"})
    return folder


def pack(scripts, wheels: Path, tmp_path: Path) -> Path:
    extra = tmp_path / "tool.sh"
    extra.write_text("#!/bin/sh\necho tool\n")
    extra.chmod(0o755)
    out = tmp_path / "parts"
    sizes = ["--part-bytes", "8000", "--unpack-above", "2000"]
    where = ["--out", str(out), "--wheels", str(wheels), "--extra", str(extra)]
    assert "part(s) in" in scripts.run("gpu.payload", "pack", *where, *sizes).stdout
    return out


def test_parts_travel_one_call_each_and_install(scripts, wheels: Path, tmp_path: Path) -> None:
    run = functools.partial(scripts.run, "gpu.payload", check=False)
    parts = sorted(pack(scripts, wheels, tmp_path).iterdir())
    assert len(parts) >= 3
    sizes = [p.stat().st_size for part in parts for p in part.glob("payload.*")]
    assert max(sizes) <= 8000 and max(sizes) - min(sizes) < len(sizes)  # about one size each
    manifest = json.loads((parts[0] / "manifest.json").read_text())
    assert manifest["wheels"]["bigpkg-1.0-py3-none-any.whl"]["unpacked"] is True
    assert manifest["wheels"]["smallpkg-1.0-py3-none-any.whl"]["unpacked"] is False
    stage, target = tmp_path / "stage", tmp_path / "site"
    for part in parts[:-1]:
        assert run("receive", str(part), "--stage", str(stage)).returncode == 0
    early = run("install", "--stage", str(stage), "--target", str(target))
    assert early.returncode == 1 and f"parts missing in {stage}: part{len(parts)}" in early.stderr
    done = run("install", str(parts[-1]), "--stage", str(stage), "--target", str(target))
    assert done.returncode == 0, done.stderr
    imported = subprocess.run(
        [sys.executable, "-c", "import bigpkg, smallpkg; print(bigpkg.ANSWER, smallpkg.NAME)"],
        env=os.environ | {"PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert imported.stdout.split() == ["42", "small"]
    assert (target / "bigpkg" / "blob.bin").stat().st_size == 20_000
    tool = stage / "files" / "tool.sh"
    assert subprocess.run([str(tool)], capture_output=True, text=True).stdout == "tool\n"
    # a second install of the same payload is a no-op
    assert run("install", "--stage", str(stage), "--target", str(target)).returncode == 0


def test_a_corrupted_part_is_refused(scripts, wheels: Path, tmp_path: Path) -> None:
    parts = sorted(pack(scripts, wheels, tmp_path).iterdir())
    chunk = next(parts[1].glob("payload.*"))
    data = bytearray(chunk.read_bytes())
    data[100] ^= 0xFF
    chunk.write_bytes(bytes(data))
    stage = str(tmp_path / "stage")
    refused = scripts.run("gpu.payload", "receive", str(parts[1]), "--stage", stage, check=False)
    assert refused.returncode == 1
    assert "sha256 differs from the manifest's (corrupted)" in refused.stderr


def test_a_file_that_differs_from_the_wheels_record_is_refused(
    wheels: Path, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    with zipfile.ZipFile(wheels / "bigpkg-1.0-py3-none-any.whl") as z:
        z.extractall(tree)
    (tree / "bigpkg" / "__init__.py").write_text("ANSWER = 41\n")
    with pytest.raises(payload.PayloadError, match=r"bigpkg/__init__\.py differs from"):
        payload.rebuild_wheel(tree, tmp_path / "rebuilt.whl")


needs_hey = pytest.mark.skipif(shutil.which("hey") is None, reason="needs hey (Debian hey)")


def bench(out: Path) -> list[str]:
    return ["--out", str(out), "--provider", "cpu", "--tiny"]


@pytest.mark.slow
@needs_hey
def test_the_measurement_runs_on_the_cpu(scripts, tmp_path: Path) -> None:
    out = tmp_path / "out"
    scripts.run("gpu.bench_gpu", *bench(out), timeout=300)
    result = json.loads((out / "gpu.json").read_text())
    assert not result.get("errors") and not result.get("skipped")
    assert set(result["raw"]) == {"mnist@cpu", "cifar@cpu"}
    loads = {(r["server"], r["mode"], r["clients"]) for r in result["load"]}
    assert ("cifar-m1@cpu", "ensemble", 4) in loads and ("mnist@cpu", "packed", 1) in loads
    assert all(r["non_200"] == 0 and r["req_per_s"] > 0 for r in result["load"])
    said = result["checks"]["/models of cifar-m1@cpu"]
    assert said == {"providers": {"cifar-m1": "cpu"}, "unavailable": {}}
    assert "service M=3 / M=1 time per image at c=4" in result["derived"]
    assert result["shape_changes"]["sizes"] == [1, 2, 4, 8, 16, 32]
    assert sorted(p.name for p in out.iterdir()) == ["gpu.json", "gpu.md", "log.txt", "servers.txt"]
    assert "| cifar | cpu |" in (out / "gpu.md").read_text()


@pytest.mark.slow
@needs_hey
def test_stopped_half_way_it_leaves_its_results_and_no_server(scripts, tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = scripts.command("gpu.bench_gpu", *bench(out))
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        log = out / "log.txt"
        if log.exists() and "load mnist@cpu" in log.read_text():
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0
    result = json.loads((out / "gpu.json").read_text())
    assert result["errors"]["stopped"] == f"signal {signal.SIGTERM}"
    assert result["raw"]  # what was measured before the signal stays
    servers = (out / "servers.txt").read_text()
    assert servers.count("=====") == 3 and "(exit None)" not in servers
