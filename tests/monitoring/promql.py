"""Every PromQL query the project ships, and the metric names each one reads.

Sources: the rule files, the Grafana dashboards (panel targets and variable
queries), the prometheus-adapter rules and the KEDA Prometheus triggers of the
rendered chart. Template syntax (Grafana's `$__rate_interval`, `$namespace`; the
adapter's `<<.Series>>`) is replaced by concrete values first, so each query is one
a Prometheus can run as it is.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.infra.common import PROJECT_ROOT, require

MONITORING = PROJECT_ROOT / "deploy" / "monitoring"
RULES_DIR = MONITORING / "rules"
DASHBOARDS_DIR = MONITORING / "dashboards"
ADAPTER_VALUES = MONITORING / "prometheus-adapter" / "values.yaml"
CHART = PROJECT_ROOT / "deploy" / "helm" / "adplatform"


@dataclass(frozen=True)
class Query:
    origin: str  # file and place, for messages
    expr: str


# --- metric names in an expression --------------------------------------------------

_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "atan2",
    "inf",
    "nan",
    "start",
    "end",
}
_AGGREGATIONS = {
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
}
_LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_TOKEN = re.compile(
    r"""
      (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<range>\[[^\]]*\])
    | (?P<duration>(?:\d+(?:ms|s|m|h|d|w|y))+(?![a-zA-Z0-9_:]))
    | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
    | (?P<punct>[{}(),@])
    | (?P<other>\S)
    """,
    re.VERBOSE,
)


def _tokens(expr: str) -> list[tuple[str, str]]:
    expr = re.sub(r"#[^\n]*", "", expr)  # PromQL comments
    return [
        (match.lastgroup or "other", match.group())
        for match in _TOKEN.finditer(expr)
        if match.lastgroup is not None
    ]


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (by name or by `__name__="..."`)."""
    tokens = _tokens(expr)
    names: set[str] = set()
    index = 0
    while index < len(tokens):
        kind, text = tokens[index]
        following = tokens[index + 1][1] if index + 1 < len(tokens) else ""
        if kind == "punct" and text == "{":
            # label matchers: name op "value" pairs up to the closing brace
            end = index + 1
            while end < len(tokens) and tokens[end][1] != "}":
                if (
                    tokens[end][1] == "__name__"
                    and end + 2 < len(tokens)
                    and tokens[end + 2][0] == "string"
                ):
                    names.add(tokens[end + 2][1][1:-1])
                end += 1
            index = end + 1
            continue
        if kind == "ident":
            lowered = text.lower()
            if lowered in _LABEL_LIST_KEYWORDS and following == "(":
                # by (a, b) / on (a) / group_left (a): a list of label names
                end = index + 2
                while end < len(tokens) and tokens[end][1] != ")":
                    end += 1
                index = end + 1
                continue
            aggregation = lowered in _AGGREGATIONS and following.lower() in ("by", "without")
            if lowered not in _KEYWORDS and following != "(" and not aggregation:
                names.add(text)
        index += 1
    return names


# --- Grafana and adapter templating ---------------------------------------------------

GRAFANA_VALUES = {
    "__rate_interval": "1m",
    "__interval": "30s",
    "__range": "1h",
    "__range_s": "3600",
    "__interval_ms": "30000",
}


def grafana_expr(expr: str, variables: dict[str, str]) -> str:
    """Replace `$var`, `${var}` and `[[var]]` with test values."""
    values = {**GRAFANA_VALUES, **variables}

    def value(name: str) -> str:
        if name not in values:
            raise KeyError(f"undefined dashboard variable ${name} in {expr!r}")
        return values[name]

    expr = re.sub(r"\$\{(\w+)(?::\w+)?\}", lambda m: value(m.group(1)), expr)
    expr = re.sub(r"\[\[(\w+)\]\]", lambda m: value(m.group(1)), expr)
    return re.sub(r"\$(\w+)", lambda m: value(m.group(1)), expr)


def label_values_query(query: str) -> str | None:
    """`label_values(metric{...}, label)` as a PromQL query over the same series."""
    match = re.fullmatch(r"\s*label_values\((.+),\s*(\w+)\s*\)\s*", query)
    if match is None:
        return None
    return f"group by ({match.group(2)}) ({match.group(1)})"


def adapter_expr(template: str, series: str) -> str:
    """A prometheus-adapter metricsQuery with its Go template fields filled in."""
    return (
        template.replace("<<.Series>>", series)
        .replace("<<.LabelMatchers>>", 'namespace="default"')
        .replace("<<.GroupBy>>", "namespace, pod")
    )


# --- the sources ----------------------------------------------------------------------


def rule_documents() -> dict[Path, dict[str, Any]]:
    return {path: yaml.safe_load(path.read_text()) for path in sorted(RULES_DIR.glob("*.yaml"))}


def recorded_names() -> set[str]:
    return {
        rule["record"]
        for document in rule_documents().values()
        for group in document.get("groups", [])
        for rule in group.get("rules", [])
        if "record" in rule
    }


def rule_queries() -> Iterator[Query]:
    for path, document in rule_documents().items():
        for group in document.get("groups", []):
            for rule in group.get("rules", []):
                name = rule.get("alert") or rule.get("record")
                yield Query(f"{path.name}: {name}", str(rule["expr"]))


def dashboard_queries() -> Iterator[Query]:
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        board = json.loads(path.read_text())
        variables: dict[str, str] = {}
        for var in board.get("templating", {}).get("list", []):
            if var.get("type") == "datasource":
                variables[var["name"]] = "prometheus"
                continue
            variables[var["name"]] = var.get("allValue") or ".*"
            raw = var.get("query")
            text = raw.get("query") if isinstance(raw, dict) else raw
            if var.get("type") == "query" and text:
                expr = label_values_query(str(text)) or str(text)
                yield Query(f"{path.name}: variable {var['name']}", expr)
        for panel in _panels(board.get("panels", [])):
            for target in panel.get("targets", []):
                if "expr" in target:
                    yield Query(
                        f"{path.name}: {panel.get('title')} [{target.get('refId')}]",
                        grafana_expr(str(target["expr"]), variables),
                    )


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def adapter_queries() -> Iterator[Query]:
    if not ADAPTER_VALUES.exists():
        return
    values = yaml.safe_load(ADAPTER_VALUES.read_text()) or {}
    rules = values.get("rules", {})
    for kind in ("custom", "external"):
        for index, rule in enumerate(rules.get(kind) or []):
            series_query = str(rule["seriesQuery"])
            origin = f"prometheus-adapter/{ADAPTER_VALUES.name}: rules.{kind}[{index}]"
            yield Query(f"{origin}.seriesQuery", series_query)
            series = series_query.split("{", 1)[0].strip()
            if "metricsQuery" in rule:
                yield Query(
                    f"{origin}.metricsQuery", adapter_expr(str(rule["metricsQuery"]), series)
                )


def helm_binary() -> str:
    local = PROJECT_ROOT / ".cache" / "bin" / "helm"
    return require(
        str(local) if local.exists() else "helm",
        "scripts/install-test-deps.sh (the chart helper installs Helm into .cache/bin)",
    )


def keda_queries() -> Iterator[Query]:
    """The KEDA Prometheus triggers of the chart, rendered with the keda engine for
    the default, staging and production values."""
    if not CHART.exists():
        return
    helm = helm_binary()
    for values in (None, "values-staging.yaml", "values-production.yaml"):
        args = [helm, "template", "adplatform", str(CHART), "--set", "autoscalingEngine=keda"]
        if values:
            if not (CHART / values).exists():
                continue
            args += ["-f", str(CHART / values)]
        rendered = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True)
        for document in yaml.safe_load_all(rendered.stdout):
            if not document or document.get("kind") != "ScaledObject":
                continue
            for trigger in document["spec"].get("triggers", []):
                if trigger.get("type") == "prometheus":
                    yield Query(
                        f"chart ({values or 'values.yaml'}) ScaledObject "
                        f"{document['metadata']['name']}: {trigger.get('name')}",
                        str(trigger["metadata"]["query"]),
                    )


def all_queries() -> list[Query]:
    return [*rule_queries(), *dashboard_queries(), *adapter_queries(), *keda_queries()]
