"""Real bidder processes and a threaded stand-in campaign-service for the
integration tests."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from adplatform.core.events import CampaignSnapshot, encode
from tests.infra.common import PROJECT_ROOT, ServerStartError, free_port, stop_process, tail
from tests.unit.bidding.factories import INTERNAL_KEY, TRACKING_SECRET


class ThreadedSnapshotServer:
    """`GET /internal/snapshot` from a thread, reachable by other processes too.

    `before_answer` runs while a request is being served, before the body is sent:
    the no-gap test publishes an update there, between the bidder recording its
    offsets and receiving the snapshot."""

    def __init__(self, snapshot: CampaignSnapshot) -> None:
        self.snapshot = snapshot
        self.requests = 0
        self.before_answer: Callable[[], None] | None = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                if self.headers.get("x-internal-key") != INTERNAL_KEY:
                    self.send_response(401)
                    self.end_headers()
                    return
                if outer.before_answer is not None:
                    outer.before_answer()
                body = encode(outer.snapshot)
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class BidderProcess:
    """`adplatform serve bidding` in production mode, on a free port."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.metrics_port = free_port(exclude=[self.port])
        self.log = Path(tempfile.mkstemp(prefix="bidder-", suffix=".log")[1])
        self.env = {
            **os.environ,
            "ENVIRONMENT": "test",
            "LOG_LEVEL": "WARNING",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(self.port),
            "METRICS_PORT": str(self.metrics_port),
            "TRACKING_SECRET": TRACKING_SECRET,
            "INTERNAL_API_KEY": INTERNAL_KEY,
            "PUBLIC_BIDDING_URL": f"http://127.0.0.1:{self.port}",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BidderProcess:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(PROJECT_ROOT / ".venv" / "bin" / "adplatform"), "serve", "bidding"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=PROJECT_ROOT,
            )
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise ServerStartError(
                    f"bidder exited with {self.process.returncode}{tail(self.log)}"
                )
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise ServerStartError(f"bidder not ready after {timeout}s{tail(self.log)}")

    def metric(self, name: str, **labels: str) -> float:
        """A sample from the process's `/metrics` (0 when absent)."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0

    def stop(self) -> None:
        stop_process(self.process)
        self.log.unlink(missing_ok=True)


def start_bidders(count: int, env: dict[str, str]) -> list[BidderProcess]:
    bidders = [BidderProcess(env).start() for _ in range(count)]
    try:
        for bidder in bidders:
            bidder.wait_ready()
    except BaseException:
        for bidder in bidders:
            bidder.stop()
        raise
    return bidders
