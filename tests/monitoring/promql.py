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


# --- label matchers and the label values the services emit ------------------------------


@dataclass(frozen=True)
class Matcher:
    metric: str  # the selector's metric name ("" when it has none)
    label: str
    op: str  # =, !=, =~ or !~
    value: str


def _unquote(token: str) -> str:
    if token.startswith("`"):
        return token[1:-1]
    return re.sub(
        r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), token[1:-1]
    )


def label_matchers(expr: str) -> list[Matcher]:
    """Every `label op "value"` of every selector in an expression, with the metric
    it selects (`name{...}`, or `{__name__="name", ...}`)."""
    tokens = _tokens(expr)
    found: list[Matcher] = []
    for index, (kind, text) in enumerate(tokens):
        if not (kind == "punct" and text == "{"):
            continue
        metric = ""
        if index > 0 and tokens[index - 1][0] == "ident":
            metric = tokens[index - 1][1]
        pairs: list[tuple[str, str, str]] = []
        cursor = index + 1
        while cursor < len(tokens) and tokens[cursor][1] != "}":
            if tokens[cursor][0] != "ident":
                cursor += 1
                continue
            label = tokens[cursor][1]
            op = ""
            cursor += 1
            while cursor < len(tokens) and tokens[cursor][0] == "other":
                op += tokens[cursor][1]
                cursor += 1
            if cursor < len(tokens) and tokens[cursor][0] == "string" and op:
                pairs.append((label, op, _unquote(tokens[cursor][1])))
            cursor += 1
        for label, op, value in pairs:
            if label == "__name__" and op == "=" and not metric:
                metric = value
        found.extend(
            Matcher(metric, name, op, value) for name, op, value in pairs if name != "__name__"
        )
    return found


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+\S+")
_LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

LabelValues = dict[str, dict[str, set[str]]]
"""series name -> label name -> the values it takes"""


def exposed_label_values(text: str) -> LabelValues:
    """The label values of every sample of a /metrics page, by series name."""
    values: LabelValues = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or line.startswith("#"):
            continue
        labels = values.setdefault(match.group(1), {})
        for name, value in _LABEL_PAIR.findall(match.group(2) or ""):
            labels.setdefault(name, set()).add(re.sub(r"\\(.)", r"\1", value))
    return values


def code_label_values() -> LabelValues:
    """The label values the code can emit, from its enumerations: for labelled series
    that a short run of `adplatform dev` may not have produced yet (a 5xx status, a
    dropped event)."""
    from adplatform.bidding import metrics as bidding
    from adplatform.core.events import AD_EVENTS_TOPIC, CAMPAIGN_UPDATES_TOPIC
    from adplatform.core.server import SERVICES

    topics = {AD_EVENTS_TOPIC, CAMPAIGN_UPDATES_TOPIC}
    services = set(SERVICES)
    http = {
        "service": services,
        "status": {str(code) for code in range(100, 600)},
        "method": {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"},
    }
    values: LabelValues = {
        "adplatform_service_info": {"service": services},
        "http_requests_total": http,
        "bid_requests_total": {"outcome": set(bidding.OUTCOMES)},
        "bid_settlements_total": {"result": set(bidding.SETTLEMENT_RESULTS)},
        "tracking_events_total": {
            "type": set(bidding.TRACKING_TYPES),
            "result": set(bidding.TRACKING_RESULTS),
        },
    }
    for suffix in ("_bucket", "_sum", "_count"):
        values[f"http_request_duration_seconds{suffix}"] = {"service": services}
    for name in ("published", "publish_failures", "dropped", "consumed"):
        values[f"events_{name}_total"] = {"topic": topics}
    values["event_consumer_lag_messages"] = {"topic": topics}
    return values


def merge_label_values(*sources: LabelValues) -> LabelValues:
    merged: LabelValues = {}
    for source in sources:
        for series, labels in source.items():
            into = merged.setdefault(series, {})
            for label, found in labels.items():
                into.setdefault(label, set()).update(found)
    return merged


# Labels the scrape adds (target labels), not the services: their values depend on the
# install, so they are not checked.
TARGET_LABELS = frozenset(
    {"namespace", "pod", "instance", "job", "node", "app", "container", "endpoint", "service"}
)
# An `=~` value that is only a list of alternatives (bid|nobid): each must be emitted.
_LITERALS = re.compile(r"[A-Za-z0-9_/:-]+(?:\|[A-Za-z0-9_/:-]+)*")


def _recorded_sources() -> dict[str, set[str]]:
    sources: dict[str, set[str]] = {}
    for document in rule_documents().values():
        for group in document.get("groups", []):
            for rule in group.get("rules", []):
                if "record" in rule:
                    sources.setdefault(rule["record"], set()).update(
                        metric_names(str(rule["expr"]))
                    )
    return sources


def _domain(
    series: str, label: str, emitted: LabelValues, recorded: dict[str, set[str]], seen: set[str]
) -> set[str] | None:
    """The values `label` takes on `series` (a recorded series: on the series it is
    recorded from); None when the label is not one of the series' own."""
    if series in emitted:
        return emitted[series].get(label)
    if series in recorded and series not in seen:
        found: set[str] | None = None
        for source in recorded[series]:
            values = _domain(source, label, emitted, recorded, seen | {series})
            if values is not None:
                found = (found or set()) | values
        return found
    return None


def label_value_problems(
    queries: list[Query], emitted: LabelValues, recorded: dict[str, set[str]] | None = None
) -> list[str]:
    """Matchers on the services' own series (and series recorded from them) whose
    label the services do not emit on that series, or whose value (`=`, `!=`; each
    alternative of an `=~`/`!~` list of literals; any other regex) matches none of
    the values the services emit. Other series (exporters, Prometheus) are skipped."""
    recorded = _recorded_sources() if recorded is None else recorded
    problems: list[str] = []
    for query in queries:
        for matcher in label_matchers(query.expr):
            if matcher.metric not in emitted and matcher.metric not in recorded:
                continue
            domain = _domain(matcher.metric, matcher.label, emitted, recorded, set())
            where = (
                f"{query.origin}: {matcher.metric}{{{matcher.label}{matcher.op}{matcher.value!r}}}"
            )
            if domain is None:
                if matcher.label not in TARGET_LABELS:
                    problems.append(f"{where}: the services emit no label {matcher.label!r} there")
                continue
            if matcher.op == "!=" and matcher.value == "":
                wrong = []  # `label!=""`: the label is there, which it is
            elif matcher.op in ("=", "!="):
                wrong = [] if matcher.value in domain else [matcher.value]
            elif _LITERALS.fullmatch(matcher.value):
                wrong = [v for v in matcher.value.split("|") if v not in domain]
            else:
                pattern = re.compile(matcher.value)
                wrong = [] if any(pattern.fullmatch(v) for v in domain) else [matcher.value]
            if wrong:
                known = ", ".join(sorted(domain)[:12]) + (", ..." if len(domain) > 12 else "")
                problems.append(f"{where}: {', '.join(map(repr, wrong))} is not among {known}")
    return problems
