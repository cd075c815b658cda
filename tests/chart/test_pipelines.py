"""The product's own CI/CD definitions and shell scripts, checked offline: actionlint
(with shellcheck on every `run:` step) for the GitHub workflow, shellcheck for the
chart's scripts, and the pipeline facts that matter (staging before production,
production only after a manual approval, the image deployed by its digest)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.chart.conftest import CACHE, CHART, INSTALL_HINT
from tests.infra.common import PROJECT_ROOT, require

WORKFLOW = PROJECT_ROOT / ".github" / "workflows" / "ci.yml"
GITLAB = PROJECT_ROOT / ".gitlab-ci.yml"
SHELLCHECK = CACHE / "checkov-venv" / "bin" / "shellcheck"
SCRIPTS = {
    "sh": [CHART / "files" / "redis-start.sh", CHART / "files" / "redis-cluster-init.sh"],
    "bash": [
        CHART.parent / "deploy.sh",
        PROJECT_ROOT / "scripts" / "install-test-deps.d" / "chart.sh",
    ],
}


def test_actionlint_clean() -> None:
    actionlint = require(str(CACHE / "bin" / "actionlint"), INSTALL_HINT)
    require(str(SHELLCHECK), INSTALL_HINT)
    result = subprocess.run(
        [actionlint, "-shellcheck", str(SHELLCHECK), str(WORKFLOW)],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shell_scripts_shellcheck_clean() -> None:
    shellcheck = require(str(SHELLCHECK), INSTALL_HINT)
    for shell, scripts in SCRIPTS.items():
        result = subprocess.run(
            [shellcheck, "--shell", shell, *map(str, scripts)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_github_deploys_staging_then_production_with_approval() -> None:
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    assert set(jobs) == {"test", "image", "chart", "deploy-staging", "deploy-production"}
    assert jobs["image"]["needs"] == "test"
    assert set(jobs["deploy-staging"]["needs"]) == {"image", "chart"}
    assert "deploy-staging" in jobs["deploy-production"]["needs"]
    assert jobs["deploy-production"]["environment"]["name"] == "production"
    assert jobs["deploy-production"]["if"] == "startsWith(github.ref, 'refs/tags/v')"
    for job in ("deploy-staging", "deploy-production"):
        step = jobs[job]["steps"][-1]["run"]
        assert step.startswith("deploy/helm/deploy.sh ")
        assert "needs.image.outputs.digest" in step
    assert "make test" in jobs["test"]["steps"][-1]["run"]


def test_gitlab_deploys_staging_then_production_manually() -> None:
    config = yaml.safe_load(GITLAB.read_text())
    assert config["stages"] == ["test", "build", "package", "staging", "production"]
    production = config["deploy-production"]
    assert production["needs"] == ["image", "deploy-staging"]
    assert production["rules"] == [{"if": "$CI_COMMIT_TAG =~ /^v/", "when": "manual"}]
    assert production["allow_failure"] is False
    assert config[".deploy"]["script"][-1].startswith("deploy/helm/deploy.sh ")
    assert "make test" in " ".join(config["test"]["script"])


def test_checkov_passes_the_gitlab_pipeline(tmp_path: Path) -> None:
    checkov = require(str(CACHE / "checkov-venv" / "bin" / "checkov"), INSTALL_HINT)
    shutil.copy2(GITLAB, tmp_path / ".gitlab-ci.yml")
    result = subprocess.run(
        [checkov, "--directory", str(tmp_path), "--framework", "gitlab_ci", "--output", "json",
         "--quiet", "--skip-download"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)["summary"]
    assert summary["failed"] == 0
    assert summary["passed"] > 0
