"""The alert and recording rules: promtool's checks and unit tests, and the
conventions every alert follows (labels, annotations, runbooks, test cases)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.common import PROJECT_ROOT
from tests.infra.prometheus import RULES_DIR, promtool_binary, rule_files

RULE_TESTS_DIR = RULES_DIR / "tests"
RUNBOOKS = PROJECT_ROOT / "docs" / "runbooks"
RUNBOOK_BASE = "https://github.com/adplatform/adplatform/blob/main/docs/runbooks/"
SEVERITIES = {"critical", "warning"}
RUNBOOK_SECTIONS = ("## Meaning", "## How to check", "## How to fix")


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, rule)
        for path in rule_files()
        for group in load(path)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


ALERTS = sorted({rule["alert"] for _, rule in alert_rules()})


def rule_tests() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, test)
        for path in sorted(RULE_TESTS_DIR.glob("*.yaml"))
        for test in load(path)["tests"]
    ]


def test_promtool_check_rules() -> None:
    result = subprocess.run(
        [promtool_binary(), "check", "rules", *map(str, rule_files())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(rule_files())


def test_promtool_unit_tests() -> None:
    files = sorted(RULE_TESTS_DIR.glob("*.yaml"))
    assert files
    result = subprocess.run(
        [promtool_binary(), "test", "rules", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=RULE_TESTS_DIR,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files), result.stdout


def test_every_rule_file_has_a_test_file() -> None:
    tested = {
        (RULE_TESTS_DIR / name).resolve()
        for path in RULE_TESTS_DIR.glob("*.yaml")
        for name in load(path)["rule_files"]
    }
    assert {p.resolve() for p in rule_files()} <= tested


def test_rule_names_are_unique() -> None:
    seen: dict[str, Path] = {}
    for path in rule_files():
        for group in load(path)["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule["record"]
                if "record" in rule:
                    assert name not in seen, f"{name} recorded in {seen.get(name)} and {path}"
                    seen[name] = path
    assert len(ALERTS) == len([r for _, r in alert_rules()]), "an alert name is used twice"


@pytest.mark.parametrize("alert", ALERTS)
def test_alert_conventions(alert: str) -> None:
    path, rule = next((p, r) for p, r in alert_rules() if r["alert"] == alert)
    labels = rule.get("labels", {})
    annotations = rule.get("annotations", {})
    assert labels.get("severity") in SEVERITIES, f"{path.name}: {alert} severity"
    for key in ("summary", "description", "runbook_url"):
        assert str(annotations.get(key, "")).strip(), f"{path.name}: {alert} has no {key}"
    assert annotations["runbook_url"] == f"{RUNBOOK_BASE}{alert}.md"
    # A `service` label, static or produced by the expression, so Alertmanager can
    # group and inhibit by it: the promtool cases show the expression's labels.
    firing = [labels for labels, _ in expected_alerts(alert)]
    assert firing, f"no promtool case where {alert} fires"
    assert all("service" in exp for exp in firing), f"{alert} lacks a service label"


@pytest.mark.parametrize("alert", ALERTS)
def test_alert_has_a_runbook(alert: str) -> None:
    runbook = RUNBOOKS / f"{alert}.md"
    assert runbook.is_file(), f"missing {runbook.relative_to(PROJECT_ROOT)}"
    text = runbook.read_text()
    assert text.startswith(f"# {alert}\n"), f"{runbook.name} must start with '# {alert}'"
    for section in RUNBOOK_SECTIONS:
        assert section in text, f"{runbook.name} has no '{section}' section"


def test_no_runbook_without_an_alert() -> None:
    orphans = {p.stem for p in RUNBOOKS.glob("*.md")} - set(ALERTS) - {"README"}
    assert not orphans, f"runbooks for alerts that do not exist: {sorted(orphans)}"


def expected_alerts(alert: str) -> list[tuple[dict[str, str], dict[str, str]]]:
    """(labels, annotations) of every firing case promtool checks for `alert`."""
    return [
        (case["exp_labels"], case.get("exp_annotations", {}))
        for _, test in rule_tests()
        for check in test.get("alert_rule_test", [])
        if check["alertname"] == alert
        for case in check.get("exp_alerts") or []
    ]


@pytest.mark.parametrize("alert", ALERTS)
def test_alert_has_firing_and_silent_cases(alert: str) -> None:
    """At least one case where it fires, labels and all three annotations checked,
    and one where it must not."""
    rule = next(r for _, r in alert_rules() if r["alert"] == alert)
    firing = expected_alerts(alert)
    assert firing, f"no promtool case where {alert} fires"
    for labels, checked in firing:
        assert labels.get("severity") == rule["labels"]["severity"]
        assert set(checked) >= {"summary", "description", "runbook_url"}, (
            f"{alert}: a firing case must check summary, description and runbook_url"
        )
    silent = [
        check
        for _, test in rule_tests()
        for check in test.get("alert_rule_test", [])
        if check["alertname"] == alert and not check.get("exp_alerts")
    ]
    assert silent, f"no promtool case where {alert} must stay silent"


def test_aggregations_keep_namespace() -> None:
    """One Prometheus may watch several installs: an alert must not add them up."""
    for path, rule in alert_rules():
        for by in re.findall(r"\bby\s*\(([^)]*)\)", str(rule["expr"])):
            labels = {label.strip() for label in by.split(",")}
            assert "namespace" in labels, f"{path.name}: {rule['alert']} sums over namespaces"
