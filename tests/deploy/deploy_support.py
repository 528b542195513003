"""Helpers of the deployment tests: images, traffic, the Prometheus test config. Those that run
processes (free ports, polling, the service) are in tests/support.py."""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from PIL import Image
from support import ROOT

DOCKER = ROOT / "docker"
PROMETHEUS_DIR = DOCKER / "prometheus"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "mimo-serve.json"
NO_PROMETHEUS = "Prometheus is not installed (apt-get install prometheus; .ci/run does)"
DIGITS = 20
NOISE = 5


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


GRAFANA_VARIABLES = {"$model": ".*", "$__rate_interval": "1m", "$__interval": "15s"}


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            # label_values(metric, label) is Grafana's; the metric selector is PromQL
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", query["query"])
            assert match, query
            queries.append((f"${variable['name']}", match.group(1)))
    return queries


def rule_groups(url: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{url}/api/v1/rules", timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]["groups"]
