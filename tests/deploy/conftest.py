"""Deployment tests: the shipped files (docker/, docker-compose.yml) against the real service.

`deploy_repository` exports the session's digits checkpoint (tests/conftest.py) into a model
repository; `observed` runs `python -m service` on it, with a real Prometheus scraping it when
one is installed, and sends real predictions.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

# The tests import their helpers from deploy_support.py beside this file (tests/conftest.py
# puts only tests/ itself on the path, for support.py); with pytest's --import-mode=importlib
# nothing else puts this folder on the path.
sys.path.insert(0, str(Path(__file__).parent))

from compose_stack import FINDINGS
from deploy_support import (
    PROMETHEUS_DIR,
    ROOT,
    Observed,
    prometheus_query,
    prometheus_test_config,
    send_traffic,
)
from support import SERVICE, Process, free_port, service_env, start_service, wait_for


@pytest.fixture(scope="session")
def deploy_repository(digits_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<repo>/digits/1/model.onnx exported from the session's digits checkpoint."""
    from training.export import export

    repo = tmp_path_factory.mktemp("deploy-models")
    export(digits_checkpoint, repo, "digits", 1)
    return repo


@pytest.fixture(scope="session")
def observed(
    deploy_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Observed]:
    folder = tmp_path_factory.mktemp("observed")
    port = free_port()
    service = start_service(
        SERVICE,
        service_env(deploy_repository, port),
        ROOT,
        folder / "service.log",
    )
    prometheus: Process | None = None
    try:
        service_url = f"http://127.0.0.1:{port}"
        job = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())["scrape_configs"]
        result = Observed(service_url, None, job[0]["job_name"])
        if shutil.which("prometheus"):
            web = free_port()
            prometheus = Process(
                [
                    "prometheus",
                    f"--config.file={prometheus_test_config(port, folder)}",
                    f"--storage.tsdb.path={folder / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{web}",
                ],
                folder / "prometheus.log",
                cwd=folder,
            )
            url = f"http://127.0.0.1:{web}"
            wait_for(
                "prometheus ready",
                lambda: prometheus.alive() and httpx.get(f"{url}/-/ready").status_code == 200,
                30,
            )
            # Traffic after the first scrape, so that rates see it too.
            wait_for(
                "first scrape of the service",
                lambda: [r for r in prometheus_query(url, "up") if r["value"][1] == "1"],
                30,
            )
            result.prometheus_url = url
        send_traffic(result)
        yield result
    finally:
        if prometheus is not None:
            prometheus.stop()
        service.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FINDINGS:
        terminalreporter.write_sep("-", "docker compose stack (tests/deploy/test_containers.py)")
        for line in FINDINGS:
            terminalreporter.write_line(line)
