"""A real Prometheus, run with the shipped config and rules, scrapes the real service.

Its HTTP API must show exactly the traffic that was sent: requests by status, predictions by
label, the uncertain ones, and every bucket of the three uncertainty histograms. The shipped
alert and recording rules must load and evaluate, and every query of the Grafana dashboard must
be valid PromQL that Prometheus answers.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
import yaml
from deploy_support import (
    GRAFANA_VARIABLES,
    NO_PROMETHEUS,
    PROMETHEUS_DIR,
    Observed,
    dashboard_queries,
    prometheus_query,
    rule_groups,
)
from support import wait_for

from service import metrics


@pytest.fixture
def prometheus(observed: Observed) -> str:
    if observed.prometheus_url is None:
        pytest.skip(NO_PROMETHEUS)
    return observed.prometheus_url


def values_by(url: str, expr: str, label: str) -> dict[str, float]:
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in prometheus_query(url, expr)}


def eventually_equal(url: str, expr: str, label: str, expected: dict[str, float]) -> None:
    """Poll: the first scrapes after the traffic may not have landed yet."""
    seen: dict[str, dict[str, float]] = {}

    def check() -> bool:
        seen["last"] = values_by(url, expr, label)
        return seen["last"] == expected

    try:
        wait_for(expr, check, timeout=30)
    except TimeoutError:
        pytest.fail(f"{expr}: Prometheus has {seen.get('last')}, the test sent {expected}")


def test_prometheus_scrapes_the_service(prometheus: str, observed: Observed) -> None:
    up = values_by(prometheus, "up", "job")
    assert up == {observed.job: 1.0}


def test_request_and_prediction_counts_equal_what_was_sent(
    prometheus: str, observed: Observed
) -> None:
    sent = {status: float(n) for status, n in observed.statuses.items()}
    eventually_equal(
        prometheus,
        'sum by (status) (mimo_requests_total{endpoint="/predict"})',
        "status",
        sent,
    )
    eventually_equal(
        prometheus,
        'sum by (status) (mimo_model_requests_total{model="digits", version="1"})',
        "status",
        sent,  # the refused request was for the default model too
    )
    labels = Counter(a["label"] for a in observed.answers)
    eventually_equal(
        prometheus,
        'sum by (label) (mimo_predictions_total{model="digits"})',
        "label",
        # every class has its series from the start, at 0 until predicted
        {str(digit): float(labels[str(digit)]) for digit in range(10)},
    )
    uncertain = sum(a["uncertain"] for a in observed.answers)
    eventually_equal(
        prometheus,
        'sum by (model) (mimo_uncertain_predictions_total{model="digits"})',
        "model",
        {"digits": float(uncertain)},
    )
    eventually_equal(
        prometheus,
        "mimo_model_info",
        "model",
        {"digits": 1.0},
    )
    info = prometheus_query(prometheus, "mimo_model_info")[0]["metric"]
    assert (info["version"], info["ensemble_size"], info["provider"]) == ("1", "3", "cpu")


@pytest.mark.parametrize(
    ("metric", "field", "buckets"),
    [
        ("mimo_mutual_information_nats", "mutual_information", metrics.INFORMATION_BUCKETS),
        ("mimo_predictive_entropy_nats", "predictive_entropy", metrics.INFORMATION_BUCKETS),
        ("mimo_disagreement_ratio", "disagreement", metrics.DISAGREEMENT_BUCKETS),
    ],
)
def test_uncertainty_histograms_equal_what_was_answered(
    prometheus: str, observed: Observed, metric: str, field: str, buckets: tuple[float, ...]
) -> None:
    """Each bucket holds exactly the answers whose uncertainty is at most its bound."""
    values = [a["uncertainty"][field] for a in observed.answers]
    assert len(values) == 25
    expected = {"+Inf": float(len(values))}
    for bound in buckets:
        expected[repr_le(bound)] = float(sum(v <= bound for v in values))
    eventually_equal(prometheus, f'sum by (le) ({metric}_bucket{{model="digits"}})', "le", expected)
    count = values_by(prometheus, f'sum({metric}_count{{model="digits"}})', "")
    assert count == {"": float(len(values))}
    total = values_by(prometheus, f'sum({metric}_sum{{model="digits"}})', "")[""]
    assert math.isclose(total, sum(values), rel_tol=1e-9, abs_tol=1e-12)


def repr_le(bound: float) -> str:
    """The `le` label prometheus-client writes for a bucket bound."""
    return str(float(bound))


def test_shipped_rules_load_and_evaluate(prometheus: str) -> None:
    shipped = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    expected = {g["name"]: [r.get("alert") or r["record"] for r in g["rules"]] for g in shipped}

    def evaluated() -> list[dict[str, Any]]:
        groups = rule_groups(prometheus)
        rules = [r for g in groups for r in g["rules"]]
        never = [r["name"] for r in rules if r["lastEvaluation"].startswith("0001-")]
        assert not never, f"not evaluated yet: {never}"
        return groups

    groups = wait_for("every rule evaluated", evaluated, timeout=30)
    assert {g["name"]: [r["name"] for r in g["rules"]] for g in groups} == expected
    for group in groups:
        for rule in group["rules"]:
            assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
            assert not rule.get("lastError"), rule
    alerts = [r for g in groups for r in g["rules"] if r["type"] == "alerting"]
    # The traffic is healthy and small: nothing fires (the shift alerts need > 0.05/s for 15 min).
    assert [a["name"] for a in alerts if a["state"] == "firing"] == []


def test_recording_rules_aggregate_the_real_series(prometheus: str, observed: Observed) -> None:
    """The recorded series exist for the served model with the labels the alerts match on."""
    for record in (
        "mimo:predictions:rate30m",
        "mimo:uncertain_share:ratio_rate30m",
        "mimo:mutual_information:mean_rate30m",
    ):
        result = wait_for(record, lambda r=record: prometheus_query(prometheus, r), timeout=30)
        (sample,) = result
        labels = {k: v for k, v in sample["metric"].items() if k != "__name__"}
        assert labels == {"job": observed.job, "model": "digits", "version": "1"}, record
        value = float(sample["value"][1])
        assert math.isnan(value) or value >= 0, (record, value)
    share = float(prometheus_query(prometheus, "mimo:uncertain_share:ratio_rate30m")[0]["value"][1])
    assert math.isnan(share) or 0 <= share <= 1


def test_every_dashboard_query_is_valid_promql(prometheus: str) -> None:
    for title, expr in dashboard_queries():
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, (title, expr)
        prometheus_query(prometheus, expr)  # asserts status success


@pytest.mark.parametrize(
    "title",
    [
        "Mutual information (nats)",
        "Predictive entropy (nats)",
        "Disagreement",
        "Predictions by label",
        "Request rate by status",
        "Models served",
    ],
)
def test_dashboard_panels_show_the_traffic(prometheus: str, title: str) -> None:
    (expr,) = [e for t, e in dashboard_queries() if t == title]
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    wait_for(f"{title}: {expr}", lambda: prometheus_query(prometheus, expr), timeout=30)
