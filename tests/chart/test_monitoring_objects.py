"""The chart's monitoring objects are built from the one copy of each file in
deploy/monitoring (through the chart's files/monitoring link): rules become
PrometheusRules, dashboards ConfigMaps for the Grafana sidecar, the Alertmanager
configuration a Secret; scrape objects keep the services' own `service` label."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


# --- scope of the alerts and plain-Prometheus scraping of the data tier ------------------


def ksm_label(key: str) -> str:
    """The name kube-state-metrics gives a Kubernetes label in kube_*_labels."""
    return "label_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)


def rule_expr(stem: str, name: str) -> str:
    groups: list[dict[str, Any]] = rule_files()[stem]["groups"]  # type: ignore[assignment]
    for group in groups:
        for rule in group["rules"]:
            if name in (rule.get("record"), rule.get("alert")):
                return str(rule["expr"])
    raise AssertionError(f"{stem}.yaml has no rule {name}")


def pod_scope_alternatives() -> list[dict[str, str]]:
    """The label sets that make a pod adplatform's in the rules: one per kube_pod_labels
    selector of namespace_pod:adplatform_pod:info."""
    expr = rule_expr("platform", "namespace_pod:adplatform_pod:info")
    alternatives = []
    for selector in re.findall(r"kube_pod_labels\{([^}]*)\}", expr):
        alternatives.append(dict(re.findall(r'(\w+)="([^"]*)"', selector)))
    assert alternatives, expr
    return alternatives


def in_pod_scope(labels: dict[str, str]) -> bool:
    exported = {ksm_label(key): value for key, value in labels.items()}
    return any(
        all(exported.get(name) == value for name, value in alternative.items())
        for alternative in pod_scope_alternatives()
    )


def strimzi_pod_templates(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        if obj["kind"] == "KafkaNodePool":
            yield f"KafkaNodePool/{obj['metadata']['name']}", obj["spec"]["template"]["pod"]
        elif obj["kind"] == "Kafka":
            pod = obj["spec"]["kafkaExporter"]["template"]["pod"]
            yield f"Kafka/{obj['metadata']['name']} kafkaExporter", pod


def test_every_pod_of_the_chart_is_in_the_alerts_scope(rendered: dict[str, Rendered]) -> None:
    """PodCrashLooping and the data-tier alerts only look at pods that kube_pod_labels
    shows as adplatform's (namespace_pod:adplatform_pod:info): every pod the chart, the
    CloudNativePG Cluster and the Strimzi node pools and Kafka Exporter create is one."""
    default = rendered["default"]
    outside = [name for name, meta, _ in default.pod_specs() if not in_pod_scope(meta["labels"])]
    (cluster,) = default.of_kind("Cluster")
    if not in_pod_scope(cluster["spec"]["inheritedMetadata"]["labels"]):
        outside.append(f"Cluster/{cluster['metadata']['name']}")
    templates = list(strimzi_pod_templates(default.objects))
    assert len(templates) == 3, templates  # controllers, brokers, the Kafka Exporter
    outside += [name for name, pod in templates if not in_pod_scope(pod["metadata"]["labels"])]
    assert not outside, f"pods the alerts would not look at: {outside}"
    # and the check is not vacuous: another app's pod is outside
    assert not in_pod_scope(
        {"app.kubernetes.io/name": "checkout", "app.kubernetes.io/part-of": "shop"}
    )


def test_every_deployment_is_in_no_ready_pods_scope(rendered: dict[str, Rendered]) -> None:
    """NoReadyPods selects kube_deployment_labels on part-of and takes the service from
    the component: every service Deployment carries both."""
    expr = rule_expr("platform", "NoReadyPods")
    (selector,) = re.findall(r"kube_deployment_labels\{([^}]*)\}", expr)
    required = dict(re.findall(r'(\w+)="([^"]+)"', selector))
    assert required == {ksm_label("app.kubernetes.io/part-of"): "adplatform"}, selector
    services = set()
    for deployment in rendered["default"].of_kind("Deployment"):
        exported = {ksm_label(k): v for k, v in deployment["metadata"]["labels"].items()}
        assert all(exported.get(k) == v for k, v in required.items()), deployment["metadata"]
        services.add(exported[ksm_label("app.kubernetes.io/component")])
    assert services == {"campaigns", "bidding", "analytics"}


def test_data_tier_exporters_are_annotated_for_plain_prometheus(
    rendered: dict[str, Rendered],
) -> None:
    """deploy/monitoring/prometheus/prometheus.yml scrapes annotated pods only: the
    exporters the PodMonitors scrape for the operator are annotated with the same port."""
    default = rendered["default"]
    (cluster,) = default.of_kind("Cluster")
    (kafka,) = default.of_kind("Kafka")
    (redis,) = default.of_kind("StatefulSet")
    exporters = {
        "postgres": cluster["spec"]["inheritedMetadata"].get("annotations", {}),
        "kafka-exporter": kafka["spec"]["kafkaExporter"]["template"]["pod"]["metadata"].get(
            "annotations", {}
        ),
        "redis": redis["spec"]["template"]["metadata"]["annotations"],
    }
    ports = {
        "postgres": "9187",  # CloudNativePG's exporter (the PodMonitor's port `metrics`)
        "kafka-exporter": "9404",  # Strimzi's tcp-prometheus port
        "redis": str(
            next(
                port["containerPort"]
                for container in redis["spec"]["template"]["spec"]["containers"]
                for port in container.get("ports", [])
                if port["name"] == "metrics"
            )
        ),
    }
    monitors = {m["metadata"]["name"] for m in default.of_kind("PodMonitor")}
    for name, given in exporters.items():
        assert f"{RELEASE}-{name}" in monitors
        assert given.get("prometheus.io/scrape") == "true", (name, given)
        assert given.get("prometheus.io/port") == ports[name], (name, given)
        assert given.get("prometheus.io/path", "/metrics") == "/metrics"
    # the NetworkPolicies let Prometheus reach those ports
    policies = yaml.safe_dump([p["spec"] for p in default.of_kind("NetworkPolicy")])
    for port in ("9187", "9404"):
        assert f"port: {port}" in policies, port


def test_dashboards_namespace(rendered: dict[str, Rendered]) -> None:
    """monitoring.dashboards.namespace puts the dashboard ConfigMaps (only them) where
    Grafana's sidecar looks; by default they stay in the release namespace."""

    def dashboards(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            o
            for o in objects
            if o["kind"] == "ConfigMap" and "grafana_dashboard" in o["metadata"].get("labels", {})
        ]

    default = dashboards(rendered["default"].objects)
    assert default
    assert {o["metadata"]["namespace"] for o in default} == {"adplatform"}
    result = run_helm(*template_args(sets={"monitoring.dashboards.namespace": "monitoring"}))
    assert result.returncode == 0, result.stderr
    objects = parse_manifests(result.stdout)
    moved = dashboards(objects)
    assert len(moved) == len(default)
    assert {o["metadata"]["namespace"] for o in moved} == {"monitoring"}
    others = {o["metadata"].get("namespace") for o in objects if o not in moved} - {None}
    assert others == {"adplatform"}
    bad = run_helm(*template_args(sets={"monitoring.dashboards.namespace": "Monitoring_NS"}))
    assert bad.returncode != 0
    assert "namespace" in bad.stderr, bad.stderr
