#!/usr/bin/env python3
"""Writes the Grafana dashboards of deploy/monitoring/dashboards/ from the panel lists
below: five dashboards with one layout, one datasource variable and one namespace
variable, instead of five hand-edited JSON files drifting apart.

    .venv/bin/python scripts/build-dashboards.py          # rewrite the JSON files
    .venv/bin/python scripts/build-dashboards.py --check  # exit 1 if they are stale

tests/monitoring checks the committed files are what this script writes, and runs
every query of every panel against a live Prometheus.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "deploy" / "monitoring" / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
NS = 'namespace=~"$namespace"'
RATE = "$__rate_interval"


@dataclass
class Panel:
    title: str
    queries: list[tuple[str, str]]  # (expr, legend)
    unit: str = "short"
    kind: str = "timeseries"  # timeseries | stat
    width: int = 12
    description: str = ""
    thresholds: list[tuple[float, str]] = field(default_factory=list)
    max: float | None = None


@dataclass
class Row:
    title: str
    panels: list[Panel]


def q(expr: str, legend: str = "") -> tuple[str, str]:
    return (" ".join(expr.split()), legend)


def quantiles(metric: str, by: str, selector: str = NS) -> list[tuple[str, str]]:
    """p50/p95/p99 of a histogram, summed over replicas before the quantile."""
    group = f"{by}, le" if by else "le"
    return [
        q(
            f"histogram_quantile({p}, sum by ({group}) "
            f"(rate({metric}_bucket{{{selector}}}[{RATE}])))",
            f"p{round(p * 100)}" + (f" {{{{{by}}}}}" if by else ""),
        )
        for p in (0.5, 0.95, 0.99)
    ]


DASHBOARDS: dict[str, tuple[str, str, list[Row]]] = {
    "adplatform-overview": (
        "adplatform / Platform overview",
        "Health of the whole platform: services, traffic, errors, latency, SLOs, events.",
        [
            Row(
                "Status",
                [
                    Panel(
                        "Processes per service",
                        [q(f"count by (service) (adplatform_service_info{{{NS}}})", "{{service}}")],
                        kind="stat",
                        width=8,
                        description="Processes reporting metrics (adplatform_service_info).",
                    ),
                    Panel(
                        "Critical alerts firing",
                        [
                            q(
                                f'count(ALERTS{{alertstate="firing",severity="critical",{NS}}})'
                                " or vector(0)",
                                "critical",
                            )
                        ],
                        kind="stat",
                        width=8,
                        thresholds=[(0, "green"), (1, "red")],
                    ),
                    Panel(
                        "Warnings firing",
                        [
                            q(
                                f'count(ALERTS{{alertstate="firing",severity="warning",{NS}}})'
                                " or vector(0)",
                                "warning",
                            )
                        ],
                        kind="stat",
                        width=8,
                        thresholds=[(0, "green"), (1, "orange")],
                    ),
                ],
            ),
            Row(
                "HTTP",
                [
                    Panel(
                        "Requests per second by service",
                        [
                            q(
                                f"sum by (service) (rate(http_requests_total{{{NS}}}[{RATE}]))",
                                "{{service}}",
                            )
                        ],
                        unit="reqps",
                    ),
                    Panel(
                        "5xx share by service",
                        [
                            q(
                                f'sum by (service) (rate(http_requests_total{{status=~"5..",{NS}}}'
                                f"[{RATE}])) / sum by (service) (rate(http_requests_total{{{NS}}}"
                                f"[{RATE}]))",
                                "{{service}}",
                            )
                        ],
                        unit="percentunit",
                        description="HighErrorRate fires above 5% for 5 minutes.",
                        thresholds=[(0, "green"), (0.05, "red")],
                    ),
                    Panel(
                        "p95 request duration by service",
                        [
                            q(
                                "histogram_quantile(0.95, sum by (service, le) "
                                f"(rate(http_request_duration_seconds_bucket{{{NS}}}[{RATE}])))",
                                "{{service}}",
                            )
                        ],
                        unit="s",
                        width=24,
                    ),
                ],
            ),
            Row(
                "Bidding and SLOs",
                [
                    Panel(
                        "Bid requests per second by outcome",
                        [
                            q(
                                f"sum by (outcome) (rate(bid_requests_total{{{NS}}}[{RATE}]))",
                                "{{outcome}}",
                            )
                        ],
                        unit="reqps",
                    ),
                    Panel(
                        "Error budget burn rate (1h)",
                        [
                            q(
                                f"bid:availability_error_ratio:rate1h{{{NS}}} / 0.001",
                                "availability {{namespace}}",
                            ),
                            q(
                                f"bid:latency_slow_ratio:rate1h{{{NS}}} / 0.01",
                                "latency {{namespace}}",
                            ),
                        ],
                        description="1 spends the 30-day budget in 30 days; the page "
                        "fires at 14.4 (1h) or 6 (6h).",
                        thresholds=[(0, "green"), (6, "orange"), (14.4, "red")],
                    ),
                ],
            ),
            Row(
                "Events",
                [
                    Panel(
                        "Events published per second by topic",
                        [
                            q(
                                f"sum by (topic) (rate(events_published_total{{{NS}}}[{RATE}]))",
                                "{{topic}}",
                            )
                        ],
                        unit="ops",
                    ),
                    Panel(
                        "Publish failures and drops per second",
                        [
                            q(
                                f"sum by (topic) (rate(events_publish_failures_total{{{NS}}}"
                                f"[{RATE}]))",
                                "failed {{topic}}",
                            ),
                            q(
                                f"sum by (topic) (rate(events_dropped_total{{{NS}}}[{RATE}]))",
                                "dropped {{topic}}",
                            ),
                        ],
                        unit="ops",
                    ),
                ],
            ),
        ],
    ),
    "adplatform-bidding": (
        "adplatform / Bidding",
        "The OpenRTB bidder: outcomes, latency, SLO burn, budgets, index, tracking.",
        [
            Row(
                "Traffic and latency",
                [
                    Panel(
                        "Bid requests per second by outcome",
                        [
                            q(
                                f"sum by (outcome) (rate(bid_requests_total{{{NS}}}[{RATE}]))",
                                "{{outcome}}",
                            )
                        ],
                        unit="reqps",
                    ),
                    Panel(
                        "Bid request duration",
                        quantiles("bid_request_duration_seconds", ""),
                        unit="s",
                        description="HighBidLatency fires when p95 stays above 100 ms "
                        "for 2 minutes.",
                        thresholds=[(0, "green"), (0.1, "red")],
                    ),
                    Panel(
                        "Timeout and no-bid shares",
                        [
                            q(f"bid:timeout_share:ratio_rate5m{{{NS}}}", "timeout {{namespace}}"),
                            q(f"bid:nobid_share:ratio_rate5m{{{NS}}}", "no-bid {{namespace}}"),
                        ],
                        unit="percentunit",
                        max=1,
                    ),
                    Panel(
                        "Share of bids answered within 100 ms (SLO 99%)",
                        [
                            q(
                                f'sum(rate(bid_request_duration_seconds_bucket{{le="0.1",{NS}}}'
                                f"[{RATE}])) / sum(rate(bid_request_duration_seconds_count"
                                f"{{{NS}}}[{RATE}]))",
                                "within 100 ms",
                            )
                        ],
                        unit="percentunit",
                        max=1,
                    ),
                ],
            ),
            Row(
                "SLO burn rates",
                [
                    Panel(
                        "Availability burn rate (budget 0.1%)",
                        [
                            q(f"bid:availability_error_ratio:rate{w}{{{NS}}} / 0.001", w)
                            for w in ("5m", "1h", "6h", "3d")
                        ],
                        thresholds=[(0, "green"), (6, "orange"), (14.4, "red")],
                    ),
                    Panel(
                        "Latency burn rate (budget 1%)",
                        [
                            q(f"bid:latency_slow_ratio:rate{w}{{{NS}}} / 0.01", w)
                            for w in ("5m", "1h", "6h", "3d")
                        ],
                        thresholds=[(0, "green"), (6, "orange"), (14.4, "red")],
                    ),
                ],
            ),
            Row(
                "Budgets and tracking",
                [
                    Panel(
                        "Settlements and expired reservations per second",
                        [
                            q(
                                f"sum by (result) (rate(bid_settlements_total{{{NS}}}[{RATE}]))",
                                "settlement {{result}}",
                            ),
                            q(
                                f"sum(rate(bid_reservations_expired_total{{{NS}}}[{RATE}]))",
                                "reservation expired",
                            ),
                        ],
                        unit="ops",
                    ),
                    Panel(
                        "Tracking notices per second",
                        [
                            q(
                                "sum by (type, result) "
                                f"(rate(tracking_events_total{{{NS}}}[{RATE}]))",
                                "{{type}} {{result}}",
                            )
                        ],
                        unit="ops",
                    ),
                    Panel(
                        "Unconfirmed reservations per valid bid request",
                        [
                            q(
                                "sum by (namespace) (rate(bid_reservations_unconfirmed_total"
                                f"{{{NS}}}[{RATE}])) / sum by (namespace) "
                                f'(rate(bid_requests_total{{outcome!="invalid",{NS}}}[{RATE}]))',
                                "unconfirmed {{namespace}}",
                            ),
                        ],
                        unit="percentunit",
                        width=24,
                        description="Budget reservations Redis could not confirm on "
                        "REDIS_WAIT_REPLICAS replicas in time (a replica down or lagging, a "
                        "shard not answering): each is a no-bid. BidReservationsUnconfirmed "
                        "warns above 1% for 10 minutes.",
                        thresholds=[(0, "green"), (0.01, "orange")],
                    ),
                    Panel(
                        "Budget store reachable",
                        [q(f"bidder_budget_store_up{{{NS}}}", "{{pod}} {{instance}}")],
                        kind="stat",
                        width=8,
                        thresholds=[(0, "red"), (1, "green")],
                    ),
                    Panel(
                        "Campaigns in the targeting index",
                        [q(f"bidder_index_campaigns{{{NS}}}", "{{pod}} {{instance}}")],
                        width=8,
                    ),
                    Panel(
                        "Index age (since the last applied update)",
                        [
                            q(
                                f"time() - bidder_index_last_update_timestamp_seconds{{{NS}}}",
                                "{{pod}} {{instance}}",
                            )
                        ],
                        unit="s",
                        width=8,
                        description="Grows on an idle platform; BidderIndexStale compares "
                        "it with the last campaign update instead.",
                    ),
                ],
            ),
        ],
    ),
    "adplatform-campaigns": (
        "adplatform / Campaigns API",
        "Campaign-service: its REST API and the outbox feeding campaign-updates.",
        [
            Row(
                "API",
                [
                    Panel(
                        "Requests per second by route",
                        [
                            q(
                                "sum by (method, route) (rate(http_requests_total"
                                f'{{service="campaigns",{NS}}}[{RATE}]))',
                                "{{method}} {{route}}",
                            )
                        ],
                        unit="reqps",
                        width=24,
                    ),
                    Panel(
                        "Errors per second by status",
                        [
                            q(
                                "sum by (status) (rate(http_requests_total"
                                f'{{service="campaigns",status=~"[45]..",{NS}}}[{RATE}]))',
                                "{{status}}",
                            )
                        ],
                        unit="reqps",
                    ),
                    Panel(
                        "p95 duration by route",
                        [
                            q(
                                "histogram_quantile(0.95, sum by (route, le) "
                                "(rate(http_request_duration_seconds_bucket"
                                f'{{service="campaigns",{NS}}}[{RATE}])))',
                                "{{route}}",
                            )
                        ],
                        unit="s",
                    ),
                ],
            ),
            Row(
                "Outbox and campaign-updates",
                [
                    Panel(
                        "Outbox rows pending",
                        [q(f"max(outbox_pending_rows{{{NS}}})", "pending")],
                        width=8,
                    ),
                    Panel(
                        "Oldest pending row age",
                        [q(f"max(outbox_oldest_pending_age_seconds{{{NS}}})", "age")],
                        unit="s",
                        width=8,
                        thresholds=[(0, "green"), (300, "red")],
                    ),
                    Panel(
                        "campaign-updates published per second",
                        [
                            q(
                                "sum(rate(events_published_total"
                                f'{{topic="campaign-updates",{NS}}}[{RATE}]))',
                                "published",
                            ),
                            q(
                                "sum(rate(events_publish_failures_total"
                                f'{{topic="campaign-updates",{NS}}}[{RATE}]))',
                                "failed",
                            ),
                        ],
                        unit="ops",
                        width=8,
                    ),
                ],
            ),
        ],
    ),
    "adplatform-analytics": (
        "adplatform / Analytics pipeline",
        "Analytics-service: ad-events consumption, lag, aggregation delay and batches.",
        [
            Row(
                "Consumption",
                [
                    Panel(
                        "ad-events consumed and published per second",
                        [
                            q(
                                "sum(rate(events_consumed_total"
                                f'{{topic="ad-events",{NS}}}[{RATE}]))',
                                "consumed",
                            ),
                            q(
                                "sum(rate(events_published_total"
                                f'{{topic="ad-events",{NS}}}[{RATE}]))',
                                "published",
                            ),
                        ],
                        unit="ops",
                    ),
                    Panel(
                        "Consumer lag by partition",
                        [
                            q(
                                "sum by (group, partition) (event_consumer_lag_messages"
                                f'{{topic="ad-events",{NS}}})',
                                "{{group}} p{{partition}}",
                            )
                        ],
                        description="AnalyticsConsumerLagHigh fires above 10000 for 10 minutes.",
                    ),
                    Panel(
                        "Duplicate events ignored per second",
                        [
                            q(
                                f"sum(rate(analytics_duplicate_events_total{{{NS}}}[{RATE}]))",
                                "duplicates",
                            )
                        ],
                        unit="ops",
                        width=8,
                    ),
                    Panel(
                        "Time since the last commit",
                        [
                            q(
                                f"time() - max(analytics_last_commit_timestamp_seconds{{{NS}}})",
                                "since last commit",
                            )
                        ],
                        unit="s",
                        width=8,
                    ),
                    Panel(
                        "Batch duration",
                        quantiles("analytics_batch_duration_seconds", ""),
                        unit="s",
                        width=8,
                    ),
                ],
            ),
            Row(
                "Freshness",
                [
                    Panel(
                        "Event-to-aggregate delay",
                        quantiles("analytics_event_lag_seconds", ""),
                        unit="s",
                        width=24,
                        description="AnalyticsAggregationDelayed fires when p95 stays "
                        "above 2 minutes for 10 minutes.",
                        thresholds=[(0, "green"), (120, "red")],
                    ),
                ],
            ),
        ],
    ),
    "adplatform-data-tier": (
        "adplatform / Data tier",
        "PostgreSQL (CloudNativePG exporter), Redis Cluster (redis_exporter) and Kafka "
        "(kafka-exporter), and how the services see them.",
        [
            Row(
                "PostgreSQL",
                [
                    Panel(
                        "Synchronous standbys (primary)",
                        [
                            q(
                                "max by (pod, value) (cnpg_collector_sync_replicas"
                                f'{{value=~"observed|expected",{NS}}}) and on (pod) '
                                f"(cnpg_pg_replication_in_recovery{{{NS}}} == 0)",
                                "{{pod}} {{value}}",
                            )
                        ],
                        width=8,
                    ),
                    Panel(
                        "Streaming replicas",
                        [
                            q(
                                f"max by (pod) (cnpg_pg_replication_streaming_replicas{{{NS}}})",
                                "{{pod}}",
                            )
                        ],
                        width=8,
                    ),
                    Panel(
                        "Replication lag",
                        [q(f"max by (pod) (cnpg_pg_replication_lag{{{NS}}})", "{{pod}}")],
                        unit="s",
                        width=8,
                        thresholds=[(0, "green"), (30, "red")],
                    ),
                ],
            ),
            Row(
                "Redis",
                [
                    Panel(
                        "Nodes up and cluster state ok",
                        [
                            q(f"sum(redis_up{{{NS}}})", "up"),
                            q(f"sum(redis_cluster_state{{{NS}}})", "cluster state ok"),
                        ],
                        width=8,
                    ),
                    Panel(
                        "Commands per second",
                        [
                            q(
                                "sum by (pod) (rate(redis_commands_processed_total"
                                f"{{{NS}}}[{RATE}]))",
                                "{{pod}}",
                            )
                        ],
                        unit="ops",
                        width=8,
                    ),
                    Panel(
                        "Memory used",
                        [q(f"max by (pod) (redis_memory_used_bytes{{{NS}}})", "{{pod}}")],
                        unit="bytes",
                        width=8,
                    ),
                ],
            ),
            Row(
                "Kafka",
                [
                    Panel(
                        "Under-replicated partitions by topic",
                        [
                            q(
                                "sum by (topic) "
                                "(kafka_topic_partition_under_replicated_partition"
                                f"{{{NS}}})",
                                "{{topic}}",
                            )
                        ],
                        width=8,
                        thresholds=[(0, "green"), (1, "red")],
                    ),
                    Panel(
                        "Brokers",
                        [q(f"max(kafka_brokers{{{NS}}})", "brokers")],
                        kind="stat",
                        width=8,
                    ),
                    Panel(
                        "Consumer group lag (broker view)",
                        [
                            q(
                                f"sum by (consumergroup, topic) (kafka_consumergroup_lag{{{NS}}})",
                                "{{consumergroup}} {{topic}}",
                            )
                        ],
                        width=8,
                    ),
                ],
            ),
            Row(
                "As the services see it",
                [
                    Panel(
                        "Bidders reaching Redis",
                        [q(f"sum(bidder_budget_store_up{{{NS}}})", "reachable")],
                        kind="stat",
                    ),
                    Panel(
                        "Event publish failures per second",
                        [
                            q(
                                "sum by (topic) (rate(events_publish_failures_total"
                                f"{{{NS}}}[{RATE}]))",
                                "{{topic}}",
                            )
                        ],
                        unit="ops",
                    ),
                ],
            ),
        ],
    ),
}


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    height = 5 if panel.kind == "stat" else 8
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.max is not None:
        defaults["max"] = panel.max
        defaults["min"] = 0
    if panel.thresholds:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [
                {"color": color, "value": None if i == 0 else value}
                for i, (value, color) in enumerate(panel.thresholds)
            ],
        }
    body: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "datasource": DATASOURCE,
        "gridPos": {"h": height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}}
        if panel.kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
        "targets": [
            {
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
                "refId": chr(ord("A") + index),
            }
            for index, (expr, legend) in enumerate(panel.queries)
        ],
    }
    if panel.description:
        body["description"] = panel.description
    return body


def dashboard(uid: str, title: str, description: str, rows: list[Row]) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for row in rows:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        x = 0
        row_height = 0
        for panel in row.panels:
            if x + panel.width > 24:
                y += row_height
                x, row_height = 0, 0
            panels.append(_panel_json(panel, next_id, x, y))
            next_id += 1
            x += panel.width
            row_height = max(row_height, 5 if panel.kind == "stat" else 8)
        y += row_height
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["adplatform"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "links": [
            {
                "type": "dashboards",
                "tags": ["adplatform"],
                "asDropdown": True,
                "title": "adplatform",
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "annotations": {"list": []},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                },
                {
                    "name": "namespace",
                    "label": "Namespace",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": {
                        "query": "label_values(adplatform_service_info, namespace)",
                        "refId": "namespace",
                    },
                    "definition": "label_values(adplatform_service_info, namespace)",
                    "includeAll": True,
                    "allValue": ".*",
                    "multi": True,
                    "current": {"text": "All", "value": "$__all"},
                    "refresh": 2,
                    "sort": 1,
                    "hide": 0,
                },
            ]
        },
        "panels": panels,
    }


def render() -> dict[Path, str]:
    return {
        OUT / f"{uid.removeprefix('adplatform-')}.json": json.dumps(
            dashboard(uid, title, description, rows), indent=2
        )
        + "\n"
        for uid, (title, description, rows) in DASHBOARDS.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the files are stale")
    args = parser.parse_args()
    stale = []
    for path, text in render().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("stale dashboards (run scripts/build-dashboards.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
