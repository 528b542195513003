"""Wheels for a machine that cannot download, carried in parts of a bounded size.

The lent GPU machine (docs/benchmarks.md, "On a GPU") has no network, and one call to it
carries at most 64 MiB of files, while onnxruntime-gpu's wheel alone is 255 MB. So, here:

    python -m benchmarks.gpu.payload pack --out .gpu          # -> .gpu/part1 ... .gpu/partN

downloads the pinned wheels of benchmarks/gpu/requirements.txt, unpacks the large ones (their
zip deflate leaves CUDA's kernels 20 % smaller than xz does), puts everything with the extra
files (`--extra`: the load generator, test digits) into one xz-compressed tar, and cuts it into
parts that each fit one call. Then, on the machine, one call per part, back to back (the
machine keeps /tmp only while it stays warm):

    python3 -m benchmarks.gpu.payload receive .gpu/part1 --stage /tmp/mimo-gpu
    ...
    python3 -m benchmarks.gpu.payload install .gpu/partN --stage /tmp/mimo-gpu \
        --target /tmp/mimo-gpu/site

`receive` copies a part and checks its sha256; `install` receives the last part, checks the
whole payload's sha256, unpacks it, rebuilds each unpacked wheel (every file checked against
the wheel's own RECORD hashes), and installs all of them with
`pip install --no-index --no-deps --target`. The extra files land in <stage>/files/.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import lzma
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements.txt"
MANIFEST = "manifest.json"
# A call carries 64 MiB: the checkout (~5 MB) travels with every part.
PART_MIB = 56
# Wheels larger than this travel unpacked, xz-compressed with the rest.
UNPACK_ABOVE_MIB = 20
# Where the GPU machine's Python is (KINDS.md: cp312 on manylinux x86_64).
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux_2_5_x86_64",
    "manylinux1_x86_64",
]
CHUNK = 1 << 20
WHEEL_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say (the tar kept no times)


class PayloadError(RuntimeError):
    pass


def sha256_of(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
    return digest.hexdigest()


def download(requirements: Path, into: Path, python_version: str) -> list[Path]:
    """The pinned wheels for the GPU machine's Python, each without its dependencies (the
    requirements file names every one that the machine lacks)."""
    into.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    command += ["--only-binary=:all:", "--python-version", python_version, "--implementation"]
    command += ["cp", "-d", str(into), "-r", str(requirements)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    subprocess.run(command, check=True)
    # Only the wheels the file pins: the folder is a cache that other requirement files (and
    # older pins) share.
    pinned = {
        (canonical(name), version.strip())
        for line in requirements.read_text().splitlines()
        if "==" in (text := line.split("#")[0].strip())
        for name, version in [text.split("==", 1)]
    }
    found = {pin_of(w): w for w in into.glob("*.whl") if pin_of(w) in pinned}
    if missing := sorted(f"{n}=={v}" for n, v in pinned - set(found)):
        raise SystemExit(f"pip downloaded no wheel for {missing}")
    return sorted(found.values())


def pin_of(wheel: Path) -> tuple[str, str]:
    """(name, version) of a wheel file: {name}-{version}-{tags}.whl."""
    name, version = wheel.name.split("-")[:2]
    return canonical(name), version


def canonical(name: str) -> str:
    """A distribution's name as PyPI compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def build_tar(wheels: list[Path], extras: list[Path], unpack_above: int) -> bytes:
    """One tar: small wheels as they are (wheels/), large ones unpacked (trees/<wheel>/), extras
    under files/."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for wheel in wheels:
            if wheel.stat().st_size <= unpack_above:
                tar.add(wheel, f"wheels/{wheel.name}")
                continue
            with zipfile.ZipFile(wheel) as z:
                for info in z.infolist():
                    if info.is_dir():
                        continue
                    member = tarfile.TarInfo(f"trees/{wheel.name}/{info.filename}")
                    member.size = info.file_size
                    member.mode = 0o755 if (info.external_attr >> 16) & 0o111 else 0o644
                    with z.open(info) as f:
                        tar.addfile(member, f)
        for extra in extras:
            tar.add(extra, f"files/{extra.name}")
    return buffer.getvalue()


def compress(data: bytes) -> bytes:
    """xz at its strongest; the xz program when there is one (threads), else Python's lzma."""
    if shutil.which("xz"):
        done = subprocess.run(
            ["xz", "-9e", "-T0", "-c"], input=data, capture_output=True, check=True
        )
        return done.stdout
    return lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)


def pack(
    wheels: list[Path], extras: list[Path], out: Path, part_bytes: int, unpack_above: int
) -> dict:
    """Write out/part1 ... out/partN, each with its slice of the payload and the manifest."""
    payload = compress(build_tar(wheels, extras, unpack_above))
    count = max(1, -(-len(payload) // part_bytes))
    size = -(-len(payload) // count)  # as many parts as needed, all of about one size
    slices = [payload[i * size : (i + 1) * size] for i in range(count)]
    manifest = {
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "payload_bytes": len(payload),
        "parts": [
            {"file": f"payload.{i:03d}", "sha256": hashlib.sha256(s).hexdigest(), "bytes": len(s)}
            for i, s in enumerate(slices)
        ],
        "wheels": {
            w.name: {
                "sha256": sha256_of([w]),
                "bytes": w.stat().st_size,
                "unpacked": w.stat().st_size > unpack_above,
            }
            for w in wheels
        },
        "extras": [e.name for e in extras],
    }
    shutil.rmtree(out, ignore_errors=True)
    for i, piece in enumerate(slices):
        folder = out / f"part{i + 1}"
        folder.mkdir(parents=True)
        (folder / manifest["parts"][i]["file"]).write_bytes(piece)
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def receive(part: Path, stage: Path) -> dict:
    """Copy one part into the stage and check it; answers the manifest."""
    manifest = json.loads((part / MANIFEST).read_text())
    stage.mkdir(parents=True, exist_ok=True)
    staged = stage / MANIFEST
    if staged.exists() and json.loads(staged.read_text()) != manifest:
        # A payload packed again since: the parts already here belong to the old one.
        for old in stage.glob("payload.*"):
            old.unlink()
    staged.write_text(json.dumps(manifest, indent=1))
    for entry in manifest["parts"]:
        source = part / entry["file"]
        if source.exists():
            shutil.copyfile(source, stage / entry["file"])
            if sha256_of([stage / entry["file"]]) != entry["sha256"]:
                raise PayloadError(f"{source}: sha256 differs from the manifest's (corrupted)")
    return manifest


def missing_parts(stage: Path, manifest: dict) -> list[str]:
    return [
        f"part{i + 1}"
        for i, entry in enumerate(manifest["parts"])
        if not (stage / entry["file"]).exists()
    ]


def rebuild_wheel(tree: Path, target: Path) -> None:
    """A wheel again from its unpacked files, each checked against the wheel's RECORD first."""
    records = list(tree.glob("*.dist-info/RECORD"))
    if len(records) != 1:
        raise PayloadError(f"{tree.name}: expected one *.dist-info/RECORD, found {len(records)}")
    names = []
    with records[0].open(newline="") as f:
        for name, digest, _size in csv.reader(f):
            names.append(name)
            if not digest:  # RECORD lists itself without a hash
                continue
            algorithm, expected = digest.split("=", 1)
            data = (tree / name).read_bytes()
            got = base64.urlsafe_b64encode(hashlib.new(algorithm, data).digest()).rstrip(b"=")
            if got.decode() != expected:
                raise PayloadError(f"{tree.name}: {name} differs from the wheel's RECORD")
    # Stored, not deflated: it is unpacked again at once, and deflating 350 MB takes a minute.
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as z:
        for name in names:
            info = zipfile.ZipInfo(name, date_time=WHEEL_TIME)
            info.external_attr = ((tree / name).stat().st_mode & 0o777) << 16
            with (tree / name).open("rb") as source, z.open(info, "w") as sink:
                shutil.copyfileobj(source, sink, CHUNK)


def install(stage: Path, target: Path, python_version: str | None = None) -> dict:
    """Join, check, unpack and pip-install the payload; `python_version` installs for another
    Python than this one (a rehearsal of the GPU machine's install, here)."""
    manifest = json.loads((stage / MANIFEST).read_text())
    done_marker = target / f".payload-{manifest['payload_sha256'][:16]}"
    if done_marker.exists():
        return manifest
    if missing := missing_parts(stage, manifest):
        raise PayloadError(f"parts missing in {stage}: {', '.join(missing)} (receive them first)")
    files = [stage / e["file"] for e in manifest["parts"]]
    if sha256_of(files) != manifest["payload_sha256"]:
        raise PayloadError("the joined payload's sha256 differs from the manifest's")
    unpacked = stage / "unpacked"
    shutil.rmtree(unpacked, ignore_errors=True)
    with tempfile.TemporaryFile() as joined:
        for part in files:
            with part.open("rb") as f:
                shutil.copyfileobj(f, joined, CHUNK)
        joined.seek(0)
        with lzma.open(joined) as xz, tarfile.open(fileobj=xz, mode="r|") as tar:
            tar.extractall(unpacked, filter="data")
    wheels = unpacked / "wheels"
    wheels.mkdir(exist_ok=True)
    for tree in sorted((unpacked / "trees").glob("*.whl")) if (unpacked / "trees").is_dir() else []:
        rebuild_wheel(tree, wheels / tree.name)
        shutil.rmtree(tree)
    for name, facts in manifest["wheels"].items():
        if not facts["unpacked"] and sha256_of([wheels / name]) != facts["sha256"]:
            raise PayloadError(f"{name}: sha256 differs from the manifest's")
    target.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps"]
    command += ["--no-compile", "--no-cache-dir", "--upgrade", "--target", str(target)]
    if python_version:
        command += ["--python-version", python_version, "--only-binary=:all:"]
        command += ["--implementation", "cp", *(f"--platform={p}" for p in PLATFORMS)]
    subprocess.run(command + [str(wheels / name) for name in manifest["wheels"]], check=True)
    files_dir = stage / "files"
    shutil.rmtree(files_dir, ignore_errors=True)
    if (unpacked / "files").is_dir():
        shutil.move(unpacked / "files", files_dir)
    shutil.rmtree(unpacked)
    done_marker.write_text("installed\n")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="download, compress and split (here)")
    p.add_argument("--out", type=Path, required=True, help="folder for part1 ... partN")
    p.add_argument("--wheels", type=Path, help="use the wheels in this folder, download none")
    p.add_argument("--requirements", type=Path, default=REQUIREMENTS)
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "mimo-gpu-wheels")
    p.add_argument("--python-version", default="3.12")
    p.add_argument("--extra", type=Path, nargs="*", default=[], help="files to carry too")
    p.add_argument("--part-bytes", type=int, default=PART_MIB << 20)
    p.add_argument("--unpack-above", type=int, default=UNPACK_ABOVE_MIB << 20)
    for name, text in (("receive", "copy and check parts"), ("install", "receive, join, install")):
        p = sub.add_parser(name, help=f"{text} (on the GPU machine)")
        p.add_argument("parts", type=Path, nargs="*", help="part folders carried by this call")
        p.add_argument("--stage", type=Path, required=True)
        if name == "install":
            p.add_argument("--target", type=Path, required=True, help="pip --target folder")
            p.add_argument("--python-version", help="install for this Python, not this one")
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            wheels = (
                sorted(args.wheels.glob("*.whl"))
                if args.wheels
                else download(args.requirements, args.cache, args.python_version)
            )
            m = pack(wheels, args.extra, args.out, args.part_bytes, args.unpack_above)
            wheel_mib = sum(w.stat().st_size for w in wheels) / 2**20
            print(
                f"{len(m['parts'])} part(s) in {args.out}, {m['payload_bytes'] / 2**20:.1f} MiB "
                f"in all, from {len(wheels)} wheel(s) ({wheel_mib:.1f} MiB)"
            )
            return
        manifest = None
        for part in args.parts:
            manifest = receive(part, args.stage)
        if manifest is None:
            manifest = json.loads((args.stage / MANIFEST).read_text())
        missing = missing_parts(args.stage, manifest)
        print(f"{len(manifest['parts']) - len(missing)} of {len(manifest['parts'])} parts here")
        if args.command == "install":
            install(args.stage, args.target, args.python_version)
            print(f"installed into {args.target}; extra files in {args.stage / 'files'}")
    except (PayloadError, OSError, subprocess.CalledProcessError) as exc:
        print(f"payload: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
