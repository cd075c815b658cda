"""values.schema.json rejects what would deploy something else than meant: unknown keys
(typos), wrong types, impossible numbers; Helm stops with a message naming the value."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from adplatform.core.events import TOPICS
from tests.chart.conftest import CHART, VALUES_FILES, run_helm

SCHEMA = json.loads((CHART / "values.schema.json").read_text())

BAD_VALUES = {
    "typo in a top-level key": ("domian: example.org\n", "domian"),
    "typo in a service key": ("services:\n  bidding:\n    replicsa: 4\n", "replicsa"),
    "typo in a setting name": (
        "services:\n  bidding:\n    settings:\n      BID_TIMEOUT: 80\n",
        "BID_TIMEOUT",
    ),
    "wrong type": ("services:\n  campaigns:\n    replicas: three\n", "replicas"),
    "negative replicas": ("services:\n  campaigns:\n    replicas: -1\n", "replicas"),
    "negative minReplicas": (
        "services:\n  bidding:\n    autoscaling:\n      minReplicas: -5\n",
        "minReplicas",
    ),
    "latest tag": ("image:\n  tag: latest\n", "tag"),
    "unknown autoscaling engine": ("autoscalingEngine: vpa\n", "autoscalingEngine"),
    "bad resource quantity": (
        "services:\n  bidding:\n    resources:\n      limits: {cpu: lots, memory: 1Gi}\n",
        "cpu",
    ),
    "weakened durability typo": (
        "postgres:\n  cluster:\n    synchronous:\n      dataDurability: sometimes\n",
        "dataDurability",
    ),
    "runbook base not a URL": ("monitoring:\n  runbookBaseUrl: docs/runbooks\n", "runbookBaseUrl"),
    "namespace.create (removed: Helm cannot create its release namespace)": (
        "namespace:\n  create: true\n",
        "namespace",
    ),
    "unknown Kafka topic": (
        "kafka:\n  topics:\n    ad-event: {partitions: 3, replicas: 3, config: {}}\n",
        "ad-event",
    ),
    "setting out of range": (
        "services:\n  bidding:\n    settings:\n      BID_TIMEOUT_MS: 1\n",
        "BID_TIMEOUT_MS",
    ),
}


@pytest.mark.parametrize("binary", ["helm", "helm4"])
@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_values_are_rejected_by_helm(case: str, binary: str, tmp_path: Path) -> None:
    content, named = BAD_VALUES[case]
    values = tmp_path / "bad.yaml"
    values.write_text(content)
    result = run_helm("lint", "--strict", str(CHART), "-f", str(values), binary=binary)
    assert result.returncode != 0, f"{case} was accepted by {binary}:\n{result.stdout}"
    output = result.stdout + result.stderr
    assert "values don't meet the specifications of the schema" in output, output
    assert named in output, f"the message should name {named!r}:\n{output}"
    rendered = run_helm("template", "x", str(CHART), "-f", str(values), binary=binary)
    assert rendered.returncode != 0
    assert named in rendered.stderr


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_shipped_values_files_pass_the_schema(values_file: str) -> None:
    """The same check in Python: each shipped file merged over values.yaml validates."""
    base = yaml.safe_load((CHART / "values.yaml").read_text())
    merged = _merge(base, yaml.safe_load((CHART / values_file).read_text()) or {})
    jsonschema.Draft202012Validator(SCHEMA).validate(merged)


def test_schema_topics_are_the_topics_the_code_uses() -> None:
    """kafka.topics accepts exactly the code's topics, all required: a typo'd or extra
    topic would be a KafkaTopic nothing reads, a missing one a topic nothing creates."""
    topics = SCHEMA["properties"]["kafka"]["properties"]["topics"]
    assert topics["additionalProperties"] is False
    assert set(topics["properties"]) == set(topics["required"]) == set(TOPICS)


def test_schema_rejects_unknown_keys_everywhere() -> None:
    """Every object in the schema that lists properties closes them (additionalProperties)."""
    open_objects = []

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            if "properties" in node and node.get("additionalProperties") is not False:
                open_objects.append(path)
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}/{i}")

    walk(SCHEMA, "#")
    assert not open_objects, open_objects


def test_every_values_key_has_a_comment() -> None:
    """values.yaml documents every key with a comment line directly above it; only the
    entries of free-form maps (postgresql parameters, Kafka configs, rewrites) are exempt."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "- ")) or ":" not in stripped:
            continue
        if not lines[number - 1].strip().startswith("#") and not _in_free_form_map(lines, number):
            undocumented.append(f"{number + 1}: {stripped}")
    assert not undocumented, "values.yaml keys without a comment:\n" + "\n".join(undocumented)


FREE_FORM_MAPS = {"parameters", "config", "pathRewrites"}


def _in_free_form_map(lines: list[str], number: int) -> bool:
    indent = len(lines[number]) - len(lines[number].lstrip())
    for line in reversed(lines[:number]):
        if (
            line.strip()
            and not line.strip().startswith("#")
            and len(line) - len(line.lstrip()) < indent
        ):
            return line.strip().rstrip(":") in FREE_FORM_MAPS
    return False


def _merge(base: dict[str, object], override: dict[str, object]) -> dict[str, object]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)  # type: ignore[arg-type]
        else:
            out[key] = value
    return out
