"""The `helm test` pod's check, run here as rendered: it passes when every service
answers /health/ready with 200 and fails, naming the service, when one answers 503."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.chart.conftest import Rendered


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 503 if self.path.startswith("/unready") else 200
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _run(rendered: dict[str, Rendered], urls: list[str]) -> subprocess.CompletedProcess[str]:
    pod = rendered["default"].one("Pod", "adplatform-test")
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["python", "-c"]
    script = container["args"][0]
    return subprocess.run(
        [sys.executable, "-c", script, *urls],
        capture_output=True,
        text=True,
        timeout=60,
        env={"READY_ATTEMPTS": "2"},
    )


def test_passes_when_every_service_is_ready(rendered: dict[str, Rendered], server: str) -> None:
    result = _run(rendered, [f"{server}/health/ready", f"{server}/health/ready?svc=2"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(" 200") == 2


def test_fails_naming_the_unready_service(rendered: dict[str, Rendered], server: str) -> None:
    result = _run(rendered, [f"{server}/health/ready", f"{server}/unready/health/ready"])
    assert result.returncode == 1
    assert "not ready" in result.stderr
    assert "/unready/health/ready" in result.stderr
    assert "503" in result.stderr
