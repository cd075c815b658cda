"""The chart lints, renders and validates: Kubernetes schemas for every object, the
operators' CRD schemas for every custom resource, Helm 3 and Helm 4 alike."""

from __future__ import annotations

import copy
import tarfile
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from tests.chart.conftest import (
    CHART,
    COMBINATIONS,
    KUBE_VERSION,
    RELEASE,
    VALUES_FILES,
    Rendered,
    crd_schemas,
    parse_manifests,
    render,
    run_helm,
    template_args,
)

KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
CUSTOM_GROUPS = (
    "postgresql.cnpg.io/",
    "kafka.strimzi.io/",
    "keda.sh/",
    "monitoring.coreos.com/",
    "gateway.networking.k8s.io/",
)


@pytest.mark.parametrize("binary", ["helm", "helm4"])
@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_helm_lint_strict(binary: str, values_file: str) -> None:
    result = run_helm("lint", "--strict", str(CHART), "-f", str(CHART / values_file), binary=binary)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_every_combination_renders(rendered: dict[str, Rendered]) -> None:
    assert set(rendered) == set(COMBINATIONS)
    for name, result in rendered.items():
        kinds = {obj["kind"] for obj in result.objects}
        assert {"Deployment", "Service", "ConfigMap"} <= kinds, f"{name}: {sorted(kinds)}"


def _without_random(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Generated Secrets hold fresh random values on every `helm template`."""
    return [obj for obj in objects if obj["kind"] != "Secret" or "data" not in obj]


@pytest.mark.parametrize("name", ["default", "production", "everything-on", "external-all", "keda"])
def test_helm4_renders_the_same_objects(name: str, rendered: dict[str, Rendered]) -> None:
    files, sets = COMBINATIONS[name]
    result = render(files, sets, binary="helm4")
    assert result.returncode == 0, result.stderr
    assert _without_random(parse_manifests(result.stdout)) == _without_random(
        rendered[name].objects
    )


def test_package_follows_the_monitoring_link(tmp_path: Path, rendered: dict[str, Rendered]) -> None:
    """files/monitoring is a link to deploy/monitoring: `helm package` must carry its
    files (minus the promtool tests) and render exactly what the directory renders."""
    result = run_helm("package", str(CHART), "--destination", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (archive,) = tmp_path.glob("adplatform-*.tgz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    rules = sorted(Path(CHART / "files" / "monitoring" / "rules").glob("*.yaml"))
    assert rules, "deploy/monitoring/rules has no rule files"
    for rule in rules:
        assert f"adplatform/files/monitoring/rules/{rule.name}" in names
    assert not [n for n in names if "/rules/tests/" in n], "promtool tests must not be packaged"
    from_package = run_helm(*template_args(chart=archive))
    assert from_package.returncode == 0, from_package.stderr
    assert parse_manifests(from_package.stdout) == rendered["default"].objects


def _is_custom(obj: dict[str, Any]) -> bool:
    return str(obj["apiVersion"]).startswith(CUSTOM_GROUPS)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_objects_valid_for_kubernetes(version: str, combination: Rendered) -> None:
    errors = []
    for obj in combination.objects:
        if _is_custom(obj):
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(
                f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}"
            )
    assert not errors, f"{combination.name} on Kubernetes {version}:\n" + "\n".join(errors)


def strict_schema(schema: Any) -> Any:
    """A CRD's structural schema as strict JSON Schema: unknown fields are errors (what
    the API server answers with fieldValidation=Strict) and `nullable` allows null."""
    if isinstance(schema, list):
        return [strict_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict_schema(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if out.get("x-kubernetes-int-or-string"):
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    return out


@cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    schemas = crd_schemas()
    key = (api_version, kind)
    assert key in schemas, f"no CRD schema for {key}; fetched: {sorted(schemas)}"
    return jsonschema.Draft7Validator(strict_schema(schemas[key]))


def validate_custom_resource(obj: dict[str, Any]) -> list[str]:
    validator = crd_validator(obj["apiVersion"], obj["kind"])
    return [
        f"{obj['kind']}/{obj['metadata']['name']}: {error.message} at {error.json_path}"
        for error in validator.iter_errors(obj)
    ]


def test_custom_resources_valid_for_their_crds(combination: Rendered) -> None:
    errors = []
    for obj in combination.objects:
        if _is_custom(obj):
            errors += validate_custom_resource(obj)
    assert not errors, f"{combination.name}:\n" + "\n".join(errors)


def test_custom_resource_validation_catches_mistakes(rendered: dict[str, Rendered]) -> None:
    """The CRD check is not vacuous: a typo'd field and a wrong type are both caught."""
    cluster = copy.deepcopy(rendered["default"].one("Cluster", "adplatform-pg"))
    cluster["spec"]["instancs"] = 3
    cluster["spec"]["postgresql"]["synchronous"]["number"] = "one"
    errors = validate_custom_resource(cluster)
    assert any("instancs" in error for error in errors), errors
    assert any("'one' is not of type 'integer'" in error for error in errors), errors


def test_every_custom_resource_kind_is_checked(rendered: dict[str, Rendered]) -> None:
    kinds = {
        (obj["apiVersion"], obj["kind"])
        for result in rendered.values()
        for obj in result.objects
        if _is_custom(obj)
    }
    assert kinds >= {
        ("postgresql.cnpg.io/v1", "Cluster"),
        ("kafka.strimzi.io/v1", "Kafka"),
        ("kafka.strimzi.io/v1", "KafkaNodePool"),
        ("kafka.strimzi.io/v1", "KafkaTopic"),
        ("keda.sh/v1alpha1", "ScaledObject"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PodMonitor"),
        ("monitoring.coreos.com/v1alpha1", "AlertmanagerConfig"),
        ("gateway.networking.k8s.io/v1", "HTTPRoute"),
        ("gateway.networking.k8s.io/v1", "Gateway"),
    }


@pytest.mark.parametrize("binary", ["helm", "helm4"])
def test_kube_version_is_pinned_and_enforced(binary: str, tmp_path: Path) -> None:
    """Every render assumes the same Kubernetes release whatever Helm build runs it (each
    build has its own default), and the chart's kubeVersion constraint is enforced."""
    probe = tmp_path / "probe"
    (probe / "templates").mkdir(parents=True)
    (probe / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (probe / "templates" / "kube.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\n"
        "data: {kube: {{ .Capabilities.KubeVersion.Version | quote }}}\n"
    )
    result = run_helm("template", "probe", str(probe), binary=binary)
    assert result.returncode == 0, result.stderr
    (config,) = parse_manifests(result.stdout)
    assert config["data"]["kube"] == f"v{KUBE_VERSION}"
    refused = run_helm("template", RELEASE, str(CHART), "--kube-version", "1.29.0", binary=binary)
    assert refused.returncode != 0
    assert "kubeVersion" in refused.stderr or "Kubernetes" in refused.stderr, refused.stderr
