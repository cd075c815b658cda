"""What schemas cannot see: the chart's promises about the rendered objects.

Security contexts, resources and probes on every container; the seed's autoscaling,
rollout and sizing numbers; disruption budgets; image pinning; the environment the
code reads; network policies that select every pod and allow only the real traffic.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from adplatform.core.config import Settings
from adplatform.core.events import TOPICS
from adplatform.core.server import SERVICES, load_service
from tests.chart.conftest import (
    CHART,
    COMBINATIONS,
    NAMESPACE,
    RELEASE,
    Rendered,
    crd_schemas,
    parse_manifests,
    render,
)

PREFIX = f"{RELEASE}"  # release "adplatform" contains the chart name: objects are adplatform-*
SETTINGS_ENV = {name.upper() for name in Settings.model_fields}
RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}  # fmt: skip


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


# --- every container --------------------------------------------------------------------


def test_every_container_has_requests_and_limits(combination: Rendered) -> None:
    for where, _, spec in combination.pod_specs():
        for container in containers(spec):
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), (
                    f"{combination.name} {where}/{container['name']}: {kind} {resources}"
                )


def test_long_running_containers_have_probes_and_jobs_a_deadline(combination: Rendered) -> None:
    for where, _, spec in combination.pod_specs():
        kind = where.split("/")[0]
        for container in spec["containers"]:
            if kind in ("Deployment", "StatefulSet"):
                for probe in ("livenessProbe", "readinessProbe"):
                    assert probe in container, f"{combination.name} {where}/{container['name']}"
    for job in combination.of_kind("Job"):
        assert job["spec"]["activeDeadlineSeconds"] > 0, job["metadata"]["name"]


def test_every_pod_satisfies_pod_security_restricted(combination: Rendered) -> None:
    """The Pod Security Standard "restricted", checked field by field."""
    for where, _, spec in combination.pod_specs():
        pod_sc = spec.get("securityContext", {})
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(host), f"{where}: {host}"
        for volume in spec.get("volumes", []):
            kinds = set(volume) - {"name"}
            assert kinds <= RESTRICTED_VOLUME_TYPES, f"{where}: volume {volume}"
        for container in containers(spec):
            sc = container.get("securityContext", {})
            label = f"{combination.name} {where}/{container['name']}"
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, label
            assert sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0, label
            assert sc.get("allowPrivilegeEscalation") is False, label
            assert not sc.get("privileged"), label
            assert sc.get("readOnlyRootFilesystem") is True, label
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], label
            assert not set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}, label
            seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
            assert seccomp.get("type") == "RuntimeDefault", label
            assert not container.get("ports") or not any(
                "hostPort" in port for port in container["ports"]
            ), label


def _strimzi_templates(
    schema: dict[str, Any], path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], str]]:
    """(path, "pod" or "container") of every pod and container template in a Strimzi
    CRD's schema: the fields under a `template` that carry a securityContext."""
    for name, sub in schema.get("properties", {}).items():
        here = (*path, name)
        if (
            len(path) >= 1
            and path[-1] == "template"
            and "securityContext" in sub.get("properties", {})
        ):
            yield here, "pod" if name == "pod" else "container"
        yield from _strimzi_templates(sub, here)


def _dig(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def test_every_strimzi_container_gets_a_restricted_context(combination: Rendered) -> None:
    """Strimzi builds the Kafka, entity operator and Kafka Exporter pods itself: every pod
    and container template the CRDs offer, in each part of the CR the chart enables, must
    carry the restricted context (the CRD walk catches a container a new Strimzi adds)."""
    schemas = crd_schemas()
    checked = 0
    for obj in combination.of_kind("Kafka") + combination.of_kind("KafkaNodePool"):
        where = f"{combination.name} {obj['kind']}/{obj['metadata']['name']}"
        schema = schemas[(obj["apiVersion"], obj["kind"])]
        for path, kind in _strimzi_templates(schema):
            section = path[: path.index("template")]
            if _dig(obj, section) is None or section[-1:] == ("cruiseControl",):
                continue  # a component the chart does not enable (Strimzi creates no pod)
            sc = _dig(obj, (*path, "securityContext"))
            label = f"{where} {'.'.join(path)}"
            assert isinstance(sc, dict), f"{label}: no securityContext"
            assert sc.get("runAsNonRoot") is True, label
            assert sc.get("seccompProfile") == {"type": "RuntimeDefault"}, label
            if kind == "container":
                assert sc.get("allowPrivilegeEscalation") is False, label
                assert sc.get("capabilities") == {"drop": ["ALL"]}, label
                assert sc.get("readOnlyRootFilesystem") is True, label
                assert not sc.get("privileged"), label
                assert "runAsUser" not in sc or sc["runAsUser"] != 0, label
            checked += 1
    if combination.of_kind("Kafka"):
        # Kafka: pod, kafka + init containers; entity operator: pod + 2; exporter: pod + 1;
        # each of the two node pools: pod, kafka + init containers.
        assert checked == 3 + 3 + 2 + 2 * 3, f"{combination.name}: {checked} templates checked"


def test_strimzi_operands_have_requests_and_limits(rendered: dict[str, Rendered]) -> None:
    kafka = rendered["default"].one("Kafka", f"{PREFIX}-kafka")["spec"]
    sized = {
        "topic operator": kafka["entityOperator"]["topicOperator"],
        "user operator": kafka["entityOperator"]["userOperator"],
        "kafka exporter": kafka["kafkaExporter"],
        **{
            f"{pool['metadata']['name']} pool": pool["spec"]
            for pool in rendered["default"].of_kind("KafkaNodePool")
        },
    }
    for name, spec in sized.items():
        resources = spec.get("resources", {})
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{name}: {resources}"
        # The operators' JVMs size their heap from the memory limit: schedule that much.
        if name.endswith("operator"):
            assert resources["requests"]["memory"] == resources["limits"]["memory"], name


def test_no_service_account_token_is_mounted(combination: Rendered) -> None:
    for where, _, spec in combination.pod_specs():
        assert spec.get("automountServiceAccountToken") is False, where
    for account in combination.of_kind("ServiceAccount"):
        assert account["automountServiceAccountToken"] is False, account["metadata"]["name"]


def test_images_are_pinned(combination: Rendered) -> None:
    for where, _, spec in combination.pod_specs():
        for container in containers(spec):
            image = container["image"]
            _name, _, tag = (
                image.rpartition("@")[0].rpartition(":") if "@" in image else image.rpartition(":")
            )
            assert "@sha256:" in image or (tag and "/" not in tag), f"{where}: {image} has no tag"
            assert not image.endswith(":latest"), f"{where}: {image}"
    cluster = list(combination.of_kind("Cluster"))
    for obj in cluster:
        assert not obj["spec"]["imageName"].endswith(":latest")


def test_image_digest_wins_over_tag() -> None:
    digest = "sha256:" + "a" * 64
    result = render(sets={"image.digest": digest, "image.tag": "9.9.9"})
    assert result.returncode == 0, result.stderr
    assert f"image: ghcr.io/example/adplatform@{digest}" in result.stdout
    assert "adplatform:9.9.9" not in result.stdout


# --- services ---------------------------------------------------------------------------


def deployment(result: Rendered, service: str) -> dict[str, Any]:
    return result.one("Deployment", f"{PREFIX}-{service}")


def hpa(result: Rendered, service: str) -> dict[str, Any]:
    return result.one("HorizontalPodAutoscaler", f"{PREFIX}-{service}")


def metric_targets(spec: dict[str, Any]) -> dict[str, Any]:
    targets: dict[str, Any] = {}
    for metric in spec["metrics"]:
        if metric["type"] == "Resource":
            targets[metric["resource"]["name"]] = metric["resource"]["target"]["averageUtilization"]
        elif metric["type"] == "Pods":
            targets[metric["pods"]["metric"]["name"]] = metric["pods"]["target"]["averageValue"]
        elif metric["type"] == "External":
            targets[metric["external"]["metric"]["name"]] = metric["external"]["target"][
                "averageValue"
            ]
    return targets


def test_seed_autoscaling_numbers(rendered: dict[str, Rendered]) -> None:
    default = rendered["default"]
    campaigns, bidding = hpa(default, "campaigns")["spec"], hpa(default, "bidding")["spec"]
    assert (campaigns["minReplicas"], campaigns["maxReplicas"]) == (3, 20)
    assert metric_targets(campaigns) == {"cpu": 70, "memory": 80, "http_requests_per_second": "100"}
    assert (bidding["minReplicas"], bidding["maxReplicas"]) == (5, 50)
    assert metric_targets(bidding) == {"cpu": 60, "bid_requests_per_second": "500"}
    analytics = hpa(default, "analytics")["spec"]
    lag = next(m for m in analytics["metrics"] if m["type"] == "External")["external"]
    env = effective_env(default, deployment(default, "analytics"))
    assert lag["metric"]["selector"]["matchLabels"] == {
        "group": env["ANALYTICS_CONSUMER_GROUP"],
        "topic": env["ANALYTICS_TOPIC"],
    }


def test_seed_scaling_behaviours(rendered: dict[str, Rendered]) -> None:
    """Bidding scales up fast (no stabilisation, doubling every 15 s); everything
    scales down slowly (5 minutes of stabilisation, small steps)."""
    default = rendered["default"]
    bidding = hpa(default, "bidding")["spec"]["behavior"]
    assert bidding["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert {"type": "Percent", "value": 100, "periodSeconds": 15} in bidding["scaleUp"]["policies"]
    assert bidding["scaleUp"]["selectPolicy"] == "Max"
    campaigns = hpa(default, "campaigns")["spec"]["behavior"]
    assert campaigns["scaleUp"]["stabilizationWindowSeconds"] == 60
    for service in ("campaigns", "bidding", "analytics"):
        down = hpa(default, service)["spec"]["behavior"]["scaleDown"]
        assert down["stabilizationWindowSeconds"] == 300, service
        assert down["selectPolicy"] == "Min", service


def test_seed_rollout_and_resources(rendered: dict[str, Rendered]) -> None:
    default = rendered["default"]
    expected = {
        "campaigns": ({"maxUnavailable": 1, "maxSurge": 1}, ("200m", "256Mi", "500m", "512Mi")),
        "bidding": ({"maxUnavailable": 1, "maxSurge": 2}, ("500m", "512Mi", "1000m", "1Gi")),
    }
    for service, (rolling, (cpu, memory, cpu_limit, memory_limit)) in expected.items():
        spec = deployment(default, service)["spec"]
        assert spec["strategy"]["rollingUpdate"] == rolling
        resources = spec["template"]["spec"]["containers"][0]["resources"]
        assert resources == {
            "requests": {"cpu": cpu, "memory": memory},
            "limits": {"cpu": cpu_limit, "memory": memory_limit},
        }


def test_staging_and_production_sizes(rendered: dict[str, Rendered]) -> None:
    for service in SERVICES:
        production = deployment(rendered["production"], service)["spec"]["template"]["spec"]
        assert production["containers"][0]["resources"] == {
            "requests": {"cpu": "500m", "memory": "512Mi"},
            "limits": {"cpu": "1000m", "memory": "1Gi"},
        }
        assert hpa(rendered["production"], service)["spec"]["minReplicas"] == 5
        assert hpa(rendered["staging"], service)["spec"]["minReplicas"] == 2
        staging_memory = deployment(rendered["staging"], service)["spec"]["template"]["spec"][
            "containers"
        ][0]["resources"]["limits"]["memory"]
        default_memory = deployment(rendered["default"], service)["spec"]["template"]["spec"][
            "containers"
        ][0]["resources"]["limits"]["memory"]
        assert _bytes(staging_memory) < _bytes(default_memory), service
    for service in SERVICES:
        replicas = deployment(rendered["no-autoscaling"], service)["spec"]["replicas"]
        assert replicas == {"campaigns": 3, "bidding": 5, "analytics": 2}[service]


@pytest.mark.parametrize(("name", "replicas"), [("staging", 2), ("production", 5)])
def test_environment_replicas_without_autoscaling(
    name: str, replicas: int, rendered: dict[str, Rendered]
) -> None:
    """With autoscaling off, the Deployments carry the environment's own replica count
    (seed: staging 2, production 5), not the chart default's."""
    result = rendered[f"{name}-no-autoscaling"]
    assert not result.of_kind("HorizontalPodAutoscaler")
    assert not result.of_kind("ScaledObject")
    for service in SERVICES:
        assert deployment(result, service)["spec"]["replicas"] == replicas, service


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return int(quantity[:-2]) * units[quantity[-2:]]


def test_autoscaled_deployments_leave_replicas_to_the_autoscaler(combination: Rendered) -> None:
    scaled = {
        obj["spec"]["scaleTargetRef"]["name"]
        for obj in combination.of_kind("HorizontalPodAutoscaler")
    }
    scaled |= {obj["spec"]["scaleTargetRef"]["name"] for obj in combination.of_kind("ScaledObject")}
    for obj in combination.of_kind("Deployment"):
        assert ("replicas" in obj["spec"]) != (obj["metadata"]["name"] in scaled), obj["metadata"][
            "name"
        ]


def test_keda_replaces_the_hpas(rendered: dict[str, Rendered]) -> None:
    keda = rendered["keda"]
    assert not keda.of_kind("HorizontalPodAutoscaler")
    scaled = {obj["metadata"]["name"]: obj["spec"] for obj in keda.of_kind("ScaledObject")}
    assert set(scaled) == {f"{PREFIX}-{name}" for name in SERVICES}
    campaigns = {t["type"]: t for t in scaled[f"{PREFIX}-campaigns"]["triggers"]}
    assert set(campaigns) == {"cpu", "memory", "prometheus"}
    prometheus = campaigns["prometheus"]["metadata"]
    assert prometheus["threshold"] == "100"
    assert prometheus["query"] == (
        f'sum(rate(http_requests_total{{namespace="{NAMESPACE}",service="campaigns"}}[2m]))'
    )
    bidding = {t["type"]: t for t in scaled[f"{PREFIX}-bidding"]["triggers"]}
    assert bidding["prometheus"]["metadata"]["threshold"] == "500"
    assert "bid_requests_total" in bidding["prometheus"]["metadata"]["query"]
    analytics = {t["type"]: t for t in scaled[f"{PREFIX}-analytics"]["triggers"]}
    assert analytics["kafka"]["metadata"] == {
        "bootstrapServers": f"{PREFIX}-kafka-kafka-bootstrap:9092",
        "consumerGroup": "analytics",
        "topic": "ad-events",
        "lagThreshold": "1000",
        "offsetResetPolicy": "earliest",
    }
    behaviour = scaled[f"{PREFIX}-bidding"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behaviour == hpa(rendered["default"], "bidding")["spec"]["behavior"]
    assert (
        scaled[f"{PREFIX}-bidding"]["minReplicaCount"],
        scaled[f"{PREFIX}-bidding"]["maxReplicaCount"],
    ) == (5, 50)


def test_analytics_never_scales_past_the_partitions(rendered: dict[str, Rendered]) -> None:
    for name in ("default", "staging", "production"):
        topic = rendered[name].one("KafkaTopic", "ad-events")
        assert (
            hpa(rendered[name], "analytics")["spec"]["maxReplicas"] <= topic["spec"]["partitions"]
        )


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # the chart uses matchLabels only
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())


def test_every_multi_replica_workload_has_a_pdb(combination: Rendered) -> None:
    pdbs = combination.of_kind("PodDisruptionBudget")
    autoscaled = {
        obj["spec"]["scaleTargetRef"]["name"]: obj["spec"].get(
            "maxReplicas", obj["spec"].get("maxReplicaCount")
        )
        for obj in combination.of_kind("HorizontalPodAutoscaler")
        + combination.of_kind("ScaledObject")
    }
    for obj in combination.of_kind("Deployment") + combination.of_kind("StatefulSet"):
        name = obj["metadata"]["name"]
        most = obj["spec"].get("replicas") or autoscaled.get(name, 1)
        if most > 1:
            labels = obj["spec"]["template"]["metadata"]["labels"]
            matching = [pdb for pdb in pdbs if _selects(pdb["spec"]["selector"], labels)]
            assert len(matching) == 1, f"{combination.name} {name}: {len(matching)} PDBs"


def test_services_expose_http_and_metrics(combination: Rendered) -> None:
    for service in SERVICES:
        obj = combination.one("Service", f"{PREFIX}-{service}")
        ports = {port["name"]: port["port"] for port in obj["spec"]["ports"]}
        assert ports == {"http": 8080, "metrics": 9090}


def test_pods_roll_when_the_config_changes(rendered: dict[str, Rendered]) -> None:
    changed = render(sets={"config.log.level": "DEBUG"})
    assert changed.returncode == 0
    before = deployment(rendered["default"], "bidding")["spec"]["template"]["metadata"][
        "annotations"
    ]
    after_objects = parse_manifests(changed.stdout)
    after = next(
        obj
        for obj in after_objects
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] == f"{PREFIX}-bidding"
    )["spec"]["template"]["metadata"]["annotations"]
    assert before["checksum/config"] != after["checksum/config"]
    assert before["prometheus.io/port"] == "9090"
    assert before["prometheus.io/scrape"] == "true"


def test_graceful_rollouts(combination: Rendered) -> None:
    for service in SERVICES:
        spec = deployment(combination, service)["spec"]["template"]["spec"]
        sleep = spec["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
        # the server's own graceful shutdown is 20 s (core/server.py) after the preStop sleep
        assert spec["terminationGracePeriodSeconds"] >= sleep + 20
        assert {c["topologyKey"] for c in spec["topologySpreadConstraints"]} == {
            "kubernetes.io/hostname",
            "topology.kubernetes.io/zone",
        }
        anti = spec["affinity"]["podAntiAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"
        ]
        assert {term["podAffinityTerm"]["topologyKey"] for term in anti} == {
            "kubernetes.io/hostname",
            "topology.kubernetes.io/zone",
        }


# --- the environment the code reads ---------------------------------------------------


def effective_env(result: Rendered, obj: dict[str, Any]) -> dict[str, str]:
    """Environment of a Deployment's container: envFrom ConfigMaps, then env (secret
    references become placeholders)."""
    container = obj["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        config = result.one("ConfigMap", source["configMapRef"]["name"])
        env.update(config["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = (
                "postgresql://app:secret@db:5432/app"
                if item["name"] == "DATABASE_URL"
                else f"<{ref['key']}>"
            )
    return env


def test_env_names_are_the_settings_the_code_reads(combination: Rendered) -> None:
    """Chart and code cannot drift: every variable a Deployment sets is a field of
    core.config.Settings, and together they set every field."""
    seen: set[str] = set()
    for service in SERVICES:
        names = set(effective_env(combination, deployment(combination, service)))
        unknown = names - SETTINGS_ENV
        assert not unknown, (
            f"{combination.name} {service} sets variables the code does not read: {unknown}"
        )
        seen |= names
    missing = SETTINGS_ENV - seen
    assert not missing, (
        f"{combination.name}: settings the chart never sets: {sorted(missing)} "
        "(add them to the ConfigMap or to services.<name>.settings and the schema)"
    )


@pytest.mark.parametrize("service", list(SERVICES))
def test_every_service_starts_with_the_rendered_settings(
    service: str, rendered: dict[str, Rendered]
) -> None:
    """The rendered environment parses as Settings and has what production mode requires."""
    for name in ("default", "production", "external-all"):
        env = effective_env(rendered[name], deployment(rendered[name], service))
        saved = dict(os.environ)
        try:
            os.environ.clear()
            os.environ.update(env)
            settings = Settings()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        module = load_service(service)
        settings.require(*module.REQUIRED_SETTINGS, service=service)
        assert settings.is_production_like
        assert settings.http_port == 8080
        assert settings.metrics_port == 9090
        if "redis_host" in module.REQUIRED_SETTINGS:
            assert settings.redis_cluster is True
            assert isinstance(settings.redis_password, SecretStr)


def test_seed_config_keys_map_to_env_names(rendered: dict[str, Rendered]) -> None:
    data = rendered["default"].one("ConfigMap", f"{PREFIX}-config")["data"]
    assert data["REDIS_HOST"] == f"{PREFIX}-redis"
    assert data["REDIS_PORT"] == "6379"
    assert data["KAFKA_BROKERS"] == f"{PREFIX}-kafka-kafka-bootstrap:9092"
    assert data["LOG_LEVEL"] == "INFO"
    assert data["METRICS_ENABLED"] == "true"
    env = deployment(rendered["default"], "campaigns")["spec"]["template"]["spec"]["containers"][0][
        "env"
    ]
    database = next(item for item in env if item["name"] == "DATABASE_URL")
    assert database["valueFrom"]["secretKeyRef"] == {"name": f"{PREFIX}-pg-app", "key": "uri"}
    external = rendered["external-all"].one("ConfigMap", f"{PREFIX}-config")["data"]
    assert external["REDIS_HOST"] == "redis.example.internal"
    assert external["KAFKA_BROKERS"] == COMBINATIONS["external-all"][1]["kafka.external.brokers"]


def test_secrets_only_where_needed(rendered: dict[str, Rendered]) -> None:
    default = rendered["default"]
    secret_names = {
        service: {
            item["name"]
            for item in deployment(default, service)["spec"]["template"]["spec"]["containers"][0][
                "env"
            ]
            if "valueFrom" in item
        }
        for service in SERVICES
    }
    assert secret_names == {
        "campaigns": {"DATABASE_URL", "ADMIN_API_KEY", "INTERNAL_API_KEY"},
        "bidding": {"INTERNAL_API_KEY", "TRACKING_SECRET", "REDIS_PASSWORD"},
        "analytics": {"DATABASE_URL", "ADMIN_API_KEY"},
    }
    assert not default.of_kind("Secret"), "default values must reference, not create, secrets"


# --- traffic entry ----------------------------------------------------------------------


def test_ingress_seed_settings(rendered: dict[str, Rendered]) -> None:
    ingress = rendered["ingress"].one("Ingress", PREFIX)
    annotations = ingress["metadata"]["annotations"]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert "kubernetes.io/ingress.class" not in annotations
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt-prod"
    assert annotations["nginx.ingress.kubernetes.io/limit-connections"] == "100"
    assert annotations["nginx.ingress.kubernetes.io/limit-rpm"] == "6000"
    routes = {
        (rule["host"], path["path"]): path["backend"]["service"]["name"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert routes == {
        ("api.example.com", "/campaigns"): f"{PREFIX}-campaigns",
        ("api.example.com", "/advertisers"): f"{PREFIX}-campaigns",
        ("api.example.com", "/creatives"): f"{PREFIX}-campaigns",
        ("api.example.com", "/analytics"): f"{PREFIX}-analytics",
        ("bidding.example.com", "/"): f"{PREFIX}-bidding",
    }
    assert ingress["spec"]["tls"][0]["hosts"] == ["api.example.com", "bidding.example.com"]
    assert not rendered["ingress"].of_kind("HTTPRoute")


def test_http_routes_match_the_ingress(rendered: dict[str, Rendered]) -> None:
    routes = {}
    for route in rendered["default"].of_kind("HTTPRoute"):
        (host,) = route["spec"]["hostnames"]
        for rule in route["spec"]["rules"]:
            (match,) = rule["matches"]
            (backend,) = rule["backendRefs"]
            routes[(host, match["path"]["value"])] = backend["name"]
            assert match["path"]["type"] == "PathPrefix"
            assert backend["port"] == 8080
    ingress = rendered["ingress"].one("Ingress", PREFIX)
    assert routes == {
        (rule["host"], path["path"]): path["backend"]["service"]["name"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert not any(path.startswith("/internal") for _, path in routes)
    gateway = rendered["gateway"].one("Gateway", PREFIX)
    assert (
        gateway["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt-prod"
    )
    assert {listener["hostname"] for listener in gateway["spec"]["listeners"]} == {
        "api.example.com",
        "bidding.example.com",
    }


# --- network policies -------------------------------------------------------------------


def _policies(result: Rendered) -> list[dict[str, Any]]:
    return result.of_kind("NetworkPolicy")


def test_default_deny_and_every_pod_selected(combination: Rendered) -> None:
    policies = _policies(combination)
    if not policies:
        assert COMBINATIONS[combination.name][1].get("networkPolicy.enabled") == "false"
        return
    deny = combination.one("NetworkPolicy", f"{PREFIX}-default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    specific = [p for p in policies if p["spec"]["podSelector"]]
    for where, meta, _ in combination.pod_specs():
        matching = [p for p in specific if _selects(p["spec"]["podSelector"], meta["labels"])]
        assert matching, f"{combination.name}: no NetworkPolicy allows anything for {where}"
    operator_selected = {
        key for p in specific for key in p["spec"]["podSelector"].get("matchLabels", {})
    }
    if combination.of_kind("Cluster"):
        assert "cnpg.io/cluster" in operator_selected
    if combination.of_kind("Kafka"):
        assert "strimzi.io/cluster" in operator_selected


def _component(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "adplatform",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": name,
    }


def _peer_matches(peer: dict[str, Any], labels: dict[str, str]) -> bool:
    return (
        "namespaceSelector" not in peer
        and "ipBlock" not in peer
        and _selects(peer["podSelector"], labels)
    )


def _port_matches(ports: list[dict[str, Any]] | None, port: int, named: str) -> bool:
    return ports is None or any(p["port"] in (port, named) for p in ports)


def allowed(
    result: Rendered, source: dict[str, str], target: dict[str, str], port: int, named: str = ""
) -> bool:
    """Pod-to-pod in the namespace: allowed when some policy of the source allows the
    egress and some policy of the target allows the ingress."""
    egress = ingress = False
    for policy in _policies(result):
        spec = policy["spec"]
        if _selects(spec["podSelector"], source):
            egress |= any(
                ("to" not in rule or any(_peer_matches(peer, target) for peer in rule["to"]))
                and _port_matches(rule.get("ports"), port, named)
                for rule in spec.get("egress") or []
            )
        if _selects(spec["podSelector"], target):
            ingress |= any(
                any(_peer_matches(peer, source) for peer in rule.get("from", []))
                and _port_matches(rule.get("ports"), port, named)
                for rule in spec.get("ingress") or []
            )
    return egress and ingress


PG = {"cnpg.io/cluster": f"{PREFIX}-pg"}
KAFKA = {"strimzi.io/cluster": f"{PREFIX}-kafka"}
REDIS = _component("redis")


@pytest.mark.parametrize(
    ("source", "target", "port", "named", "expected"),
    [
        ("bidding", "campaigns", 8080, "http", True),  # snapshot
        ("bidding", "analytics", 8080, "http", False),
        ("campaigns", "bidding", 8080, "http", False),
        ("analytics", "campaigns", 8080, "http", False),
        ("test", "campaigns", 8080, "http", True),
        ("test", "analytics", 8080, "http", True),
        ("campaigns", "campaigns", 9090, "metrics", False),
        ("bidding", REDIS, 6379, "", True),
        ("campaigns", REDIS, 6379, "", False),
        ("redis-init", REDIS, 6379, "", True),
        (REDIS, REDIS, 16379, "", True),
        ("campaigns", PG, 5432, "", True),
        ("analytics", PG, 5432, "", True),
        ("migrate", PG, 5432, "", True),
        ("bidding", PG, 5432, "", False),
        ("bidding", KAFKA, 9092, "", True),
        ("campaigns", KAFKA, 9092, "", True),
        ("analytics", KAFKA, 9092, "", True),
        ("migrate", KAFKA, 9092, "", False),
        ("test", PG, 5432, "", False),
    ],
)
def test_network_policies_allow_only_real_traffic(
    source: str | dict[str, str],
    target: str | dict[str, str],
    port: int,
    named: str,
    expected: bool,
    rendered: dict[str, Rendered],
) -> None:
    src = _component(source) if isinstance(source, str) else source
    dst = _component(target) if isinstance(target, str) else target
    assert allowed(rendered["default"], src, dst, port, named) is expected


def test_network_policies_admit_gateway_and_prometheus(rendered: dict[str, Rendered]) -> None:
    default = rendered["default"]
    for service in SERVICES:
        policy = default.one("NetworkPolicy", f"{PREFIX}-{service}")["spec"]
        sources = {
            (str(rule["from"][0].get("namespaceSelector")), rule["ports"][0]["port"])
            for rule in policy["ingress"]
            if "namespaceSelector" in rule["from"][0]
        }
        monitoring = str({"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}})
        gateway = str({"matchLabels": {"kubernetes.io/metadata.name": "gateway-system"}})
        assert (monitoring, "metrics") in sources
        assert (gateway, "http") in sources, service
    dns = default.one("NetworkPolicy", f"{PREFIX}-dns")["spec"]
    assert dns["podSelector"] == {}
    assert {p["port"] for p in dns["egress"][0]["ports"]} == {53}


# --- RBAC -------------------------------------------------------------------------------


def test_no_role_unless_asked_and_no_secret_listing(rendered: dict[str, Rendered]) -> None:
    for result in rendered.values():
        assert not result.of_kind("Role"), result.name
        assert not result.of_kind("ClusterRole"), result.name
    granted = render(
        sets={
            "services.analytics.rbacRules[0].apiGroups[0]": "",
            "services.analytics.rbacRules[0].resources[0]": "configmaps",
            "services.analytics.rbacRules[0].resourceNames[0]": "adplatform-config",
            "services.analytics.rbacRules[0].verbs[0]": "get",
        }
    )
    assert granted.returncode == 0, granted.stderr
    assert "kind: Role\n" in granted.stdout
    assert "kind: RoleBinding" in granted.stdout
    refused = render(
        sets={
            "services.analytics.rbacRules[0].apiGroups[0]": "",
            "services.analytics.rbacRules[0].resources[0]": "secrets",
            "services.analytics.rbacRules[0].verbs[0]": "list",
        }
    )
    assert refused.returncode != 0
    assert "secrets" in refused.stderr
    assert "resourceNames" in refused.stderr


# --- hooks and the data tier ------------------------------------------------------------


def test_migration_hook_timing(rendered: dict[str, Rendered]) -> None:
    def hooks(result: Rendered) -> str:
        job = result.one("Job", f"{PREFIX}-migrate")
        assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
        return str(job["metadata"]["annotations"]["helm.sh/hook"])

    # The chart's own database cannot exist before install: migrate after it.
    assert hooks(rendered["default"]) == "post-install,pre-upgrade"
    assert hooks(rendered["external-postgres"]) == "pre-install,pre-upgrade"
    account = rendered["external-postgres"].one("ServiceAccount", f"{PREFIX}-migrate")
    assert account["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    test_pod = rendered["default"].one("Pod", f"{PREFIX}-test")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    urls = test_pod["spec"]["containers"][0]["args"][1:]
    assert urls == [f"http://{PREFIX}-{name}:8080/health/ready" for name in sorted(SERVICES)]


def test_postgres_cluster(rendered: dict[str, Rendered]) -> None:
    spec = rendered["default"].one("Cluster", f"{PREFIX}-pg")["spec"]
    assert spec["instances"] == 3
    assert spec["postgresql"]["synchronous"] == {
        "method": "any",
        "number": 1,
        "dataDurability": "required",
    }
    assert spec["affinity"]["podAntiAffinityType"] == "required"
    assert not rendered["external-postgres"].of_kind("Cluster")


def test_kafka_cluster(rendered: dict[str, Rendered]) -> None:
    default = rendered["default"]
    kafka = default.one("Kafka", f"{PREFIX}-kafka")
    assert kafka["apiVersion"] == "kafka.strimzi.io/v1"
    config = kafka["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == 3
    assert config["min.insync.replicas"] == 2
    pools = {pool["metadata"]["name"]: pool["spec"] for pool in default.of_kind("KafkaNodePool")}
    assert {name: (spec["replicas"], spec["roles"]) for name, spec in pools.items()} == {
        "controllers": (3, ["controller"]),
        "brokers": (3, ["broker"]),
    }
    for pool in default.of_kind("KafkaNodePool"):
        assert pool["metadata"]["labels"]["strimzi.io/cluster"] == f"{PREFIX}-kafka"
    topics = {topic["spec"]["topicName"]: topic["spec"] for topic in default.of_kind("KafkaTopic")}
    assert set(topics) == set(TOPICS)
    for spec in topics.values():
        assert spec["replicas"] == 3
        assert spec["config"]["min.insync.replicas"] == 2
    assert not rendered["external-kafka"].of_kind("Kafka")


def test_redis_cluster(rendered: dict[str, Rendered]) -> None:
    default = rendered["default"]
    statefulset = default.one("StatefulSet", f"{PREFIX}-redis")
    assert statefulset["spec"]["replicas"] == 6
    redis = statefulset["spec"]["template"]["spec"]["containers"][0]
    assert {port["name"]: port["containerPort"] for port in redis["ports"]} == {
        "redis": 6379,
        "cluster-bus": 16379,
    }
    config = default.one("ConfigMap", f"{PREFIX}-redis")["data"]
    assert "appendonly yes" in config["redis.conf"]
    assert "cluster-enabled yes" in config["redis.conf"]
    job = default.one("Job", f"{PREFIX}-redis-init")
    env = {
        item["name"]: item.get("value")
        for item in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    nodes = env["REDIS_NODES"].split()
    assert nodes == [
        f"{PREFIX}-redis-{i}.{PREFIX}-redis-headless.{NAMESPACE}.svc:6379" for i in range(6)
    ]
    assert env["REDIS_REPLICAS"] == "1"
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    headless = default.one("Service", f"{PREFIX}-redis-headless")["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["publishNotReadyAddresses"] is True
    assert not rendered["external-redis"].of_kind("StatefulSet")


def test_the_chart_never_renders_its_namespace(combination: Rendered) -> None:
    """Helm stores the release in its namespace before it creates any object and will not
    adopt an existing Namespace, so a chart-rendered release Namespace cannot work: the
    namespace is created and labelled beforehand (README, deploy/helm/deploy.sh)."""
    assert not combination.of_kind("Namespace"), combination.name


def test_deploy_script_labels_the_namespace_restricted() -> None:
    script = (CHART.parent / "deploy.sh").read_text()
    (create,) = [line for line in script.splitlines() if "kubectl create namespace" in line]
    assert "kubectl get namespace" in create, "create only when missing"
    labelling = script[script.index("kubectl label namespace") :].split("\n\n")[0]
    assert "--overwrite" in labelling
    for mode in ("enforce", "audit", "warn"):
        assert f"pod-security.kubernetes.io/{mode}=restricted" in labelling, mode
    assert script.index("kubectl label namespace") < script.index("helm upgrade --install")


def test_generated_secrets_have_every_key(rendered: dict[str, Rendered]) -> None:
    (secret,) = [
        s
        for s in rendered["everything-on"].of_kind("Secret")
        if s["metadata"]["name"] == f"{PREFIX}-secrets"
    ]
    assert set(secret["data"]) == {
        "ADMIN_API_KEY",
        "INTERNAL_API_KEY",
        "TRACKING_SECRET",
        "REDIS_PASSWORD",
    }
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_every_pod_says_it_is_part_of_adplatform(combination: Rendered) -> None:
    """`app.kubernetes.io/part-of` is what the alert scope and dashboards select on: it
    must hold even when `nameOverride` renames the chart's objects."""
    missing = [
        name
        for name, meta, _ in combination.pod_specs()
        if meta.get("labels", {}).get("app.kubernetes.io/part-of") != "adplatform"
    ]
    assert not missing, f"pods without app.kubernetes.io/part-of=adplatform: {missing}"
