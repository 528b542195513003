"""docker-compose.yml, validated by the real Compose v2 binary (no engine needed for `config`)."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_stack import COMPOSE_FILE, clean_environment, compose_binary
from deploy_support import DOCKER, ROOT

from service.settings import Settings

HEALTHCHECK = ["CMD", "python", "-m", "service.healthcheck"]


def compose(*args: str, file: Path = COMPOSE_FILE) -> subprocess.CompletedProcess[str]:
    # Only the file decides: no COMPOSE_*, MIMO_*, ... from the caller's shell.
    return subprocess.run(
        [str(compose_binary()), "-f", str(file), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=clean_environment(),
    )


def resolved(*profiles: str) -> dict[str, Any]:
    options = [a for p in profiles for a in ("--profile", p)]
    done = compose(*options, "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("profiles", [[], ["gpu"]], ids=["default", "gpu"])
def test_compose_config_is_valid(profiles: list[str]) -> None:
    options = [a for p in profiles for a in ("--profile", p)]
    done = compose(*options, "config", "-q")
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_the_binary_really_validates(tmp_path: Path) -> None:
    """A misspelt key fails: the exit code above means something."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace(" healthcheck: *", " healthchek: *", 1))
    done = compose("config", "-q", file=broken)
    assert done.returncode != 0 and "healthchek" in done.stderr, done.stderr


def test_services_and_profiles() -> None:
    assert set(resolved()["services"]) == {"api", "prometheus", "grafana"}
    assert set(resolved("gpu")["services"]) == {"api", "api-gpu", "prometheus", "grafana"}


def published(service: dict[str, Any]) -> dict[int, int]:
    return {int(p["published"]): p["target"] for p in service["ports"]}


def test_ports_health_checks_and_images() -> None:
    services = resolved("gpu")["services"]
    # HTTP on 8000 and gRPC on 8001 (as Triton); the GPU variant beside them on 8010/8011
    assert published(services["api"]) == {8000: 8000, 8001: 8001}
    assert published(services["api-gpu"]) == {8010: 8000, 8011: 8001}
    assert published(services["prometheus"]) == {9090: 9090}
    assert published(services["grafana"]) == {3000: 3000}
    for name, service in services.items():
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD" and len(test) > 1, name
    for name in ("api", "api-gpu"):
        # no argument with a space: podman's Docker API splits them there
        assert services[name]["healthcheck"]["test"] == HEALTHCHECK
    assert services["prometheus"]["image"].startswith("prom/prometheus:v")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    api = services["api"]
    assert api["build"] == {"context": str(ROOT), "dockerfile": "docker/Dockerfile"}
    assert services["api-gpu"]["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    assert api["image"].startswith("mimo-serve:")


def image_models_path(dockerfile: Path) -> str:
    for line in dockerfile.read_text().splitlines():
        for word in line.replace("\\", " ").split():
            if word.startswith("MIMO_REPOSITORY="):
                return word.partition("=")[2]
    raise AssertionError(f"no MIMO_REPOSITORY in {dockerfile}")


@pytest.mark.parametrize(
    ("name", "dockerfile"), [("api", "Dockerfile"), ("api-gpu", "Dockerfile.gpu")]
)
def test_models_mounted_read_only_at_the_images_models_path(name: str, dockerfile: str) -> None:
    service = resolved("gpu")["services"][name]
    target = image_models_path(DOCKER / dockerfile)
    mounts = [v for v in service["volumes"] if v["target"] == target]
    assert mounts == [
        {"type": "bind", "source": str(ROOT / "models"), "target": target, "read_only": True}
    ]
    assert service["environment"]["MIMO_REPOSITORY"] == target
    assert service["environment"]["MIMO_HOST"] == "0.0.0.0"


def test_api_environment_names_are_settings() -> None:
    """A misspelt MIMO_ variable would be ignored silently by the service."""
    fields = {f"MIMO_{name.upper()}" for name in Settings.model_fields}
    for name, service in resolved("gpu")["services"].items():
        unknown = {k for k in service.get("environment", {}) if k.startswith("MIMO_")} - fields
        assert not unknown, (name, unknown)


def test_gpu_service_reserves_an_nvidia_gpu() -> None:
    service = resolved("gpu")["services"]["api-gpu"]
    assert service["profiles"] == ["gpu"]
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert service["environment"]["MIMO_PROVIDERS"] == "cuda"


def test_prometheus_uses_the_shipped_config_and_finds_every_api_container() -> None:
    services = resolved("gpu")["services"]
    prometheus = services["prometheus"]
    mounts = {v["target"]: v for v in prometheus["volumes"]}
    config = mounts["/etc/prometheus"]
    assert config["source"] == str(DOCKER / "prometheus") and config["read_only"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    shipped = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    (job,) = shipped["scrape_configs"]
    (discovery,) = job["dns_sd_configs"]
    for name in ("api", "api-gpu"):
        aliases = services[name]["networks"]["default"]["aliases"]
        assert discovery["names"][0] in aliases
        assert str(discovery["port"]) == services[name]["environment"]["MIMO_PORT"]


def test_grafana_provisioning_and_anonymous_viewers() -> None:
    grafana = resolved()["services"]["grafana"]
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    mounts = {v["target"]: v for v in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"]["source"] == str(DOCKER / "grafana/provisioning")
    providers = yaml.safe_load(
        (DOCKER / "grafana/provisioning/dashboards/dashboards.yml").read_text()
    )["providers"]
    (provider,) = providers
    dashboards = mounts[provider["options"]["path"]]
    assert dashboards["source"] == str(DOCKER / "grafana/dashboards") and dashboards["read_only"]
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/")
    assert (DOCKER / "grafana/dashboards" / Path(home).name).exists()
    datasource = yaml.safe_load(
        (DOCKER / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_readme_commands_name_real_files() -> None:
    readme = (DOCKER / "README.md").read_text()
    for line in readme.splitlines():
        if line.startswith(("docker compose", "docker build", "kubectl apply")):
            for word in shlex.split(line):
                if word.startswith(("docker/", "./docker/")) and not word.endswith("/"):
                    assert (ROOT / word).exists(), line
