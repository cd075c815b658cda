"""The live monitoring stack, shared by the query checks and the end-to-end alert test:
`adplatform dev` (all services, exchange simulator on), a webhook receiver standing in
for the paging and chat webhooks, Alertmanager with the project's config pointed at
it, and Prometheus scraping the services on loopback with test copies of the rules
(windows and `for:` divided by 20, see `tests.infra.prometheus.accelerate_rules`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.infra.prometheus import (
    Acceleration,
    AlertmanagerServer,
    DevPlatform,
    PrometheusServer,
    WebhookReceiver,
    accelerate_rules,
    alertmanager_binary,
    local_alertmanager_config,
    loopback_prometheus_config,
    prometheus_binary,
    rule_files,
)

# Alertmanager's grouping timers for the live tests (production: 30s / 5m / 4h).
TEST_TIMINGS = {"group_wait": "1s", "group_interval": "2s", "repeat_interval": "1h"}
ACCELERATION = Acceleration(factor=20.0, min_range=5.0, min_for=2.0)

LIVE_REPORT: list[str] = []
"""Lines the live tests want shown at the end of the run (what fired, how fast)."""


@dataclass
class LiveStack:
    dev: DevPlatform
    prometheus: PrometheusServer
    alertmanager: AlertmanagerServer
    webhook: WebhookReceiver
    rules_dir: Path
    report: list[str] = field(default_factory=lambda: LIVE_REPORT)


@pytest.fixture(scope="session")
def live_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    prometheus_binary()
    alertmanager_binary()
    root = tmp_path_factory.mktemp("monitoring-live")
    with contextlib.ExitStack() as stack:
        webhook = WebhookReceiver().start()
        stack.callback(webhook.stop)
        am_config = local_alertmanager_config(
            {"paging": webhook.url("/paging"), "chat": webhook.url("/chat")},
            root / "secrets",
            timings=TEST_TIMINGS,
        )
        alertmanager = AlertmanagerServer(am_config, root / "alertmanager")
        stack.callback(alertmanager.stop)
        alertmanager.start()
        dev = DevPlatform(root / "dev", simulate=True, rate=50.0)
        stack.callback(dev.stop)
        dev.start()
        rules = accelerate_rules(rule_files(), root / "rules", ACCELERATION)
        config = loopback_prometheus_config(
            [dev.metrics_address], rules=rules, alertmanagers=[alertmanager.address]
        )
        prometheus = PrometheusServer(config, root / "prometheus")
        stack.callback(prometheus.stop)
        prometheus.start()
        prometheus.wait_for_series('up{job="adplatform"} == 1', timeout=30)
        yield LiveStack(dev, prometheus, alertmanager, webhook, root / "rules")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if LIVE_REPORT:
        terminalreporter.section("monitoring: live alert timings")
        for line in LIVE_REPORT:
            terminalreporter.write_line(line)
