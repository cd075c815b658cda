"""Every PromQL query the project ships, run against a live Prometheus scraping the
real services (`adplatform dev`): rule expressions (as written, not the accelerated
copies), dashboard panels and variables, prometheus-adapter rules and the chart's
KEDA triggers. Each must evaluate without error, and each metric name it reads must
be one the services expose (their /metrics pages, TYPE lines included), a recording
rule, or an entry of the documented allow-list `external_metrics.yaml`. On the
services' own series every label matcher must name a label they emit there, with a
value they can emit (seen in the live scrape, or in the code's enumerations): a typo
such as `outcome="timeouts"` evaluates fine and silently matches nothing."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from tests.infra.prometheus import exposed_metric_names
from tests.monitoring.conftest import LiveStack
from tests.monitoring.promql import (
    Query,
    all_queries,
    code_label_values,
    exposed_label_values,
    label_matchers,
    label_value_problems,
    merge_label_values,
    metric_names,
    recorded_names,
)

ALLOW_LIST = Path(__file__).with_name("external_metrics.yaml")
SERVICE_METRICS = (
    "adplatform_service_info",
    "http_requests_total",
    "bid_requests_total",
    "bid_request_duration_seconds_bucket",
    "bidder_index_campaigns",
    "outbox_pending_rows",
    "events_published_total",
    "analytics_last_commit_timestamp_seconds",
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def queries() -> list[Query]:
    return all_queries()


def allowed_external() -> dict[str, str]:
    document = yaml.safe_load(ALLOW_LIST.read_text())
    return {name: source for source, entry in document.items() for name in entry["metrics"]}


def test_every_kind_of_query_is_covered(queries: list[Query]) -> None:
    origins = " ".join(q.origin for q in queries)
    for kind in ("bidding.yaml: ", "overview.json: ", "prometheus-adapter/", "ScaledObject"):
        assert kind in origins, f"no query from {kind!r}"
    assert len(queries) > 100


def test_services_are_scraped(live_stack: LiveStack) -> None:
    for name in SERVICE_METRICS:
        live_stack.prometheus.wait_for_series(name, timeout=30)
    services = {
        r["metric"]["service"] for r in live_stack.prometheus.query("adplatform_service_info")
    }
    assert services == {"campaigns", "bidding", "analytics"}


def test_every_query_evaluates(live_stack: LiveStack, queries: list[Query]) -> None:
    live_stack.prometheus.wait_for_series("bid_requests_total", timeout=30)
    failures = []
    for query in queries:
        body = live_stack.prometheus.query_response(query.expr)
        if body.get("status") != "success":
            failures.append(
                f"{query.origin}: {body.get('errorType')}: {body.get('error')}\n    {query.expr}"
            )
    assert not failures, "\n".join(failures)


def test_every_metric_name_is_exposed_or_allowed(
    live_stack: LiveStack, queries: list[Query]
) -> None:
    exposed = exposed_metric_names(live_stack.dev.metrics_text())
    recorded = recorded_names()
    allowed = allowed_external()
    used: dict[str, list[str]] = defaultdict(list)
    for query in queries:
        for name in metric_names(query.expr):
            used[name].append(query.origin)
    unknown = {
        name: origins
        for name, origins in used.items()
        if name not in exposed and name not in recorded and name not in allowed
    }
    assert not unknown, "metrics neither exposed, recorded nor allow-listed:\n" + "\n".join(
        f"  {name}: {', '.join(origins[:3])}" for name, origins in sorted(unknown.items())
    )
    unused = set(allowed) - set(used)
    assert not unused, f"allow-list entries no query uses: {sorted(unused)}"
    shadowed = set(allowed) & exposed
    assert not shadowed, f"allow-listed but exposed by the services: {sorted(shadowed)}"


def test_every_label_value_is_one_the_services_emit(
    live_stack: LiveStack, queries: list[Query]
) -> None:
    live_stack.prometheus.wait_for_series("bid_requests_total", timeout=30)
    emitted = merge_label_values(
        exposed_label_values(live_stack.dev.metrics_text()), code_label_values()
    )
    checked = [m for q in queries for m in label_matchers(q.expr) if m.metric in emitted]
    assert len(checked) > 20, "the check found hardly any matcher on the services' series"
    problems = label_value_problems(queries, emitted)
    assert not problems, "label matchers the services cannot satisfy:\n" + "\n".join(problems)


def test_live_rules_evaluate_without_error(live_stack: LiveStack) -> None:
    """The accelerated copies loaded into the live Prometheus: every rule evaluated,
    none with an error (e.g. many-to-many matching on real label sets)."""
    deadline = time.monotonic() + 20
    while True:
        rules = [r for g in live_stack.prometheus.rule_groups() for r in g["rules"]]
        pending = [r["name"] for r in rules if r["health"] == "unknown"]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert rules
    assert not pending, f"never evaluated: {pending}"
    errors = [f"{r['name']}: {r.get('lastError')}" for r in rules if r["health"] != "ok"]
    assert not errors, "\n".join(errors)
