"""End to end: a fault in the real bidder fires HighErrorRate and HighBidLatency in a
real Prometheus, Alertmanager pages the (local) paging webhook, and removing the fault
sends the resolved notifications.

The fault comes from the bidder's test-only `PUT /internal/faults` (ENVIRONMENT=test):
half the bid requests fail with 500 and every one waits 300 ms. The simulator of
`adplatform dev` keeps sending traffic. The rules are the production files with
every range, offset and `for:` divided by 20 (HighErrorRate: 5m -> 15s,
HighBidLatency: 2m -> 6s) and Alertmanager groups with 1s/2s timers, so the whole
cycle takes seconds; the measured times are printed at the end of the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.infra.common import PROJECT_ROOT
from tests.infra.prometheus import Notification
from tests.monitoring.conftest import LiveStack

ALERTS = ("HighErrorRate", "HighBidLatency")
FIRE_TIMEOUT = 90.0
RESOLVE_TIMEOUT = 90.0

pytestmark = pytest.mark.slow


def alerts_named(note: Notification, name: str) -> list[dict[str, Any]]:
    return [a for a in note.body.get("alerts", []) if a["labels"].get("alertname") == name]


def page(name: str, status: str, *, after: float) -> Callable[[Notification], bool]:
    """Matches a paging notification about `name` with `status`, received after `after`."""

    def matches(note: Notification) -> bool:
        return (
            note.path == "/paging"
            and note.received_at > after
            and note.status == status
            and bool(alerts_named(note, name))
        )

    return matches


def test_injected_fault_pages_and_resolves(live_stack: LiveStack) -> None:
    prometheus, webhook, dev = live_stack.prometheus, live_stack.webhook, live_stack.dev
    # Steady state first: bid traffic flows and neither alert fires.
    prometheus.wait_for_series("sum(rate(bid_requests_total[15s])) > 1", timeout=60)
    firing_before = {a["labels"]["alertname"] for a in prometheus.alerts()}
    assert "HighErrorRate" not in firing_before

    injected = time.monotonic()
    dev.set_faults(error_rate=0.5, delay_ms=300)
    try:
        fired: dict[str, float] = {}
        for name in ALERTS:
            note = webhook.wait_for(
                page(name, "firing", after=injected),
                timeout=FIRE_TIMEOUT,
                what=f"{name} page",
            )
            fired[name] = note.received_at - injected
            (alert,) = alerts_named(note, name)
            assert alert["labels"]["service"] == "bidding"
            assert alert["labels"]["severity"] == "critical"
            assert note.headers["authorization"] == "Bearer test-token-paging"
            runbook = alert["annotations"]["runbook_url"]
            assert runbook.endswith(f"/docs/runbooks/{name}.md")
            assert (PROJECT_ROOT / "docs" / "runbooks" / f"{name}.md").is_file()
            assert alert["annotations"]["summary"]
    finally:
        cleared = time.monotonic()
        dev.set_faults(error_rate=0.0, delay_ms=0)

    resolved: dict[str, float] = {}
    for name in ALERTS:
        note = webhook.wait_for(
            page(name, "resolved", after=cleared),
            timeout=RESOLVE_TIMEOUT,
            what=f"{name} resolved",
        )
        resolved[name] = note.received_at - cleared
        assert all(a["status"] == "resolved" for a in alerts_named(note, name))

    others = sorted(
        {
            f"{a['labels']['alertname']} ({n.path.strip('/')}, {a['status']})"
            for n in webhook.received()
            for a in n.body.get("alerts", [])
            if a["labels"]["alertname"] not in ALERTS
        }
    )
    for name in ALERTS:
        live_stack.report.append(
            f"{name}: paged {fired[name]:.1f}s after the fault was injected, "
            f"resolved notification {resolved[name]:.1f}s after it was removed"
        )
    live_stack.report.append(
        "other notifications during the run: " + (", ".join(others) if others else "none")
    )
