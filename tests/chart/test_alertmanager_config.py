"""The chart's AlertmanagerConfig (monitoring.alertmanager.mode=alertmanagerConfig, for
kube-prometheus-stack) routes like deploy/monitoring/alertmanager/alertmanager.yaml.

The chart translates the plain file; a check of the translation alone would only
compare the chart with itself, so the rendered object is merged into a base
configuration the way the Prometheus Operator does it (pkg/alertmanager/amcfg.go,
matcher strategy OnNamespace, the default: receivers renamed <namespace>/<name>/<receiver>,
the route a first child of the root with a namespace matcher and `continue: true`,
inhibition matchers scoped to the namespace, Secret keys resolved), checked with amtool
and run by a real Alertmanager that delivers to a local webhook. What only a cluster
shows: that the operator selects the object (kube-prometheus-stack:
alertmanagerSpec.alertmanagerConfigNamespaceSelector) and reads the Secret.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import (
    CHART,
    NAMESPACE,
    RELEASE,
    Rendered,
    parse_manifests,
    run_helm,
    template_args,
)
from tests.infra.prometheus import (
    ALERTMANAGER_DIR,
    AlertmanagerServer,
    Notification,
    WebhookReceiver,
    amtool_binary,
)

PLAIN = yaml.safe_load((ALERTMANAGER_DIR / "alertmanager.yaml").read_text())
RECEIVERS_SECRET = "alertmanager-adplatform-receivers"
TIMINGS = {"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"}
# kube-prometheus-stack's own configuration, which the operator merges the object into.
BASE: dict[str, Any] = {
    "route": {
        "receiver": "null",
        "group_by": ["namespace"],
        "routes": [{"receiver": "null", "matchers": ['alertname = "Watchdog"']}],
    },
    "receivers": [{"name": "null"}],
}


def matcher(item: dict[str, str]) -> str:
    return f'{item["name"]}{item["matchType"]}"{item["value"]}"'


def operator_merge(
    obj: dict[str, Any], secrets: dict[str, str], urls: dict[str, str]
) -> dict[str, Any]:
    """The Alertmanager configuration the operator generates from BASE and `obj`."""
    namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    spec = obj["spec"]

    def renamed(receiver: str) -> str:
        return f"{namespace}/{name}/{receiver}"

    def secret(ref: dict[str, str]) -> str:
        assert ref["name"] == RECEIVERS_SECRET, ref
        return secrets[ref["key"]]

    def route(node: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"receiver": renamed(node["receiver"])}
        for camel, snake in (
            ("groupBy", "group_by"),
            ("groupWait", "group_wait"),
            ("groupInterval", "group_interval"),
            ("repeatInterval", "repeat_interval"),
            ("continue", "continue"),
        ):
            if camel in node:
                out[snake] = node[camel]
        if node.get("matchers"):
            out["matchers"] = [matcher(m) for m in node["matchers"]]
        if node.get("routes"):
            out["routes"] = [route(child) for child in node["routes"]]
        return out

    top = route(spec["route"])
    top["matchers"] = [*top.get("matchers", []), f'namespace="{namespace}"']
    top["continue"] = True
    receivers = []
    for receiver in spec["receivers"]:
        out: dict[str, Any] = {"name": renamed(receiver["name"])}
        for hook in receiver.get("webhookConfigs", []):
            auth = hook["httpConfig"]["authorization"]
            out.setdefault("webhook_configs", []).append(
                {
                    "url": urls[receiver["name"]],
                    "send_resolved": hook["sendResolved"],
                    "max_alerts": hook["maxAlerts"],
                    "http_config": {
                        "authorization": {
                            "type": auth["type"],
                            "credentials": secret(auth["credentials"]),
                        }
                    },
                }
            )
        for slack in receiver.get("slackConfigs", []):
            fields = {k: slack[k] for k in ("title", "text", "color") if k in slack}
            out.setdefault("slack_configs", []).append(
                {
                    "api_url": secret(slack["apiURL"]),
                    "send_resolved": slack["sendResolved"],
                    **fields,
                }
            )
        receivers.append(out)
    scope = f'namespace="{namespace}"'
    inhibit = [
        {
            "source_matchers": [*map(matcher, rule["sourceMatch"]), scope],
            "target_matchers": [*map(matcher, rule["targetMatch"]), scope],
            "equal": rule.get("equal", []),
        }
        for rule in spec.get("inhibitRules", [])
    ]
    config = copy.deepcopy(BASE)
    config["route"]["routes"].insert(0, top)
    config["receivers"] += receivers
    config["inhibit_rules"] = inhibit
    return config


def retime(route: dict[str, Any]) -> None:
    for key, value in TIMINGS.items():
        if key in route or route.get("continue"):
            route[key] = value
    for child in route.get("routes", []):
        retime(child)


def the_object(rendered: dict[str, Rendered]) -> dict[str, Any]:
    return rendered["production"].one("AlertmanagerConfig", RELEASE)


def test_translation_keeps_every_route_inhibition_and_receiver(
    rendered: dict[str, Rendered],
) -> None:
    """Field by field against the plain file (camelCase, matchers as objects, the
    mounted secret files as keys of the receivers Secret)."""
    obj = the_object(rendered)
    assert obj["metadata"]["namespace"] == NAMESPACE
    spec = obj["spec"]
    plain_route = PLAIN["route"]
    assert spec["route"]["receiver"] == plain_route["receiver"]
    assert spec["route"]["groupBy"] == plain_route["group_by"]
    assert spec["route"]["groupWait"] == plain_route["group_wait"]
    assert spec["route"]["repeatInterval"] == plain_route["repeat_interval"]
    assert [
        (r["receiver"], [matcher(m).replace('"', "") for m in r["matchers"]])
        for r in spec["route"]["routes"]
    ] == [
        (r["receiver"], [m.replace(" ", "").replace('"', "") for m in r["matchers"]])
        for r in plain_route["routes"]
    ]
    ((rule, plain_rule),) = zip(spec["inhibitRules"], PLAIN["inhibit_rules"], strict=True)
    assert rule["equal"] == plain_rule["equal"]
    assert [matcher(m) for m in rule["targetMatch"]] == ['severity="warning"']
    receivers = {r["name"]: r for r in spec["receivers"]}
    assert set(receivers) == {r["name"] for r in PLAIN["receivers"]}
    (hook,) = receivers["paging"]["webhookConfigs"]
    assert hook["httpConfig"]["authorization"]["credentials"] == {
        "name": RECEIVERS_SECRET,
        "key": "paging-token",
    }
    (slack,) = receivers["chat"]["slackConfigs"]
    assert slack["apiURL"] == {"name": RECEIVERS_SECRET, "key": "chat-webhook-url"}
    assert slack["title"].endswith('{{ template "adplatform.chat.title" . }}')


def test_secret_name_and_labels_are_configurable() -> None:
    result = run_helm(
        *template_args(
            sets={
                "monitoring.alertmanager.enabled": "true",
                "monitoring.alertmanager.receiversSecret": "am-ads",
                "monitoring.alertmanager.labels.alertmanagerConfig": "adplatform",
            }
        )
    )
    assert result.returncode == 0, result.stderr
    (obj,) = [o for o in parse_manifests(result.stdout) if o["kind"] == "AlertmanagerConfig"]
    assert obj["metadata"]["labels"]["alertmanagerConfig"] == "adplatform"
    refs = [
        c["apiURL"]["name"] for r in obj["spec"]["receivers"] for c in r.get("slackConfigs", [])
    ]
    assert refs == ["am-ads"]


def test_untranslatable_config_fails_the_render(tmp_path: Path) -> None:
    """A receiver type the translation does not know is an error, not a dropped receiver."""
    chart = tmp_path / "adplatform"
    shutil.copytree(CHART, chart, symlinks=False)
    config = chart / "files" / "monitoring" / "alertmanager" / "alertmanager.yaml"
    plain = yaml.safe_load(config.read_text())
    plain["receivers"].append({"name": "mail", "email_configs": [{"to": "ops@example.org"}]})
    config.write_text(yaml.safe_dump(plain))
    result = run_helm(*template_args(chart=chart, sets={"monitoring.alertmanager.enabled": "true"}))
    assert result.returncode != 0
    assert "email_configs" in result.stderr, result.stderr


# --- merged as the operator does, run by a real Alertmanager ----------------------------


@pytest.fixture(scope="module")
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def merged(rendered: dict[str, Rendered], webhook: WebhookReceiver) -> dict[str, Any]:
    config = operator_merge(
        the_object(rendered),
        secrets={"paging-token": "test-token-paging", "chat-webhook-url": webhook.url("/chat")},
        urls={"paging": webhook.url("/paging")},
    )
    retime(config["route"]["routes"][0])
    return config


def test_merged_config_passes_amtool(merged: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "alertmanager.yaml"
    path.write_text(yaml.safe_dump(merged))
    check = subprocess.run(
        [amtool_binary(), "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    for labels, receiver in (
        (f"severity=critical service=bidding namespace={NAMESPACE}", "paging"),
        (f"severity=warning service=bidding namespace={NAMESPACE}", "chat"),
        ("severity=critical service=bidding namespace=other-team", "null"),
    ):
        route = subprocess.run(
            [
                amtool_binary(),
                "config",
                "routes",
                "test",
                "--config.file",
                str(path),
                *labels.split(),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        expected = receiver if receiver == "null" else f"{NAMESPACE}/{RELEASE}/{receiver}"
        assert route.stdout.strip() == expected, f"{labels}: {route.stdout}{route.stderr}"


@pytest.fixture(scope="module")
def alertmanager(
    merged: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AlertmanagerServer]:
    server = AlertmanagerServer(merged, tmp_path_factory.mktemp("am-operator")).start()
    yield server
    server.cleanup()


def alert(name: str, severity: str, service: str, namespace: str) -> dict[str, Any]:
    return {
        "labels": {
            "alertname": name,
            "severity": severity,
            "service": service,
            "namespace": namespace,
        },
        "annotations": {
            "summary": f"{name} on {service}",
            "description": "test alert",
            "runbook_url": f"https://example.test/{name}.md",
        },
        "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def names(note: Notification) -> set[str]:
    return {a["labels"]["alertname"] for a in note.body.get("alerts", [])}


def test_live_routing_templates_and_inhibition(
    alertmanager: AlertmanagerServer, webhook: WebhookReceiver
) -> None:
    alertmanager.post_alerts(
        [
            alert("OpCritical", "critical", "bidding", NAMESPACE),
            alert("OpWarning", "warning", "bidding", NAMESPACE),  # inhibited by OpCritical
            alert("OpOtherWarning", "warning", "campaigns", NAMESPACE),
            alert("OtherTeamCritical", "critical", "bidding", "other-team"),  # not ours
        ]
    )
    page = webhook.wait_for(
        lambda n: n.path == "/paging" and "OpCritical" in names(n), timeout=20, what="page"
    )
    assert page.headers["authorization"] == "Bearer test-token-paging"
    assert page.body["groupLabels"] == {"alertname": "OpCritical", "service": "bidding"}
    chat = webhook.wait_for(
        lambda n: (
            n.path == "/chat"
            and any("OpOtherWarning" in a.get("title", "") for a in n.body.get("attachments", []))
        ),
        timeout=20,
        what="chat message",
    )
    # the templates carried inline render exactly as the plain config's template files
    (attachment,) = chat.body["attachments"]
    assert attachment["title"] == "[FIRING:1] OpOtherWarning (campaigns)"
    assert attachment["text"].startswith(":red_circle: *OpOtherWarning on campaigns* [adplatform]")
    assert "Runbook: https://example.test/OpOtherWarning.md" in attachment["text"]
    assert attachment["color"] == "warning"
    time.sleep(3)  # several group intervals
    delivered = {name for note in webhook.received() for name in names(note)}
    delivered |= {
        a.get("title", "") for note in webhook.received() for a in note.body.get("attachments", [])
    }
    assert not any("OpWarning " in d or d == "OpWarning" for d in delivered), delivered
    assert not any("OtherTeamCritical" in d for d in delivered), delivered
    held = [a for a in alertmanager.alerts() if a["labels"]["alertname"] == "OpWarning"]
    assert held
    assert held[0]["status"]["inhibitedBy"], held
