"""Policy scan of the rendered manifests with checkov: zero failed checks beyond the
skips listed, with their reasons, in checkov-skips.yaml."""

from __future__ import annotations

import fnmatch
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.chart.conftest import CACHE, INSTALL_HINT, Rendered
from tests.infra.common import require

SKIPS_FILE = Path(__file__).with_name("checkov-skips.yaml")
SCANNED = (
    "default",
    "staging",
    "production",
    "keda",
    "production-keda",
    "gateway",
    "no-autoscaling",
    "everything-on",
    "external-all",
    "ingress",
)


def checkov_failures(directory: Path) -> list[tuple[str, str]]:
    """(check id, Kind/name) of every failed check in the manifests of `directory`."""
    checkov = require(str(CACHE / "checkov-venv" / "bin" / "checkov"), INSTALL_HINT)
    result = subprocess.run(
        [checkov, "--directory", str(directory), "--framework", "kubernetes",
         "--output", "json", "--quiet", "--skip-download"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    report: Any = json.loads(result.stdout) if result.stdout.strip() else []
    reports = report if isinstance(report, list) else [report]
    failures = []
    for entry in reports:
        for check in entry.get("results", {}).get("failed_checks", []):
            kind, _namespace, name = check["resource"].split(".", 2)
            failures.append((check["check_id"], f"{kind}/{name}"))
    return failures


def test_checkov_finds_nothing_beyond_the_listed_skips(
    tmp_path: Path, rendered: dict[str, Rendered]
) -> None:
    for name in SCANNED:
        (tmp_path / f"{name}.yaml").write_text(rendered[name].text)
    skips = yaml.safe_load(SKIPS_FILE.read_text())
    for skip in skips:
        assert skip["reason"].strip(), f"{skip['check']} needs a reason"
    failures = checkov_failures(tmp_path)
    assert failures, "checkov reported no failure at all: is it scanning the manifests?"
    used = set()
    unexpected = []
    for check, resource in failures:
        matching = [
            i
            for i, skip in enumerate(skips)
            if skip["check"] == check
            and any(fnmatch.fnmatch(resource, pattern) for pattern in skip["resources"])
        ]
        used.update(matching)
        if not matching:
            unexpected.append(f"{check} {resource}")
    assert not unexpected, "checkov failed checks not listed in checkov-skips.yaml:\n" + "\n".join(
        sorted(set(unexpected))
    )
    stale = [skips[i]["check"] for i in range(len(skips)) if i not in used]
    assert not stale, f"skips that match nothing any more (remove them): {stale}"
