"""Containers with Debian's podman, where no registry is reachable: base images are built from
Debian's packages (mmdebstrap) and imported under a local name, once per machine.

Podman runs here with `runc` and the `cgroupfs` manager and needs nofile/nproc limits set
(`crun` fails: "cgroups in hybrid mode not supported"); containers on one network find each
other by name through netavark's aardvark-dns (the CNI backend has no DNS here). That
configuration is written to a file of our own and given to podman in CONTAINERS_CONF, so the
machine's own stays untouched. So does its image store: images and containers of the tests live
in a store of their own (CONTAINERS_STORAGE_CONF), so that a base image built here under an
official name (`python:3.11-slim`) never stands in for the real one outside the tests, and a
later run with a registry pulls the real one. `api_socket` serves podman's Docker-compatible API,
which Docker Compose drives through DOCKER_HOST.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CONFIG = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
# Containers on one network find each other by name only with netavark (and aardvark-dns).
NETAVARK = """\
[network]
network_backend = "netavark"
"""
MIRROR = "http://deb.debian.org/debian"
PROGRAMS = ("podman", "runc", "mmdebstrap")
# where Debian puts podman's network helpers (not on PATH)
NETWORK_HELPERS = ("/usr/lib/podman/netavark", "/usr/lib/podman/aardvark-dns")
INSTALL = "apt-get install podman runc mmdebstrap netavark aardvark-dns (.ci/system-deps does)"


class PodmanError(RuntimeError):
    pass


@dataclass(frozen=True)
class DebianImage:
    """A base image built from Debian's packages: `suite` with `packages` on top of minbase."""

    name: str  # the local name it is imported under
    suite: str  # "trixie", "bookworm"
    packages: tuple[str, ...]
    what: str  # what it is, for the test output: "Debian 13 (trixie) with glibc 2.41, built here"
    hooks: tuple[str, ...] = ()  # mmdebstrap --customize-hook commands ("$1" is the root)
    changes: tuple[str, ...] = ()  # podman import --change instructions (ENV, USER, ...)


# podman's configuration and the tests' image store (kept between runs: a cache)
FOLDER = Path(tempfile.gettempdir()) / f"mimo-podman-{os.getuid()}"


def write_if_changed(path: Path, text: str) -> Path:
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def environment() -> dict[str, str]:
    """The environment podman runs in: the configuration above in CONTAINERS_CONF, the tests'
    own image store in CONTAINERS_STORAGE_CONF."""
    config = CONFIG + (NETAVARK if Path(NETWORK_HELPERS[0]).exists() else "")
    storage = f"""\
[storage]
driver = "overlay"
graphroot = "{FOLDER / "storage"}"
runroot = "{FOLDER / "run"}"
"""
    return {
        **os.environ,
        "CONTAINERS_CONF": str(write_if_changed(FOLDER / "containers.conf", config)),
        "CONTAINERS_STORAGE_CONF": str(write_if_changed(FOLDER / "storage.conf", storage)),
    }


def podman(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        ["podman", *args],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise PodmanError(f"podman {' '.join(args[:3])} ...: {done.stderr.strip()[-2000:]}")
    return done


def unusable(network_dns: bool = False) -> str | None:
    """Why no container can run here (with `network_dns`: none that finds another by name), or
    None when one can."""
    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    if network_dns:
        missing += [Path(p).name for p in NETWORK_HELPERS if not Path(p).exists()]
    if missing:
        return f"{', '.join(missing)} not installed: {INSTALL}"
    try:
        info = podman("info", "--format", "{{.Host.OCIRuntime.Name}}", timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"podman does not answer ({exc})"
    if info.returncode != 0:
        return f"podman cannot run here: {info.stderr.strip()[-500:]}"
    return None


def ensure_image(image: DebianImage, log: Path | None = None) -> bool:
    """Build and import `image` unless it exists; True when it was built now (~25 s)."""
    if podman("image", "exists", image.name, check=False).returncode == 0:
        return False
    with tempfile.TemporaryDirectory() as folder:
        tarball = Path(folder) / "rootfs.tar"
        done = subprocess.run(
            [
                "mmdebstrap",
                "--variant=minbase",
                f"--include={','.join(image.packages)}",
                "--skip=output/dev",  # (device nodes: podman makes its own)
                *[f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "locale")],
                *[f"--customize-hook={hook}" for hook in image.hooks],
                image.suite,
                str(tarball),
                MIRROR,
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if log is not None:
            log.write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise PodmanError(
                f"mmdebstrap {image.suite} failed (is {MIRROR} reachable?): "
                f"{done.stderr.strip()[-1000:]}"
            )
        changes = [a for change in image.changes for a in ("--change", change)]
        podman("import", "--message", image.what, *changes, str(tarball), image.name, timeout=600)
    return True


def pulled(name: str, timeout: float = 30) -> bool:
    """Whether `name` is here or could be pulled from its registry now."""
    if podman("image", "exists", name, check=False).returncode == 0:
        return True
    try:
        return podman("pull", "--quiet", name, timeout=timeout, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@contextmanager
def api_socket(folder: Path) -> Iterator[str]:
    """podman's Docker-compatible API on a socket in `folder`, while inside: its DOCKER_HOST."""
    socket = folder / "podman.sock"
    with (folder / "podman-service.log").open("w") as log:
        process = subprocess.Popen(
            ["podman", "system", "service", "--time=0", f"unix://{socket}"],
            env=environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise PodmanError(f"podman system service did not start: see {folder}")
            time.sleep(0.05)
        yield f"unix://{socket}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
