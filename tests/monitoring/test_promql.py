"""The helpers the monitoring tests rely on: metric-name extraction from PromQL,
dashboard and adapter template expansion, and the duration scaling of the live
tests' rule copies."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.infra.prometheus import (
    Acceleration,
    accelerate_rules,
    exposed_metric_names,
    format_duration,
    parse_duration,
    scale_durations,
)
from tests.monitoring.promql import (
    Matcher,
    Query,
    adapter_expr,
    code_label_values,
    exposed_label_values,
    grafana_expr,
    label_matchers,
    label_value_problems,
    label_values_query,
    merge_label_values,
    metric_names,
)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('sum by (le) (rate(x_bucket{le="0.1",job=~"a|b"}[5m]))', {"x_bucket"}),
        ("histogram_quantile(0.95, sum(rate(a_bucket[5m])) by (le)) > 0.1", {"a_bucket"}),
        ('{__name__="named", a="b"} * on (a) group_left (b) other', {"named", "other"}),
        ("a and on (namespace) b or c unless d", {"a", "b", "c", "d"}),
        ("x offset 10m > bool 1e3", {"x"}),
        ('label_replace(y, "service", "$1", "container", "(.+)")', {"y"}),
        ("max_over_time(z[1h:1m]) - time() + vector(0)", {"z"}),
        (
            'bid:requests:rate5m{outcome!="invalid"} / ignoring (outcome) group_right w',
            {
                "bid:requests:rate5m",
                "w",
            },
        ),
        ("count without (pod) (k) # a comment naming not_a_metric", {"k"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_grafana_expr() -> None:
    expr = 'rate(x{namespace=~"$namespace",a="${a}"}[$__rate_interval])'
    assert grafana_expr(expr, {"namespace": ".*", "a": "b"}) == (
        'rate(x{namespace=~".*",a="b"}[1m])'
    )
    with pytest.raises(KeyError):
        grafana_expr('x{a="$undefined"}', {})


def test_label_values_and_adapter_templates() -> None:
    assert label_values_query('label_values(info{a="b"}, namespace)') == (
        'group by (namespace) (info{a="b"})'
    )
    assert label_values_query("up") is None
    assert (
        adapter_expr("sum by (<<.GroupBy>>) (rate(<<.Series>>{<<.LabelMatchers>>}[2m]))", "m_total")
        == 'sum by (namespace, pod) (rate(m_total{namespace="default"}[2m]))'
    )


def test_durations() -> None:
    assert parse_duration("1h30m") == 5400
    assert parse_duration("500ms") == 0.5
    assert format_duration(15) == "15s"
    assert format_duration(180) == "3m"
    assert format_duration(0.25) == "250ms"
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        parse_duration("5 minutes")
    assert scale_durations("rate(a[5m]) offset 10m", 20, 5) == "rate(a[15s]) offset 30s"
    assert scale_durations("max_over_time(b[1h:1m])", 20, 5) == "max_over_time(b[3m:5s])"
    assert scale_durations("rate(c[1m])", 20, 5) == "rate(c[5s])"  # never under min_range


def test_accelerate_rules(tmp_path: Path) -> None:
    source = tmp_path / "in" / "r.yaml"
    source.parent.mkdir()
    source.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "g",
                        "interval": "1m",
                        "rules": [
                            {"alert": "A", "expr": "rate(x[5m]) > 1", "for": "10m"},
                            {"alert": "B", "expr": "y > 1", "for": "1m"},
                            {"record": "r", "expr": "sum(rate(x[1h]))"},
                        ],
                    }
                ]
            }
        )
    )
    (copy,) = accelerate_rules([source], tmp_path / "out", Acceleration(20, 5, 2))
    group = yaml.safe_load(copy.read_text())["groups"][0]
    assert group["interval"] == "1s"
    assert group["rules"][0] == {"alert": "A", "expr": "rate(x[15s]) > 1", "for": "30s"}
    assert group["rules"][1]["for"] == "3s"
    assert group["rules"][2]["expr"] == "sum(rate(x[3m]))"


def test_exposed_metric_names() -> None:
    page = "\n".join(
        [
            "# HELP http_requests_total h",
            "# TYPE http_requests_total counter",
            "# HELP lat_seconds h",
            "# TYPE lat_seconds histogram",
            'lat_seconds_bucket{le="+Inf"} 1.0',
            "# TYPE g gauge",
            "g 1.0",
        ]
    )
    names = exposed_metric_names(page)
    assert {"http_requests_total", "lat_seconds_bucket", "lat_seconds_count", "g"} <= names
    assert "http_requests" not in names


def test_label_matchers() -> None:
    expr = (
        'sum by (le) (rate(x_bucket{le="0.1", job=~"a|b"}[5m])) / '
        "{__name__=\"named\", outcome!~'time.*'} and on (a) y{a=`raw\\d`}"
    )
    assert label_matchers(expr) == [
        Matcher("x_bucket", "le", "=", "0.1"),
        Matcher("x_bucket", "job", "=~", "a|b"),
        Matcher("named", "outcome", "!~", "time.*"),
        Matcher("y", "a", "=", "raw\\d"),
    ]


def test_exposed_label_values() -> None:
    text = (
        "# TYPE bid_requests_total counter\n"
        'bid_requests_total{outcome="bid"} 3.0\n'
        'bid_requests_total{outcome="nobid"} 1.0\n'
        'http_requests_total{service="bidding",route="/a\\"b",status="200"} 1.0\n'
        "up 1\n"
    )
    assert exposed_label_values(text) == {
        "bid_requests_total": {"outcome": {"bid", "nobid"}},
        "http_requests_total": {
            "service": {"bidding"},
            "route": {'/a"b'},
            "status": {"200"},
        },
        "up": {},
    }


EMITTED = merge_label_values(
    exposed_label_values(
        'bid_requests_total{outcome="bid"} 1\n'
        'bid_request_duration_seconds_bucket{le="0.1"} 1\n'
        "bid_reservations_unconfirmed_total 0\n"
    ),
    code_label_values(),
)
RECORDED = {"bid:requests:rate5m": {"bid_requests_total"}}


@pytest.mark.parametrize(
    "expr",
    [
        'bid_requests_total{outcome="timeout", namespace=~".*", pod="x"}',
        'bid_requests_total{outcome=~"bid|nobid"} / bid_requests_total{outcome!="invalid"}',
        'sum(rate(http_requests_total{status=~"5..",service="bidding",method="POST"}[5m]))',
        'events_dropped_total{topic="campaign-updates"}',
        'bid_request_duration_seconds_bucket{le="0.1"}',
        'bid:requests:rate5m{outcome="nobid"} + kube_pod_labels{label_x="anything"}',
        'bid_reservations_unconfirmed_total{namespace="ads"} + ALERTS{alertstate="firing"}',
        'events_published_total{topic!=""}',
    ],
)
def test_label_values_the_services_emit_pass(expr: str) -> None:
    assert label_value_problems([Query("q", expr)], EMITTED, RECORDED) == []


@pytest.mark.parametrize(
    ("expr", "needle"),
    [
        ('bid_requests_total{outcome="timeouts"}', "'timeouts' is not among"),
        ('bid_requests_total{outcome!="invalids"}', "'invalids' is not among"),
        ('bid_requests_total{outcome=~"bid|nobids"}', "'nobids' is not among"),
        ('bid_requests_total{outcome=~"time.+s"}', "'time.+s' is not among"),
        ('bid:requests:rate5m{outcome="no-bid"}', "'no-bid' is not among"),
        ('http_requests_total{status=~"5xx"}', "'5xx' is not among"),
        ('events_published_total{topic="ad_events"}', "'ad_events' is not among"),
        ('bid_request_duration_seconds_bucket{le="0.15"}', "'0.15' is not among"),
        ('bid_requests_total{outcom="bid"}', "emit no label 'outcom'"),
        ('events_published_total{topik!=""}', "emit no label 'topik'"),
        ('events_published_total{topic=""}', "'' is not among"),
        ('bid_reservations_unconfirmed_total{result="x"}', "emit no label 'result'"),
    ],
)
def test_label_value_typos_are_caught(expr: str, needle: str) -> None:
    (problem,) = label_value_problems([Query("q", expr)], EMITTED, RECORDED)
    assert needle in problem, problem
