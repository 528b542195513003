"""docker/prometheus: promtool checks the config and rules, and unit-tests every alert."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from deploy_support import NO_PROMETHEUS, PROMETHEUS_DIR

HERE = Path(__file__).parent
promtool = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(promtool is None, reason=NO_PROMETHEUS)


def run(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    assert promtool
    return subprocess.run([promtool, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


@needs_promtool
def test_promtool_check_config() -> None:
    done = run("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout


@needs_promtool
def test_promtool_check_rules() -> None:
    done = run("check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    rules = sum(
        len(g["rules"])
        for g in yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    )
    assert f"SUCCESS: {rules} rules found" in done.stdout


@needs_promtool
def test_promtool_rule_unit_tests() -> None:
    """tests/deploy/alerts_test.yml: each alert fires on its traffic and not on the traffic
    next to it."""
    done = run("test", "rules", "alerts_test.yml", cwd=HERE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@needs_promtool
def test_promtool_catches_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "alerts.yml"
    broken.write_text(
        (PROMETHEUS_DIR / "alerts.yml")
        .read_text()
        .replace("\n          > 0.8\n", "\n          > > 0.8\n")
    )
    done = run("check", "rules", str(broken))
    assert done.returncode != 0


def test_every_alert_is_unit_tested() -> None:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load((HERE / "alerts_test.yml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts == fired


def test_the_alerts_the_issue_asks_for() -> None:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    rules = {r.get("alert") or r["record"]: r for g in groups for r in g["rules"]}
    exprs = " ".join(r["expr"] for r in rules.values())
    assert 'status=~"5.."' in rules["MimoServeHighErrorRate"]["expr"]
    assert "histogram_quantile(0.99" in rules["MimoServeHighLatencyP99"]["expr"]
    assert "mimo_request_duration_seconds_bucket" in rules["MimoServeHighLatencyP99"]["expr"]
    assert "mimo_queue_depth" in rules["MimoServeQueueSaturated"]["expr"]
    assert (
        "/ sum by (job, instance, model, version) (mimo_queue_capacity)"
        in rules["MimoServeQueueSaturated"]["expr"]
    )
    assert "offset 1d" in rules["MimoServeUncertainShareRising"]["expr"]
    assert "> 0.15" in rules["MimoServeUncertainShareHigh"]["expr"]
    assert "offset 1d" in rules["MimoServeMutualInformationRising"]["expr"]
    assert "mimo_uncertain_predictions_total" in exprs and "mimo_predictions_total" in exprs
    assert "mimo_mutual_information_nats_sum" in exprs
    for name, rule in rules.items():
        if "alert" in rule:
            assert rule["labels"]["severity"] in {"page", "warning"}, name
            assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_config_scrapes_the_api_every_5s_and_loads_the_rules() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert config["global"]["scrape_interval"] == "5s"
    assert config["rule_files"] == ["alerts.yml"]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "mimo-serve" and job["metrics_path"] == "/metrics"
    assert job["dns_sd_configs"][0]["port"] == 8000
