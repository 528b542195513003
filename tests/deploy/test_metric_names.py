"""Every metric the dashboard and the alert rules query is one the running service exports."""

from __future__ import annotations

import json
import re

import httpx
import yaml
from deploy_support import DASHBOARD, PROMETHEUS_DIR, Observed
from prometheus_client.parser import text_string_to_metric_families

NAME = re.compile(r"\bmimo_\w+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def dashboard_expressions() -> dict[str, str]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = {
        f"panel {p['title']!r} {t['refId']}": t["expr"]
        for p in dashboard["panels"]
        for t in p.get("targets", [])
    }
    for variable in dashboard["templating"]["list"]:
        if isinstance(variable.get("query"), dict):
            found[f"variable ${variable['name']}"] = variable["query"]["query"]
    return found


def rule_expressions() -> dict[str, str]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return {f"rule {r.get('alert') or r['record']}": r["expr"] for g in groups for r in g["rules"]}


def exported(observed: Observed) -> tuple[set[str], dict[str, str]]:
    """Sample names in a real scrape, and each family's type."""
    text = httpx.get(f"{observed.service_url}/metrics", timeout=10).text
    samples: set[str] = set()
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        samples.update(s.name for s in family.samples)
    return samples, types


def test_the_expressions_name_metrics_at_all() -> None:
    assert len(dashboard_expressions()) >= 15
    assert len(rule_expressions()) >= 8
    for where, expr in {**dashboard_expressions(), **rule_expressions()}.items():
        assert NAME.search(expr) or "mimo:" in expr or expr.startswith("up"), where


def test_every_queried_metric_is_exported(observed: Observed) -> None:
    samples, types = exported(observed)
    missing = {}
    for where, expr in {**dashboard_expressions(), **rule_expressions()}.items():
        for name in NAME.findall(expr):
            base = next((name.removesuffix(s) for s in HISTOGRAM_SUFFIXES if name.endswith(s)), "")
            if name in samples:
                continue
            # `_bucket`, `_sum`, `_count` count as the histogram's name, and only a histogram's
            if base and types.get(base) == "histogram":
                continue
            missing.setdefault(name, []).append(where)
    assert not missing, f"queried but not exported by the service: {missing}"


def test_histogram_suffixes_are_only_used_on_histograms(observed: Observed) -> None:
    _, types = exported(observed)
    for where, expr in {**dashboard_expressions(), **rule_expressions()}.items():
        for name in NAME.findall(expr):
            if name.endswith("_bucket"):
                assert types.get(name.removesuffix("_bucket")) == "histogram", (where, name)
                assert "histogram_quantile" in expr or "heatmap" in where or "increase(" in expr


def test_the_recorded_series_used_by_alerts_are_defined() -> None:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    records = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    for where, expr in {**dashboard_expressions(), **rule_expressions()}.items():
        for name in re.findall(r"\bmimo:[\w:]+", expr):
            assert name in records, (where, name)
