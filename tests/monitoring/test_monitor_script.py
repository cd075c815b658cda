"""`make monitor` (scripts/monitor.py), run once as a user would, on free ports with
a fresh database: it starts `adplatform dev`, then Alertmanager and Prometheus with
every rule group loaded and the services scraped, prints their URLs, and on SIGTERM
stops everything it started. And the Makefile target installs the system packages
when either binary is missing."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.infra.common import PROJECT_ROOT, free_port, port_is_free, wait_for
from tests.infra.prometheus import (
    alertmanager_binary,
    http_json,
    http_status,
    prometheus_binary,
    rule_files,
)

SCRIPT = PROJECT_ROOT / "scripts" / "monitor.py"


def dev_ports() -> tuple[int, int]:
    """A base with three consecutive free ports (campaigns, bidding, analytics) and a
    metrics port."""
    for _ in range(100):
        base = free_port()
        if base + 2 < 32000 and all(port_is_free(base + i) for i in (1, 2)):
            return base, free_port(exclude=[base, base + 1, base + 2])
    raise RuntimeError("no three consecutive free ports")


class Output:
    """The script's stdout, read by a thread (a blocking readline cannot time out)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert process.stdout is not None
        stream = process.stdout

        def pump() -> None:
            for line in stream:
                self.lines.put(line)

        threading.Thread(target=pump, daemon=True).start()

    def until(self, needle: str, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while not any(needle in line for line in self.seen):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {needle!r} in the output:\n{''.join(self.seen)}")
            try:
                self.seen.append(self.lines.get(timeout=min(remaining, 1.0)))
            except queue.Empty:
                continue
        return self.seen


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Output, dict[str, int]]]:
    prometheus_binary()
    alertmanager_binary()
    base, metrics = dev_ports()
    ports = {
        "base": base,
        "metrics": metrics,
        "prometheus": free_port(exclude=[base, base + 1, base + 2, metrics]),
    }
    ports["alertmanager"] = free_port(exclude=list(ports.values()))
    env = {**os.environ, "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            str(SCRIPT),
            "--cache",
            str(tmp_path / "cache"),
            "--database",
            str(tmp_path / "dev.db"),
            "--port-base",
            str(base),
            "--metrics-port",
            str(metrics),
            "--prometheus-port",
            str(ports["prometheus"]),
            "--alertmanager-port",
            str(ports["alertmanager"]),
            "--rate",
            "5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
        start_new_session=True,  # its own process group: nothing outlives a failed test
    )
    try:
        yield process, Output(process), ports
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def url_of(lines: list[str], name: str) -> str:
    for line in lines:
        match = re.match(rf"\s+{name}\s+(http://\S+)", line)
        if match:
            return match.group(1)
    raise AssertionError(f"no {name} URL in:\n{''.join(lines)}")


@pytest.mark.slow
def test_make_monitor_starts_and_stops_everything(
    monitor: tuple[subprocess.Popen[str], Output, dict[str, int]],
) -> None:
    process, output, ports = monitor
    lines = output.until("Ctrl-C stops.", timeout=150)
    assert any("started adplatform dev" in line for line in lines), "".join(lines)
    prometheus, alertmanager = url_of(lines, "Prometheus"), url_of(lines, "Alertmanager")
    assert http_status(f"{prometheus}/-/ready") == 200
    assert http_status(f"{alertmanager}/-/ready") == 200

    # Every rule group of deploy/monitoring/rules is loaded, every rule evaluates.
    expected = {
        group["name"]
        for path in rule_files()
        for group in yaml.safe_load(path.read_text())["groups"]
    }
    groups: list[dict[str, object]] = []

    def evaluated() -> bool:
        groups[:] = http_json(f"{prometheus}/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]  # type: ignore[attr-defined]
        return bool(rules) and all(r["health"] != "unknown" for r in rules)

    wait_for(evaluated, timeout=30, what="every rule evaluated once")
    assert {g["name"] for g in groups} == expected
    broken = [
        f"{r['name']}: {r.get('lastError')}"
        for g in groups
        for r in g["rules"]  # type: ignore[attr-defined]
        if r["health"] != "ok"
    ]
    assert not broken, broken

    # Prometheus scrapes the services and sends to this Alertmanager.
    def scraped() -> bool:
        query = urllib.parse.urlencode({"query": 'up{job="adplatform"} == 1'})
        result = http_json(f"{prometheus}/api/v1/query?{query}")["data"]["result"]
        return bool(result)

    wait_for(scraped, timeout=30, what="adplatform dev scraped")
    managers = http_json(f"{prometheus}/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
    assert [m["url"].split("/api/")[0] for m in managers] == [alertmanager]
    status = http_json(f"{alertmanager}/api/v2/status")
    assert "receiver: paging" in status["config"]["original"]

    # SIGTERM (what Ctrl-C does, too) stops Prometheus, Alertmanager and adplatform dev.
    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0
    listening = [ports["metrics"], ports["base"] + 1]
    listening += [int(url.rsplit(":", 1)[1]) for url in (prometheus, alertmanager)]
    wait_for(lambda: all(map(port_is_free, listening)), timeout=10, what="ports released")


# --- the Makefile target ------------------------------------------------------------------


def run_make_monitor(tmp_path: Path, binaries: list[str]) -> tuple[int, bool, str]:
    """`make monitor` with only `binaries` on PATH (empty scripts), the installer replaced
    by a stub that records its call, and the script asked for --help only."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in binaries:
        path = bin_dir / name
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755)
    called = tmp_path / "installer-called"
    stub = tmp_path / "install-system.sh"
    stub.write_text(f"#!/bin/sh\n: > {called}\n")  # PATH has no touch
    stub.chmod(0o755)
    stamp = tmp_path / "venv-installed"  # an existing stamp: the venv counts as installed
    stamp.touch()
    result = subprocess.run(
        [
            make,
            "--no-print-directory",
            "-o",
            str(stamp),
            "monitor",
            f"STAMP={stamp}",
            f"BIN={Path(sys.executable).parent}",
            f"INSTALL_SYSTEM={stub}",
            "MONITOR_ARGS=--help",
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, "PATH": str(bin_dir)},
        timeout=60,
        check=False,
    )
    return result.returncode, called.exists(), result.stdout + result.stderr


@pytest.mark.parametrize(
    ("binaries", "installs"),
    [
        (["prometheus", "prometheus-alertmanager"], False),
        (["prometheus", "alertmanager"], False),
        (["prometheus"], True),
        (["prometheus-alertmanager"], True),
        ([], True),
    ],
)
def test_make_monitor_installs_what_is_missing(
    tmp_path: Path, binaries: list[str], installs: bool
) -> None:
    code, called, output = run_make_monitor(tmp_path, binaries)
    assert code == 0, output
    assert called is installs, output
    assert "usage: monitor.py" in output
