"""Chart test fixtures: Helm, the CRD schemas and every rendered combination, once a session.

The tools come from scripts/install-test-deps.d/chart.sh (into .cache/); a missing tool
skips locally and fails under CI=true, like the server fixtures.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.common import PROJECT_ROOT, require

CHART = PROJECT_ROOT / "deploy" / "helm" / "adplatform"
CACHE = PROJECT_ROOT / ".cache"
CRDS = CACHE / "crds"
INSTALL_HINT = "scripts/install-test-deps.d/chart.sh (or `make deps`)"
RELEASE = "adplatform"
NAMESPACE = "adplatform"

EXTERNAL_DATA_TIER = {
    "postgres.enabled": "false",
    "postgres.external.existingSecret": "pg-app",
    "postgres.external.cidr": "10.20.0.0/16",
    "kafka.enabled": "false",
    "kafka.external.brokers": "kafka-0.example.internal:9092,kafka-1.example.internal:9092",
    "redis.enabled": "false",
    "redis.external.host": "redis.example.internal",
}

NO_AUTOSCALING = {
    f"services.{name}.autoscaling.enabled": "false"
    for name in ("campaigns", "bidding", "analytics")
}

# Every combination the suite renders: values files, and feature switches on top of
# the defaults. Each is rendered once per session and shared by all tests.
COMBINATIONS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "default": ((), {}),
    "staging": (("values-staging.yaml",), {}),
    "production": (("values-production.yaml",), {}),
    "keda": ((), {"autoscalingEngine": "keda"}),
    "production-keda": (("values-production.yaml",), {"autoscalingEngine": "keda"}),
    "ingress": ((), {"ingress.enabled": "true", "httpRoute.enabled": "false"}),
    "gateway": ((), {"httpRoute.gateway.create": "true", "httpRoute.gateway.className": "eg"}),
    "no-autoscaling": ((), NO_AUTOSCALING),
    "staging-no-autoscaling": (("values-staging.yaml",), NO_AUTOSCALING),
    "production-no-autoscaling": (("values-production.yaml",), NO_AUTOSCALING),
    "external-postgres": (
        (),
        {k: v for k, v in EXTERNAL_DATA_TIER.items() if k.startswith("postgres.")},
    ),
    "external-kafka": ((), {k: v for k, v in EXTERNAL_DATA_TIER.items() if k.startswith("kafka.")}),
    "external-redis": ((), {k: v for k, v in EXTERNAL_DATA_TIER.items() if k.startswith("redis.")}),
    "external-all": ((), EXTERNAL_DATA_TIER),
    "everything-on": (
        (),
        {
            "monitoring.alertmanager.enabled": "true",
            "secrets.existingSecret": "",
            "secrets.generate": "true",
            "ingress.enabled": "true",
            "httpRoute.gateway.create": "true",
            "httpRoute.gateway.className": "eg",
            "networkPolicy.kubeApiServer.cidrs[0]": "10.96.0.1/32",
        },
    ),
    "monitoring-off": (
        (),
        {
            "monitoring.prometheusRule.enabled": "false",
            "monitoring.serviceMonitor.enabled": "false",
            "monitoring.dashboards.enabled": "false",
            "networkPolicy.enabled": "false",
            "tests.enabled": "false",
            "migrations.enabled": "false",
        },
    ),
}
VALUES_FILES = ("values.yaml", "values-staging.yaml", "values-production.yaml")


def helm_binary(name: str = "helm") -> str:
    return require(str(CACHE / "bin" / name), INSTALL_HINT)


# The Kubernetes version `helm template` and `helm lint` assume (.Capabilities.KubeVersion,
# and the chart's kubeVersion constraint) is compiled into each Helm build: 1.33 for the
# Helm 3.18 and 1.35 for the Helm 4.1 the tests use. Pinned, so both Helms (and a Helm
# built from source as the fallback) render alike: the oldest release the chart supports.
KUBE_VERSION = "1.30.0"


def run_helm(
    *args: str, binary: str = "helm", cwd: Path = PROJECT_ROOT
) -> subprocess.CompletedProcess[str]:
    command = [helm_binary(binary), *args]
    if args and args[0] in ("template", "lint") and "--kube-version" not in args:
        command += ["--kube-version", KUBE_VERSION]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=120)


def template_args(
    values_files: tuple[str, ...] = (), sets: dict[str, str] | None = None, chart: Path = CHART
) -> list[str]:
    args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE]
    for name in values_files:
        args += ["-f", str(CHART / name)]
    for key, value in (sets or {}).items():
        escaped = value.replace(",", "\\,")  # --set splits on unescaped commas
        args += ["--set-string" if value == "" else "--set", f"{key}={escaped}"]
    return args


def parse_manifests(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@dataclass
class Rendered:
    """One combination's rendered objects, with look-ups the tests share."""

    name: str
    text: str
    objects: list[dict[str, Any]] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        found = [obj for obj in self.of_kind(kind) if obj["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind} {name}, found {len(found)}"
        return found[0]

    def pod_specs(self) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
        """(kind/name, pod metadata, pod spec) of every pod the chart itself defines."""
        for obj in self.objects:
            kind, meta = obj["kind"], obj["metadata"]
            if kind in ("Deployment", "StatefulSet", "Job"):
                template = obj["spec"]["template"]
                yield f"{kind}/{meta['name']}", template["metadata"], template["spec"]
            elif kind == "Pod":
                yield f"Pod/{meta['name']}", meta, obj["spec"]


def render(
    values_files: tuple[str, ...] = (), sets: dict[str, str] | None = None, *, binary: str = "helm"
) -> subprocess.CompletedProcess[str]:
    return run_helm(*template_args(values_files, sets), binary=binary)


@pytest.fixture(scope="session")
def rendered() -> dict[str, Rendered]:
    """Every combination in COMBINATIONS, rendered once with Helm 3."""
    results = {}
    for name, (files, sets) in COMBINATIONS.items():
        result = render(files, sets)
        assert result.returncode == 0, f"helm template {name} failed:\n{result.stderr}"
        results[name] = Rendered(name, result.stdout, parse_manifests(result.stdout))
    return results


@pytest.fixture(scope="session", params=list(COMBINATIONS))
def combination(request: pytest.FixtureRequest, rendered: dict[str, Rendered]) -> Rendered:
    return rendered[request.param]


class _CrdLoader(yaml.SafeLoader):
    """PyYAML reads a bare `=` as YAML 1.1's value tag; in CRDs it is an enum string."""


_CrdLoader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: node.value)


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema, from every CRD fetched into .cache/crds."""
    require(str(CRDS / "strimzi" / "040-Crd-kafka.yaml"), INSTALL_HINT)
    schemas = {}
    for path in sorted(CRDS.glob("*/*.yaml")):
        for doc in yaml.load_all(path.read_text(), Loader=_CrdLoader):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                if version.get("served", True):
                    schemas[(f"{group}/{version['name']}", kind)] = version["schema"][
                        "openAPIV3Schema"
                    ]
    return schemas
