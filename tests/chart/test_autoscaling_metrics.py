"""The HPAs' custom and external metrics exist: prometheus-adapter rules
(deploy/monitoring/prometheus-adapter) produce every metric name the chart's HPAs ask
for, from series the services really expose, and every adapter and KEDA query is valid
PromQL (promtool)."""

from __future__ import annotations

import importlib
import subprocess
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
import yaml

from tests.chart.conftest import Rendered
from tests.infra.common import PROJECT_ROOT, require

ADAPTER = PROJECT_ROOT / "deploy" / "monitoring" / "prometheus-adapter" / "values.yaml"
RULES = yaml.safe_load(ADAPTER.read_text())["rules"]


def exposed_metric_names() -> set[str]:
    """Every metric family the services register (their modules define them at import)."""
    for module in ("core", "bidding", "analytics"):
        importlib.import_module(f"adplatform.{module}.metrics")
    names = set()
    for family in prometheus_client.REGISTRY.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(f"{family.name}_total")
    return names


def _series(rule: dict[str, Any]) -> str:
    return str(rule["seriesQuery"]).split("{", 1)[0]


def hpa_metrics(result: Rendered, kind: str) -> set[str]:
    key = {"Pods": "pods", "External": "external"}[kind]
    return {
        metric[key]["metric"]["name"]
        for hpa in result.of_kind("HorizontalPodAutoscaler")
        for metric in hpa["spec"]["metrics"]
        if metric["type"] == kind
    }


@pytest.mark.parametrize("name", ["default", "staging", "production"])
def test_adapter_provides_every_hpa_metric(name: str, rendered: dict[str, Rendered]) -> None:
    custom = {rule["name"]["as"] for rule in RULES["custom"]}
    external = {rule["name"]["as"] for rule in RULES["external"]}
    assert hpa_metrics(rendered[name], "Pods") == {
        "http_requests_per_second",
        "bid_requests_per_second",
    }
    assert hpa_metrics(rendered[name], "Pods") <= custom
    assert hpa_metrics(rendered[name], "External") <= external


def test_adapter_rules_read_series_the_services_expose() -> None:
    exposed = exposed_metric_names()
    for rule in RULES["custom"] + RULES["external"]:
        assert _series(rule) in exposed, f"{_series(rule)} is not a metric of the services"
        assert set(rule["resources"]["overrides"]) >= {"namespace"}
    assert RULES["default"] is False


def _substitute(query: str) -> str:
    return (
        query.replace("<<.Series>>", "http_requests_total")
        .replace("<<.LabelMatchers>>", 'namespace="adplatform",pod=~"adplatform-.*"')
        .replace("<<.GroupBy>>", "pod")
    )


def test_adapter_and_keda_queries_are_valid_promql(
    tmp_path: Path, rendered: dict[str, Rendered]
) -> None:
    promtool = require("promtool", "scripts/install-system.sh (Debian package prometheus)")
    queries = [_substitute(rule["metricsQuery"]) for rule in RULES["custom"] + RULES["external"]]
    for obj in rendered["keda"].of_kind("ScaledObject"):
        queries += [
            trigger["metadata"]["query"]
            for trigger in obj["spec"]["triggers"]
            if trigger["type"] == "prometheus"
        ]
    assert len(queries) == 5
    rules = {"groups": [{"name": "queries", "rules": [
        {"record": f"adplatform:query_{i}", "expr": query} for i, query in enumerate(queries)
    ]}]}  # fmt: skip
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout
