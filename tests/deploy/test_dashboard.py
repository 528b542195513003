"""The Grafana dashboard and provisioning, checked as files (Grafana is not packaged here)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from deploy_support import DASHBOARD, DOCKER

PROVISIONING = DOCKER / "grafana" / "provisioning"


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict[str, Any]]:
    return dashboard()["panels"]


def by_title(title: str) -> dict[str, Any]:
    (panel,) = [p for p in panels() if p["title"] == title]
    return panel


def test_datasource_provisioning_and_dashboard_agree() -> None:
    (datasource,) = yaml.safe_load((PROVISIONING / "datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["type"] == "prometheus" and datasource["isDefault"] is True
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["datasource"]["current"]["value"] == datasource["uid"]
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]


def test_dashboard_provider() -> None:
    config = yaml.safe_load((PROVISIONING / "dashboards/dashboards.yml").read_text())
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")


def test_layout() -> None:
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids))
    titles = [p["title"] for p in panels()]
    assert len(titles) == len(set(titles))
    cells: set[tuple[int, int]] = set()
    for panel in panels():
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)) and all(t["expr"] for t in panel["targets"])
    assert dashboard()["uid"] == "mimo-serve"


@pytest.mark.parametrize(
    "metric",
    [
        "mimo_mutual_information_nats_bucket",
        "mimo_predictive_entropy_nats_bucket",
        "mimo_disagreement_ratio_bucket",
    ],
)
def test_uncertainty_distributions_are_heatmaps(metric: str) -> None:
    (panel,) = [p for p in panels() if any(metric in t["expr"] for t in p["targets"])]
    assert panel["type"] == "heatmap"
    (target,) = panel["targets"]
    assert target["format"] == "heatmap" and target["legendFormat"] == "{{le}}"
    assert target["expr"].startswith("sum by (le) (increase(")
    assert panel["options"]["calculate"] is False  # buckets come from Prometheus


def test_the_panels_the_issue_asks_for() -> None:
    def exprs(title: str) -> str:
        return " ".join(t["expr"] for t in by_title(title)["targets"])

    assert "sum by (status) (rate(mimo_requests_total" in exprs("Request rate by status")
    latency = exprs("Latency quantiles")
    for q in ("0.5", "0.9", "0.99"):
        assert (
            f"histogram_quantile({q}, sum by (le) (rate(mimo_request_duration_seconds_bucket"
            in latency
        )
    assert "mimo_batch_size" in exprs("Batch size")
    assert "mimo_queue_depth" in exprs("Queue depth")
    share = exprs("Share of uncertain predictions and mean mutual information")
    assert "mimo_uncertain_predictions_total" in share and "mimo_predictions_total" in share
    assert "sum by (label)" in exprs("Predictions by label")
    models = by_title("Models served")
    assert models["type"] == "table" and "mimo_model_info" in exprs("Models served")
    assert models["targets"][0]["instant"] is True


def test_model_variable_filters_model_metrics() -> None:
    for panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            if "mimo_requests" in expr or "mimo_request_duration" in expr:
                continue  # HTTP metrics have no model label
            assert 'model=~"$model"' in expr, (panel["title"], expr)
