"""Helpers of the deployment tests: processes, polling, images, the Prometheus test config."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
PROMETHEUS_DIR = DOCKER / "prometheus"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "mimo-serve.json"
NO_PROMETHEUS = "Prometheus is not installed (apt-get install prometheus; .ci/run does)"
DIGITS = 20
NOISE = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.25) -> Any:
    """Poll `check` until it returns something truthy; its last exception explains a timeout."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (httpx.HTTPError, OSError, AssertionError, KeyError, ValueError) as exc:
            last = exc
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s (last: {last!r})")


class Process:
    """A subprocess whose output goes to a file, stopped (and reaped) by `stop`."""

    def __init__(self, args: list[str], log: Path, **kwargs: Any) -> None:
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, **kwargs)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def alive(self) -> bool:
        if self.popen.poll() is not None:
            raise RuntimeError(f"exited with {self.popen.returncode}:\n{self.output()}")
        return True

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)


def service_env(repository: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIMO_", "PROMETHEUS_"))}
    env.update(
        MIMO_REPOSITORY=str(repository),
        MIMO_DEFAULT_MODEL="digits",
        MIMO_HOST="127.0.0.1",
        MIMO_PORT=str(port),
        MIMO_THREADS="1",  # modest: the machine is shared
        MIMO_LOG_LEVEL="warning",
    )
    env.update(extra)
    return env


def start_service(
    command: list[str], env: dict[str, str], cwd: Path, log: Path, timeout: float = 90
) -> Process:
    """Start the service and wait for /v2/health/ready."""
    process = Process(command, log, env=env, cwd=cwd)
    url = f"http://127.0.0.1:{env['MIMO_PORT']}/v2/health/ready"
    try:
        wait_for(
            "service ready",
            lambda: process.alive() and httpx.get(url, timeout=2).status_code == 200,
            timeout,
        )
    except BaseException:
        process.stop()
        raise
    return process


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def digit_pngs(count: int) -> list[bytes]:
    """Held-out-looking sklearn digits as 8x8 grayscale PNGs (light ink on black)."""
    from sklearn.datasets import load_digits

    images = load_digits().images[-count:]
    return [png(np.round(image * 255 / 16).astype(np.uint8)) for image in images]


def noise_pngs(count: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [png(rng.integers(0, 256, (28, 28), dtype=np.uint8)) for _ in range(count)]


def prometheus_test_config(port: int, folder: Path) -> Path:
    """The shipped prometheus.yml with only its target (this test's service) and intervals
    (1 s) changed, and its rule files made absolute."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    (job,) = config["scrape_configs"]
    for key in [k for k in job if k.endswith("_sd_configs")]:
        del job[key]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def prometheus_query(url: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    body = answer.json()
    assert answer.status_code == 200 and body["status"] == "success", (expr, body)
    return body["data"]["result"]


@dataclass
class Observed:
    """The running service, the Prometheus scraping it (None if not installed), and what was
    sent to it and answered."""

    service_url: str
    prometheus_url: str | None
    job: str
    answers: list[dict[str, Any]] = field(default_factory=list)  # one per predicted image
    statuses: dict[str, int] = field(default_factory=dict)  # /predict answers by status


def send_traffic(observed: Observed) -> None:
    """20 digits and 5 noise images, one /predict each, and one refused request (415)."""
    with httpx.Client(base_url=observed.service_url, timeout=30) as client:
        for image in digit_pngs(DIGITS) + noise_pngs(NOISE):
            answer = client.post("/predict", content=image, headers={"Content-Type": "image/png"})
            assert answer.status_code == 200, answer.text
            observed.answers.extend(answer.json()["predictions"])
        refused = client.post("/predict", content=b"hello", headers={"Content-Type": "text/plain"})
        assert refused.status_code == 415, refused.text
    observed.statuses = {"200": DIGITS + NOISE, "415": 1}
