"""The chart's monitoring objects are built from the one copy of each file in
deploy/monitoring (through the chart's files/monitoring link): rules become
PrometheusRules, dashboards ConfigMaps for the Grafana sidecar, the Alertmanager
configuration a Secret; scrape objects keep the services' own `service` label."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from tests.chart.conftest import CHART, RELEASE, Rendered, parse_manifests, run_helm, template_args

MONITORING = CHART / "files" / "monitoring"


def rule_files() -> dict[str, dict[str, object]]:
    files = {}
    for path in sorted((MONITORING / "rules").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if isinstance(doc, dict) and "groups" in doc:
            files[path.stem] = doc
    return files


def test_link_points_at_deploy_monitoring() -> None:
    assert MONITORING.is_symlink()
    assert MONITORING.resolve() == (CHART.parent.parent / "monitoring").resolve()


def test_every_rule_file_is_a_prometheus_rule(rendered: dict[str, Rendered]) -> None:
    files = rule_files()
    assert files, "deploy/monitoring/rules has no rule files"
    for name in ("default", "production"):
        rules = {obj["metadata"]["name"]: obj for obj in rendered[name].of_kind("PrometheusRule")}
        assert set(rules) == {f"{RELEASE}-{stem}" for stem in files}
        for stem, doc in files.items():
            assert rules[f"{RELEASE}-{stem}"]["spec"] == {"groups": doc["groups"]}
    production = rendered["production"].of_kind("PrometheusRule")[0]["metadata"]["labels"]
    assert production["release"] == "kube-prometheus-stack"
    assert not rendered["monitoring-off"].of_kind("PrometheusRule")


def test_dashboards_and_rules_from_placeholders(tmp_path: Path) -> None:
    """With files that exist only in this test (a copy of the chart with a placeholder
    dashboard and rule file): each is rendered once, with the configured labels."""
    chart = tmp_path / "adplatform"
    shutil.copytree(CHART, chart, symlinks=False)
    dashboards = chart / "files" / "monitoring" / "dashboards"
    dashboards.mkdir(parents=True, exist_ok=True)
    board = {"title": "Placeholder Board", "panels": [{"type": "timeseries", "targets": [
        {"expr": 'sum(rate(http_requests_total{service="bidding"}[5m]))'}]}]}  # fmt: skip
    (dashboards / "Placeholder_Board.json").write_text(json.dumps(board))
    rules = chart / "files" / "monitoring" / "rules"
    (rules / "zz-placeholder.yaml").write_text(
        "groups:\n  - name: placeholder\n    rules:\n      - alert: Placeholder\n"
        "        expr: vector(1) > 2\n        annotations:\n"
        "          summary: '{{ $labels.service }} is {{ $value }}'\n"
    )
    (rules / "zz-not-rules.yaml").write_text("rule_files: [x]\ntests: []\n")
    args = template_args(chart=chart)
    args += ["--set", "monitoring.dashboards.labels.team=ads"]
    result = run_helm(*args)
    assert result.returncode == 0, result.stderr
    objects = parse_manifests(result.stdout)
    maps = [o for o in objects if o["kind"] == "ConfigMap" and "dashboard" in o["metadata"]["name"]]
    placeholder = [
        m for m in maps if m["metadata"]["name"] == f"{RELEASE}-dashboard-placeholder-board"
    ]
    assert len(placeholder) == 1
    assert placeholder[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert placeholder[0]["metadata"]["labels"]["team"] == "ads"
    assert json.loads(placeholder[0]["data"]["Placeholder_Board.json"]) == board
    rule = [
        o
        for o in objects
        if o["kind"] == "PrometheusRule" and o["metadata"]["name"].endswith("zz-placeholder")
    ]
    assert len(rule) == 1
    annotations = rule[0]["spec"]["groups"][0]["rules"][0]["annotations"]
    assert annotations["summary"] == "{{ $labels.service }} is {{ $value }}"
    assert not [o for o in objects if o["metadata"]["name"].endswith("zz-not-rules")]


def test_real_dashboards_are_rendered(rendered: dict[str, Rendered]) -> None:
    boards = sorted((MONITORING / "dashboards").glob("*.json"))
    maps = {
        key: value
        for obj in rendered["default"].of_kind("ConfigMap")
        if obj["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
        for key, value in obj["data"].items()
    }
    assert set(maps) == {board.name for board in boards}
    for board in boards:
        assert json.loads(maps[board.name]) == json.loads(board.read_text())


def test_alertmanager_secret_in_alertmanagers_namespace() -> None:
    """mode=secret: the whole configuration for Alertmanager.spec.configSecret, rendered in
    the Alertmanager's namespace (the operator reads configSecret only from there), which
    must be given."""
    sets = {"monitoring.alertmanager.enabled": "true", "monitoring.alertmanager.mode": "secret"}
    missing = run_helm(*template_args(sets=sets))
    assert missing.returncode != 0
    assert "monitoring.alertmanager.namespace" in missing.stderr, missing.stderr
    result = run_helm(
        *template_args(
            sets={
                **sets,
                "monitoring.alertmanager.namespace": "monitoring",
                "monitoring.alertmanager.secretName": "alertmanager-adplatform",
            }
        )
    )
    assert result.returncode == 0, result.stderr
    objects = parse_manifests(result.stdout)
    (secret_obj,) = [o for o in objects if o["metadata"]["name"] == "alertmanager-adplatform"]
    assert secret_obj["kind"] == "Secret"
    assert secret_obj["metadata"]["namespace"] == "monitoring"
    assert not [o for o in objects if o["kind"] == "AlertmanagerConfig"]
    secret = secret_obj["stringData"]
    source = (MONITORING / "alertmanager" / "alertmanager.yaml").read_text()
    config = secret["alertmanager.yaml"]
    assert "/etc/alertmanager/config/*.tmpl" in config
    assert "/etc/alertmanager/templates/" not in config
    expected = source.replace("/etc/alertmanager/templates/", "/etc/alertmanager/config/").replace(
        "/etc/alertmanager/secrets/", "/etc/alertmanager/secrets/alertmanager-adplatform-receivers/"
    )
    assert yaml.safe_load(config) == yaml.safe_load(expected)
    for template in (MONITORING / "alertmanager" / "templates").glob("*.tmpl"):
        assert secret[template.name].strip() == template.read_text().strip()


def test_alertmanager_config_by_default(rendered: dict[str, Rendered]) -> None:
    """The default mode is an AlertmanagerConfig in the release namespace, nothing in
    another namespace (test_alertmanager_config checks what it routes)."""
    for name in ("production", "everything-on"):
        objects = rendered[name].objects
        assert [o["kind"] for o in objects if o["kind"] == "AlertmanagerConfig"] == [
            "AlertmanagerConfig"
        ]
        assert {o["metadata"].get("namespace") for o in objects} - {None} == {"adplatform"}
    assert not rendered["default"].of_kind("AlertmanagerConfig")


def test_scrape_objects(rendered: dict[str, Rendered]) -> None:
    default = rendered["default"]
    for monitor in default.of_kind("ServiceMonitor"):
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] == "metrics"
        assert endpoint["honorLabels"] is True
        assert endpoint["relabelings"][0]["targetLabel"] == "service"
    pods = {obj["metadata"]["name"]: obj["spec"] for obj in default.of_kind("PodMonitor")}
    assert set(pods) == {
        f"{RELEASE}-{name}" for name in ("postgres", "redis", "kafka", "kafka-exporter")
    }
    assert pods[f"{RELEASE}-postgres"]["selector"]["matchLabels"] == {
        "cnpg.io/cluster": f"{RELEASE}-pg"
    }
    assert not rendered["external-all"].of_kind("PodMonitor")


PLACEHOLDER_RUNBOOKS = "https://github.com/adplatform/adplatform/blob/main/docs/runbooks/"


def test_runbook_base_url_is_applied_to_every_alert() -> None:
    """monitoring.runbookBaseUrl replaces the rule files' placeholder base in every
    alert's runbook_url (with or without a trailing slash) and changes nothing else."""
    files = rule_files()
    base = "https://wiki.example.org/ads/runbooks"
    result = run_helm(*template_args(sets={"monitoring.runbookBaseUrl": base}))
    assert result.returncode == 0, result.stderr
    rules = {
        obj["metadata"]["name"]: obj
        for obj in parse_manifests(result.stdout)
        if obj["kind"] == "PrometheusRule"
    }
    alerts = 0
    for stem, doc in files.items():
        rendered_groups = rules[f"{RELEASE}-{stem}"]["spec"]["groups"]
        expected = json.loads(json.dumps(doc["groups"]))
        for group in expected:
            for rule in group["rules"]:
                if "alert" in rule:
                    url = rule["annotations"]["runbook_url"]
                    assert url.startswith(PLACEHOLDER_RUNBOOKS), f"{stem}: {rule['alert']} {url}"
                    rule["annotations"]["runbook_url"] = f"{base}/{rule['alert']}.md"
                    alerts += 1
        assert rendered_groups == expected, stem
    assert alerts >= 20, f"only {alerts} alerts"
    # the plain files keep the placeholder: they are what promtool and plain Prometheus load
    text = (MONITORING / "rules" / "bidding.yaml").read_text()
    assert f"{PLACEHOLDER_RUNBOOKS}HighBidLatency.md" in text
    with_slash = run_helm(*template_args(sets={"monitoring.runbookBaseUrl": f"{base}/"}))
    assert with_slash.returncode == 0, with_slash.stderr
    assert with_slash.stdout == result.stdout
