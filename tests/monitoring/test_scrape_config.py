"""The scrape config for clusters without the operator
(`deploy/monitoring/prometheus/prometheus.yml`).

`promtool check config` needs an upstream promtool: Debian builds Prometheus without
Kubernetes service discovery (scripts/install-test-deps.d/promtool-upstream.sh
builds the same 2.42 release from its Go module, with only the Kubernetes and file
SDs). Only this check uses it; the rule checks and rule unit tests run Debian's.
The relabelling is then run by a real Prometheus: the kubernetes_sd
block is replaced by file_sd with the targets Kubernetes pod discovery produces
(one per declared container port, with its `__meta_kubernetes_*` labels), all on
loopback, and the resulting targets are read back from Prometheus' API.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.common import PROJECT_ROOT, free_port, require, wait_for
from tests.infra.prometheus import (
    MONITORING_DIR,
    PrometheusServer,
    loopback_prometheus_config,
    promtool_binary,
)

CONFIG = MONITORING_DIR / "prometheus" / "prometheus.yml"
UPSTREAM_PROMTOOL = PROJECT_ROOT / ".cache" / "bin" / "promtool-upstream"


def test_promtool_check_config_upstream() -> None:
    promtool = require(
        str(UPSTREAM_PROMTOOL), "scripts/install-test-deps.d/promtool-upstream.sh (needs Go)"
    )
    result = subprocess.run(
        [promtool, "check", "config", str(CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_upstream_promtool_checks_kubernetes_sd(tmp_path: Path) -> None:
    """The check above is not vacuous: the upstream promtool is the 2.42 release (the
    Prometheus the live tests run) and validates kubernetes_sd_configs itself, while
    Debian's cannot read them at all."""
    promtool = require(
        str(UPSTREAM_PROMTOOL), "scripts/install-test-deps.d/promtool-upstream.sh (needs Go)"
    )
    version = subprocess.run(
        [promtool, "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    assert "version 2.42.0" in version.stdout + version.stderr, version.stdout + version.stderr
    production = yaml.safe_load(CONFIG.read_text())
    (job,) = [j for j in production["scrape_configs"] if j["job_name"] == "kubernetes-pods"]
    job["kubernetes_sd_configs"][0]["role"] = "pods"  # a typo of `pod`
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump(production))
    for binary, needle in ((promtool, "pods"), (promtool_binary(), "kubernetes_sd_configs")):
        result = subprocess.run(
            [binary, "check", "config", str(bad)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode != 0, f"{binary} accepted role: pods"
        assert needle in result.stdout + result.stderr, result.stdout + result.stderr


def test_loopback_config_is_valid(tmp_path: Path) -> None:
    """What the live tests and `make monitor` generate, checked by Debian's promtool."""
    rules = sorted((MONITORING_DIR / "rules").glob("*.yaml"))
    config = loopback_prometheus_config(["127.0.0.1:9090"], rules=rules, alertmanagers=["a:1"])
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [promtool_binary(), "check", "config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- relabelling, run by Prometheus -------------------------------------------------------


class MetricsServer:
    """Serves a tiny metrics page at one path only (404 elsewhere)."""

    def __init__(
        self, path: str, body: bytes = b"# TYPE relabel_test_up gauge\nrelabel_test_up 1\n"
    ) -> None:
        self.path = path
        self.port = free_port()
        served = path

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != served:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def pod_targets(
    name: str,
    *,
    ip: str = "127.0.0.1",
    annotations: dict[str, str],
    ports: list[int],
    component: str = "",
    phase: str = "Running",
    init: bool = False,
) -> list[dict[str, Any]]:
    """What kubernetes_sd role=pod yields for a pod: a target per declared port."""
    base = {
        "__meta_kubernetes_namespace": "ads",
        "__meta_kubernetes_pod_name": name,
        "__meta_kubernetes_pod_ip": ip,
        "__meta_kubernetes_pod_phase": phase,
        "__meta_kubernetes_pod_node_name": "node-1",
        "__meta_kubernetes_pod_ready": "true",
        "__meta_kubernetes_pod_container_name": name.split("-")[0],
        "__meta_kubernetes_pod_container_init": str(init).lower(),
        "__meta_kubernetes_pod_label_app_kubernetes_io_name": "adplatform",
    }
    if component:
        base["__meta_kubernetes_pod_label_app_kubernetes_io_component"] = component
    for key, value in annotations.items():
        slug = key.replace(".", "_").replace("/", "_")
        base[f"__meta_kubernetes_pod_annotation_{slug}"] = value
    host = f"[{ip}]" if ":" in ip else ip
    return [
        {
            "targets": [f"{host}:{port}"],
            "labels": {**base, "__meta_kubernetes_pod_container_port_number": str(port)},
        }
        for port in ports
    ]


@pytest.fixture(scope="module")
def relabelled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("relabel")
    metrics = MetricsServer("/metrics")
    custom = MetricsServer("/custom/metrics")
    plain = MetricsServer("/metrics")
    unused = free_port()  # a declared port nobody listens on
    groups = [
        # the chart's service pods: http and metrics ports declared, annotation on metrics
        *pod_targets(
            "bidding-7f9c-1",
            annotations={
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(metrics.port),
                "prometheus.io/path": "/metrics",
            },
            ports=[unused, metrics.port],
            component="bidding",
        ),
        # an exporter whose metrics port is not declared, on a custom path
        *pod_targets(
            "exporter-0",
            annotations={
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(custom.port),
                "prometheus.io/path": "/custom/metrics",
            },
            ports=[unused],
            component="redis",
        ),
        # no port annotation: the declared port is scraped
        *pod_targets("plain-0", annotations={"prometheus.io/scrape": "true"}, ports=[plain.port]),
        # not opted in, opted out, finished, init container: dropped
        *pod_targets("optout-0", annotations={}, ports=[plain.port]),
        *pod_targets(
            "disabled-0", annotations={"prometheus.io/scrape": "false"}, ports=[plain.port]
        ),
        *pod_targets(
            "job-0",
            annotations={"prometheus.io/scrape": "true"},
            ports=[plain.port],
            phase="Succeeded",
        ),
        *pod_targets(
            "init-0", annotations={"prometheus.io/scrape": "true"}, ports=[plain.port], init=True
        ),
        # an IPv6 pod (loopback): the address gets brackets
        *pod_targets(
            "ipv6-0",
            ip="::1",
            annotations={"prometheus.io/scrape": "true", "prometheus.io/port": str(unused)},
            ports=[unused + 1],
        ),
    ]
    sd_file = root / "pods.json"
    sd_file.write_text(json.dumps(groups))

    production = yaml.safe_load(CONFIG.read_text())
    (job,) = [j for j in production["scrape_configs"] if j["job_name"] == "kubernetes-pods"]
    del job["kubernetes_sd_configs"]
    job["file_sd_configs"] = [{"files": [str(sd_file)]}]
    config = loopback_prometheus_config([], rules=[])
    config["scrape_configs"] = [job]
    server = PrometheusServer(config, root / "prometheus").start()
    try:

        def scraped() -> bool:
            active = server.targets()["activeTargets"]
            return bool(active) and all(t["health"] != "unknown" for t in active)

        wait_for(scraped, timeout=30, what="first scrapes", log=server.log)
        yield server.targets()
    finally:
        server.cleanup()
        for srv in (metrics, custom, plain):
            srv.stop()


def by_pod(targets: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for target in targets:
        found.setdefault(target["labels"].get("pod", "?"), []).append(target)
    return found


def test_annotated_port_is_scraped_once(relabelled: dict[str, Any]) -> None:
    (target,) = by_pod(relabelled["activeTargets"])["bidding-7f9c-1"]
    port = target["labels"]["instance"].rsplit(":", 1)[1]
    assert target["scrapeUrl"] == f"http://127.0.0.1:{port}/metrics"
    assert target["health"] == "up", target["lastError"]
    assert target["labels"]["namespace"] == "ads"
    assert target["labels"]["service"] == "bidding"
    assert target["labels"]["app"] == "adplatform"
    assert target["labels"]["node"] == "node-1"


def test_annotated_port_and_path_are_honoured_when_undeclared(relabelled: dict[str, Any]) -> None:
    (target,) = by_pod(relabelled["activeTargets"])["exporter-0"]
    assert target["scrapeUrl"].endswith("/custom/metrics")
    assert target["health"] == "up", target["lastError"]
    assert target["labels"]["service"] == "redis"


def test_without_port_annotation_the_declared_port_is_used(relabelled: dict[str, Any]) -> None:
    (target,) = by_pod(relabelled["activeTargets"])["plain-0"]
    assert target["health"] == "up", target["lastError"]
    assert target["scrapeUrl"].endswith("/metrics")
    assert "service" not in target["labels"]


def test_ipv6_address_is_bracketed(relabelled: dict[str, Any]) -> None:
    (target,) = by_pod(relabelled["activeTargets"])["ipv6-0"]
    assert target["labels"]["instance"].startswith("[::1]:")


def test_not_opted_in_finished_and_init_pods_are_dropped(relabelled: dict[str, Any]) -> None:
    active = set(by_pod(relabelled["activeTargets"]))
    assert active == {"bidding-7f9c-1", "exporter-0", "plain-0", "ipv6-0"}
    dropped = {
        t["discoveredLabels"]["__meta_kubernetes_pod_name"] for t in relabelled["droppedTargets"]
    }
    assert {"optout-0", "disabled-0", "job-0", "init-0"} <= dropped


# --- the kube-state-metrics job, run by Prometheus ----------------------------------------

KSM_BODY = (
    b"# TYPE kube_pod_labels gauge\n"
    b'kube_pod_labels{namespace="ads",pod="adplatform-bidding-1",uid="b1",'
    b'label_app_kubernetes_io_name="adplatform"} 1\n'
    b"# TYPE kube_deployment_labels gauge\n"
    b'kube_deployment_labels{namespace="ads",deployment="adplatform-bidding",'
    b'label_app_kubernetes_io_part_of="adplatform",label_app_kubernetes_io_component="bidding"} 1\n'
)


def endpoint_targets(
    service: str, port: int, port_name: str, *, app: str, namespace: str = "monitoring"
) -> dict[str, Any]:
    """What kubernetes_sd role=endpoints yields for one port of one Service endpoint."""
    return {
        "targets": [f"127.0.0.1:{port}"],
        "labels": {
            "__meta_kubernetes_namespace": namespace,
            "__meta_kubernetes_service_name": service,
            "__meta_kubernetes_service_label_app_kubernetes_io_name": app,
            "__meta_kubernetes_endpoint_port_name": port_name,
            "__meta_kubernetes_endpoint_ready": "true",
            "__meta_kubernetes_pod_name": f"{service}-7f-x1",
        },
    }


@pytest.fixture(scope="module")
def ksm_scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    root = tmp_path_factory.mktemp("ksm")
    manifests = MetricsServer("/metrics", KSM_BODY)  # its manifests: port http-metrics
    chart = MetricsServer("/metrics", KSM_BODY)  # its Helm chart: port http
    other = MetricsServer("/metrics")
    groups = [
        endpoint_targets(
            "kube-state-metrics", manifests.port, "http-metrics", app="kube-state-metrics"
        ),
        endpoint_targets("kube-state-metrics", free_port(), "telemetry", app="kube-state-metrics"),
        endpoint_targets("kps-kube-state-metrics", chart.port, "http", app="kube-state-metrics"),
        endpoint_targets("node-exporter", other.port, "http-metrics", app="node-exporter"),
        endpoint_targets(
            "adplatform-bidding", other.port, "http", app="adplatform", namespace="ads"
        ),
    ]
    sd_file = root / "endpoints.json"
    sd_file.write_text(json.dumps(groups))
    production = yaml.safe_load(CONFIG.read_text())
    (job,) = [j for j in production["scrape_configs"] if j["job_name"] == "kube-state-metrics"]
    assert job["kubernetes_sd_configs"] == [{"role": "endpoints"}]
    del job["kubernetes_sd_configs"]
    job["file_sd_configs"] = [{"files": [str(sd_file)]}]
    config = loopback_prometheus_config([], rules=[])
    config["scrape_configs"] = [job]
    server = PrometheusServer(config, root / "prometheus").start()
    try:
        wait_for(
            lambda: len(server.query("kube_pod_labels")) == 2,
            timeout=30,
            what="kube-state-metrics scraped",
            log=server.log,
        )
        yield server
    finally:
        server.cleanup()
        for srv in (manifests, chart, other):
            srv.stop()


def test_kube_state_metrics_job_scrapes_its_metrics_ports_only(
    ksm_scraped: PrometheusServer,
) -> None:
    targets = ksm_scraped.targets()
    active = sorted(
        t["discoveredLabels"]["__meta_kubernetes_service_name"] for t in targets["activeTargets"]
    )
    assert active == ["kps-kube-state-metrics", "kube-state-metrics"]
    assert all(t["health"] == "up" for t in targets["activeTargets"])
    dropped = {
        (
            t["discoveredLabels"]["__meta_kubernetes_service_name"],
            t["discoveredLabels"]["__meta_kubernetes_endpoint_port_name"],
        )
        for t in targets["droppedTargets"]
    }
    assert dropped == {
        ("kube-state-metrics", "telemetry"),
        ("node-exporter", "http-metrics"),
        ("adplatform-bidding", "http"),
    }


def test_kube_state_metrics_labels_name_the_objects_reported_on(
    ksm_scraped: PrometheusServer,
) -> None:
    """Its namespace/pod/deployment labels are the reported objects' (here ads), not the
    kube-state-metrics pod's (monitoring): what the rules join on."""
    for series in ksm_scraped.query("kube_pod_labels"):
        labels = series["metric"]
        assert labels["namespace"] == "ads"
        assert labels["pod"] == "adplatform-bidding-1"
        assert labels["label_app_kubernetes_io_name"] == "adplatform"
        assert labels["job"] == "kube-state-metrics"
    (deployment, _) = ksm_scraped.query("kube_deployment_labels")
    assert deployment["metric"]["namespace"] == "ads"
    assert deployment["metric"]["label_app_kubernetes_io_component"] == "bidding"
