"""The Alertmanager config: amtool's checks, its routing tree, its templates, and a
live Alertmanager delivering to a local webhook receiver (routing by severity,
grouping by alertname and service, inhibition of warnings by a critical)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.prometheus import (
    ALERTMANAGER_DIR,
    AlertmanagerServer,
    Notification,
    WebhookReceiver,
    amtool_binary,
    local_alertmanager_config,
)

CONFIG = ALERTMANAGER_DIR / "alertmanager.yaml"
TIMINGS = {"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"}


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [amtool_binary(), *args], capture_output=True, text=True, timeout=30, check=False
    )


def test_amtool_check_config() -> None:
    result = amtool("check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_amtool_check_config_with_templates(tmp_path: Path) -> None:
    """The local copy points at the repository's templates, so they are parsed too."""
    config = local_alertmanager_config({"paging": "http://127.0.0.1:1/p"}, tmp_path / "s")
    path = tmp_path / "alertmanager.yaml"
    path.write_text(yaml.safe_dump(config))
    result = amtool("check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 templates" in result.stdout


def test_no_secret_is_committed() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            auth = webhook.get("http_config", {}).get("authorization", {})
            assert "credentials" not in auth, "bearer token must come from credentials_file"
            assert auth.get("credentials_file", "").startswith("/etc/alertmanager/secrets/")
        for slack in receiver.get("slack_configs", []):
            assert "api_url" not in slack, "chat webhook URL must come from api_url_file"
            assert slack["api_url_file"].startswith("/etc/alertmanager/secrets/")
    assert "global" not in config or "slack_api_url" not in config["global"]


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        ({"alertname": "HighErrorRate", "severity": "critical", "service": "bidding"}, "paging"),
        ({"alertname": "RedisDown", "severity": "critical", "service": "redis"}, "paging"),
        ({"alertname": "BidTimeoutsHigh", "severity": "warning", "service": "bidding"}, "chat"),
        ({"alertname": "Watchdog", "severity": "none"}, "chat"),
        ({"alertname": "SomethingWithoutSeverity"}, "chat"),
    ],
)
def test_routing_tree(labels: dict[str, str], receiver: str) -> None:
    result = amtool(
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG}",
        f"--verify.receivers={receiver}",
        *(f"{k}={v}" for k, v in labels.items()),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_grouping_and_inhibition_settings() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    assert config["route"]["group_by"] == ["alertname", "service"]
    (rule,) = config["inhibit_rules"]
    assert rule["source_matchers"] == ['severity = "critical"']
    assert rule["target_matchers"] == ['severity = "warning"']
    assert "service" in rule["equal"]


def render(template: str, data: dict[str, Any], tmp_path: Path) -> str:
    data_file = tmp_path / "data.json"
    data_file.write_text(json.dumps(data))
    result = amtool(
        "template",
        "render",
        f"--template.glob={ALERTMANAGER_DIR / 'templates' / '*.tmpl'}",
        f"--template.text={{{{ template {json.dumps(template)} . }}}}",
        f"--template.data={data_file}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def test_chat_templates(tmp_path: Path) -> None:
    alert: dict[str, Any] = {
        "status": "firing",
        "labels": {"alertname": "BidTimeoutsHigh", "service": "bidding", "namespace": "ads"},
        "annotations": {
            "summary": "3% of bid requests time out",
            "description": "For 5 minutes more than 2% ...",
            "runbook_url": "https://example.test/BidTimeoutsHigh.md",
        },
    }
    data = {
        "status": "firing",
        "alerts": [alert, {**alert, "labels": {**alert["labels"], "namespace": "staging"}}],
        "commonLabels": {"alertname": "BidTimeoutsHigh", "service": "bidding"},
    }
    assert render("adplatform.chat.title", data, tmp_path) == (
        "[FIRING:2] BidTimeoutsHigh (bidding)"
    )
    text = render("adplatform.chat.text", data, tmp_path)
    assert text.count("*3% of bid requests time out*") == 2
    assert "[ads]" in text
    assert "[staging]" in text
    assert "Runbook: https://example.test/BidTimeoutsHigh.md" in text
    resolved = {**data, "status": "resolved", "alerts": [{**alert, "status": "resolved"}]}
    assert render("adplatform.chat.title", resolved, tmp_path).startswith("[RESOLVED]")
    assert render("adplatform.chat.color", resolved, tmp_path) == "good"


# --- a live Alertmanager ---------------------------------------------------------------


@pytest.fixture(scope="module")
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def alertmanager(
    webhook: WebhookReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AlertmanagerServer]:
    root = tmp_path_factory.mktemp("alertmanager")
    config = local_alertmanager_config(
        {"paging": webhook.url("/paging"), "chat": webhook.url("/chat")},
        root / "secrets",
        timings=TIMINGS,
    )
    server = AlertmanagerServer(config, root / "server").start()
    yield server
    server.cleanup()


def alert(name: str, severity: str, service: str, **labels: str) -> dict[str, Any]:
    return {
        "labels": {"alertname": name, "severity": severity, "service": service, **labels},
        "annotations": {
            "summary": f"{name} on {service}",
            "description": "test alert",
            "runbook_url": f"https://example.test/{name}.md",
        },
        "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def names_in(note: Notification) -> set[str]:
    return {a["labels"]["alertname"] for a in note.body["alerts"]}


def test_live_routing_grouping_and_inhibition(
    alertmanager: AlertmanagerServer, webhook: WebhookReceiver
) -> None:
    # Two pods of one critical alert: one page, grouped by alertname and service.
    alertmanager.post_alerts(
        [
            alert("LiveCritical", "critical", "bidding", namespace="ads", pod="bidding-1"),
            alert("LiveCritical", "critical", "bidding", namespace="ads", pod="bidding-2"),
        ]
    )
    page = webhook.wait_for(
        lambda n: n.path == "/paging" and "LiveCritical" in names_in(n), timeout=20, what="page"
    )
    assert page.body["groupLabels"] == {"alertname": "LiveCritical", "service": "bidding"}
    assert len(page.body["alerts"]) == 2
    assert page.headers["authorization"] == "Bearer test-token-paging"

    # While it fires, a warning for the same service and namespace is inhibited; one
    # for another namespace, and one for another service, go to chat.
    alertmanager.post_alerts(
        [
            alert("LiveWarning", "warning", "bidding", namespace="ads"),
            alert("LiveWarning", "warning", "bidding", namespace="staging"),
            alert("LiveOtherWarning", "warning", "campaigns", namespace="ads"),
        ]
    )
    chat = webhook.wait_for(
        lambda n: n.path == "/chat" and "LiveOtherWarning" in chat_text(n),
        timeout=20,
        what="chat message for another service",
    )
    (attachment,) = chat.body["attachments"]  # a Slack-compatible message
    assert attachment["title"] == "[FIRING:1] LiveOtherWarning (campaigns)"
    assert "Runbook: https://example.test/LiveOtherWarning.md" in attachment["text"]
    webhook.wait_for(
        lambda n: n.path == "/chat" and "LiveWarning on bidding* [staging]" in chat_text(n),
        timeout=20,
        what="warning from another namespace",
    )

    def inhibited() -> list[dict[str, Any]]:
        return [
            a
            for a in alertmanager.alerts()
            if a["labels"]["alertname"] == "LiveWarning" and a["status"]["inhibitedBy"]
        ]

    deadline = time.monotonic() + 10
    while not inhibited() and time.monotonic() < deadline:
        time.sleep(0.2)
    (held,) = inhibited()
    assert held["labels"]["namespace"] == "ads"
    assert held["status"]["state"] == "suppressed"
    time.sleep(3)  # several group intervals: it must still not have been sent
    sent = [
        n
        for n in webhook.received()
        if n.path == "/chat" and "LiveWarning on bidding* [ads]" in chat_text(n)
    ]
    assert not sent, "an inhibited warning was delivered"


def chat_text(note: Notification) -> str:
    """The rendered title and text of a Slack-compatible message."""
    return "\n".join(
        f"{a.get('title', '')}\n{a.get('text', '')}" for a in note.body.get("attachments", [])
    )
