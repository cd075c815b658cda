"""Throwaway Prometheus and Alertmanager (Debian's packages), a webhook receiver that
records what Alertmanager sends, and `adplatform dev` as a scrape target.

Also the config generators the live tests and `make monitor` share: a loopback
Prometheus config, the project's rule files with every window and `for:` shortened
(`accelerate_rules`, for live tests only: production files are never changed), and
the project's Alertmanager config with its receivers pointed at local URLs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from tests.infra.common import (
    PROJECT_ROOT,
    ServerStartError,
    free_port,
    port_is_free,
    port_open,
    require,
    stop_process,
    wait_for,
)

INSTALL_HINT = "scripts/install-system.sh (Debian packages prometheus, prometheus-alertmanager)"
MONITORING_DIR = PROJECT_ROOT / "deploy" / "monitoring"
RULES_DIR = MONITORING_DIR / "rules"
ALERTMANAGER_DIR = MONITORING_DIR / "alertmanager"


def prometheus_binary() -> str:
    return require("prometheus", INSTALL_HINT)


def promtool_binary() -> str:
    return require("promtool", INSTALL_HINT)


def alertmanager_binary() -> str:
    # Debian names it prometheus-alertmanager; upstream tarballs call it alertmanager.
    found = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    return found or require("prometheus-alertmanager", INSTALL_HINT)


def amtool_binary() -> str:
    return require("amtool", INSTALL_HINT)


def rule_files(directory: Path = RULES_DIR) -> list[Path]:
    """The project's rule files (not their promtool tests)."""
    return sorted(p for p in directory.glob("*.yaml") if p.is_file())


def http_json(
    url: str,
    *,
    method: str = "GET",
    body: object | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback
    request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        raw = response.read()
    return json.loads(raw) if raw else None


def http_status(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


# --- durations ---------------------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_DURATION = r"(?:\d+(?:ms|s|m|h|d|w|y))+"


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration (`1h30m`, `90s`, `500ms`)."""
    if not re.fullmatch(_DURATION, text):
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(float(n) * _UNITS[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text))


def format_duration(seconds: float) -> str:
    millis = round(seconds * 1000)
    if millis % 1000:
        return f"{millis}ms"
    whole = millis // 1000
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def scale_durations(expr: str, factor: float, minimum: float) -> str:
    """Divide every range, subquery step and offset in a PromQL expression by `factor`."""

    def scaled(text: str) -> str:
        return format_duration(max(minimum, parse_duration(text) / factor))

    def bracket(match: re.Match[str]) -> str:
        parts = match.group(1).split(":")
        return "[" + ":".join(scaled(p) if p else p for p in parts) + "]"

    expr = re.sub(r"\[\s*(" + _DURATION + r"(?::(?:" + _DURATION + r")?)?)\s*\]", bracket, expr)
    return re.sub(
        r"\boffset\s+(" + _DURATION + r")", lambda m: "offset " + scaled(m.group(1)), expr
    )


@dataclass(frozen=True)
class Acceleration:
    """How the live tests shrink time: every range, offset and `for:` divided by
    `factor`, ranges no shorter than `min_range` (several scrapes) and `for:` no
    shorter than `min_for`."""

    factor: float = 20.0
    min_range: float = 5.0
    min_for: float = 2.0


def accelerate_rules(
    sources: Iterable[Path], destination: Path, acceleration: Acceleration = Acceleration()
) -> list[Path]:
    """Test-only copies of rule files with shortened windows and `for:` durations.

    The expressions, labels and annotations are otherwise the production ones, so a
    live test exercises the real rules end to end in seconds instead of minutes.
    """
    destination.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sources:
        document = yaml.safe_load(source.read_text())
        for group in document.get("groups", []):
            if "interval" in group:
                group["interval"] = "1s"
            for rule in group.get("rules", []):
                rule["expr"] = scale_durations(
                    str(rule["expr"]), acceleration.factor, acceleration.min_range
                )
                if "for" in rule:
                    seconds = parse_duration(str(rule["for"])) / acceleration.factor
                    rule["for"] = format_duration(max(acceleration.min_for, seconds))
        target = destination / source.name
        target.write_text(yaml.safe_dump(document, sort_keys=False))
        written.append(target)
    return written


# --- config generators -------------------------------------------------------------


def loopback_prometheus_config(
    targets: Sequence[str],
    *,
    rules: Sequence[Path],
    alertmanagers: Sequence[str] = (),
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
    job: str = "adplatform",
) -> dict[str, Any]:
    """Scrape `targets` (host:port) on loopback; the production scrape config
    (`deploy/monitoring/prometheus/prometheus.yml`) needs a Kubernetes API."""
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": evaluation_interval,
        },
        "rule_files": [str(path) for path in rules],
        "scrape_configs": [
            {
                "job_name": job,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": list(targets)}],
            }
        ],
    }
    if alertmanagers:
        config["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]
        }
    return config


def local_alertmanager_config(
    receiver_urls: Mapping[str, str],
    secrets_dir: Path,
    *,
    source: Path = ALERTMANAGER_DIR / "alertmanager.yaml",
    timings: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The project's Alertmanager config with each receiver sent to a local URL.

    Routes, grouping and inhibitions stay as they are. File references (bearer
    tokens, chat webhook URLs) point at files written to `secrets_dir`, the way a
    mounted Secret provides them in a cluster. `timings` overrides group_wait,
    group_interval and repeat_interval on every route (tests use seconds).
    """
    config: dict[str, Any] = yaml.safe_load(source.read_text())
    secrets_dir.mkdir(parents=True, exist_ok=True)
    for receiver in config.get("receivers", []):
        url = receiver_urls.get(receiver["name"])
        if url is None:
            continue
        for webhook in receiver.get("webhook_configs", []):
            webhook["url"] = url
            auth = webhook.get("http_config", {}).get("authorization")
            if auth and "credentials_file" in auth:
                token_file = secrets_dir / f"{receiver['name']}-token"
                token_file.write_text(f"test-token-{receiver['name']}\n")
                auth["credentials_file"] = str(token_file)
        for slack in receiver.get("slack_configs", []):
            url_file = secrets_dir / f"{receiver['name']}-url"
            url_file.write_text(url + "\n")
            slack["api_url_file"] = str(url_file)
    config["templates"] = [str(ALERTMANAGER_DIR / "templates" / "*.tmpl")]
    if timings:

        def retime(route: dict[str, Any], top: bool) -> None:
            for key, value in timings.items():
                if top or key in route:
                    route[key] = value
            for child in route.get("routes", []):
                retime(child, False)

        retime(config["route"], True)
    return config


# --- servers -----------------------------------------------------------------------


class _Server:
    name = "server"

    def __init__(self, root: Path | None) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix=f"adplatform-{self.name}-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.root / f"{self.name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _args(self) -> list[str]:
        raise NotImplementedError

    def start(self, retries: int = 5, port: int = 0) -> _Server:
        last: Exception | None = None
        for _ in range(retries):
            self.port = port if port and port_is_free(port) else free_port()
            try:
                with open(self.log, "ab") as log:
                    self.process = subprocess.Popen(
                        self._args(), stdout=log, stderr=subprocess.STDOUT, cwd=self.root
                    )
                wait_for(
                    lambda: http_status(self.url + "/-/ready") == 200,
                    timeout=30,
                    what=self.name,
                    process=self.process,
                    log=self.log,
                )
                return self
            except ServerStartError as exc:
                last = exc
                stop_process(self.process)
                port = 0
        raise ServerStartError(f"{self.name} did not start: {last}")

    def stop(self) -> None:
        stop_process(self.process)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class PrometheusServer(_Server):
    """Prometheus with a given config (dict or file), listening on loopback."""

    name = "prometheus"

    def __init__(self, config: Mapping[str, Any] | Path, root: Path | None = None) -> None:
        super().__init__(root)
        self.binary = prometheus_binary()
        if isinstance(config, Path):
            self.config_file = config
        else:
            self.config_file = self.root / "prometheus.yml"
            self.config_file.write_text(yaml.safe_dump(dict(config), sort_keys=False))

    def _args(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.root / 'data'}",
            "--storage.tsdb.retention.time=1d",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            # Resend firing alerts every few seconds, so a restarted Alertmanager
            # (or a lost notification) is repaired quickly in tests.
            "--rules.alert.resend-delay=2s",
            "--log.level=warn",
        ]

    def start(self, retries: int = 5, port: int = 0) -> PrometheusServer:
        super().start(retries, port)
        return self

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        body = http_json(f"{self.url}/api/v1/{path}" + (f"?{query}" if query else ""))
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus {path}: {body}")
        return body["data"]

    def query(self, expr: str, **params: str) -> list[dict[str, Any]]:
        """An instant query's result; raises on a parse or evaluation error."""
        result: list[dict[str, Any]] = self.api("query", query=expr, **params)["result"]
        return result

    def query_response(self, expr: str) -> dict[str, Any]:
        """The raw response (status, error, warnings) of an instant query."""
        params = urllib.parse.urlencode({"query": expr})
        try:
            body: dict[str, Any] = http_json(f"{self.url}/api/v1/query?{params}")
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        return body

    def targets(self) -> dict[str, Any]:
        data: dict[str, Any] = self.api("targets", state="any")
        return data

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def rule_groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self.api("rules")["groups"]
        return groups

    def wait_for_series(self, expr: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []

        def present() -> bool:
            found[:] = self.query(expr)
            return bool(found)

        wait_for(present, timeout=timeout, what=f"series {expr}", log=self.log)
        return found


class AlertmanagerServer(_Server):
    """Alertmanager with a given config, clustering off, on loopback."""

    name = "alertmanager"

    def __init__(self, config: Mapping[str, Any] | Path, root: Path | None = None) -> None:
        super().__init__(root)
        self.binary = alertmanager_binary()
        if isinstance(config, Path):
            self.config_file = config
        else:
            self.config_file = self.root / "alertmanager.yml"
            self.config_file.write_text(yaml.safe_dump(dict(config), sort_keys=False))

    def _args(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config_file}",
            f"--storage.path={self.root / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",  # no gossip port: a single test instance
            "--log.level=warn",
        ]

    def start(self, retries: int = 5, port: int = 0) -> AlertmanagerServer:
        super().start(retries, port)
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        http_json(f"{self.url}/api/v2/alerts", method="POST", body=list(alerts))

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode(filters)
        result: list[dict[str, Any]] = http_json(f"{self.url}/api/v2/alerts?{query}")
        return result


# --- webhook receiver --------------------------------------------------------------


@dataclass
class Notification:
    """One POST Alertmanager made to the receiver."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    received_at: float  # time.monotonic()

    @property
    def status(self) -> str:
        return str(self.body.get("status", ""))

    def alert_names(self) -> set[str]:
        names = {a.get("labels", {}).get("alertname", "") for a in self.body.get("alerts", [])}
        group = self.body.get("groupLabels", {}).get("alertname")
        return names | ({group} if group else set())


@dataclass
class WebhookReceiver:
    """A local HTTP server standing in for the paging and chat webhooks."""

    notifications: list[Notification] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    on_notification: Callable[[Notification], None] | None = None

    def start(self, port: int = 0) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"unparsed": raw.decode(errors="replace")}
                note = Notification(
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    time.monotonic(),
                )
                with receiver._lock:
                    receiver.notifications.append(note)
                if receiver.on_notification is not None:
                    receiver.on_notification(note)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                return

        for _ in range(10):
            chosen = port if port and port_is_free(port) else free_port()
            try:
                self._server = ThreadingHTTPServer(("127.0.0.1", chosen), Handler)
            except OSError:
                port = 0
                continue
            self.port = chosen
            break
        else:
            raise ServerStartError("webhook receiver could not bind")
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def received(self) -> list[Notification]:
        with self._lock:
            return list(self.notifications)

    def wait_for(
        self, predicate: Callable[[Notification], bool], *, timeout: float, what: str
    ) -> Notification:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for note in self.received():
                if predicate(note):
                    return note
            time.sleep(0.2)
        seen = [(n.path, n.status, sorted(n.alert_names())) for n in self.received()]
        raise AssertionError(f"{what}: no such notification within {timeout}s; got {seen}")

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# --- adplatform dev as a scrape target ---------------------------------------------

DEV_INTERNAL_KEY = "test-internal-key"
DEV_ADMIN_KEY = "test-admin-key"


class DevPlatform:
    """`adplatform dev` in a subprocess: every service in one process, on free ports,
    with ENVIRONMENT=test (which enables the bidder's fault-injection endpoint)."""

    def __init__(
        self,
        root: Path | None = None,
        *,
        simulate: bool = True,
        rate: float = 50.0,
        environment: str = "test",
    ) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix="adplatform-dev-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.simulate = simulate
        self.rate = rate
        self.environment = environment
        self.port_base = 0
        self.metrics_port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.root / "dev.log"

    def url(self, service: str) -> str:
        offset = {"campaigns": 0, "bidding": 1, "analytics": 2}[service]
        return f"http://127.0.0.1:{self.port_base + offset}"

    @property
    def metrics_address(self) -> str:
        return f"127.0.0.1:{self.metrics_port}"

    def _pick_ports(self) -> None:
        for _ in range(100):
            base = free_port()
            if all(port_is_free(base + i) for i in (1, 2)) and base + 2 < 32000:
                self.port_base = base
                self.metrics_port = free_port(exclude=[base, base + 1, base + 2])
                return
        raise ServerStartError("no three consecutive free ports")

    def start(self, retries: int = 3, timeout: float = 90.0) -> DevPlatform:
        last: Exception | None = None
        for _ in range(retries):
            self._pick_ports()
            args = [
                sys.executable,
                "-m",
                "adplatform",
                "dev",
                "--host",
                "127.0.0.1",
                "--port-base",
                str(self.port_base),
                "--metrics-port",
                str(self.metrics_port),
                "--database",
                str(self.root / "dev.db"),
                "--fresh",
                "--simulate" if self.simulate else "--no-simulate",
                "--rate",
                str(self.rate),
            ]
            env = {
                **os.environ,
                "ENVIRONMENT": self.environment,
                "INTERNAL_API_KEY": DEV_INTERNAL_KEY,
                "ADMIN_API_KEY": DEV_ADMIN_KEY,
                "LOG_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1",
            }
            with open(self.log, "ab") as log:
                self.process = subprocess.Popen(
                    args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.root
                )
            try:
                wait_for(
                    lambda: (
                        http_status(self.url("bidding") + "/health/ready") == 200
                        and port_open(self.metrics_port)
                    ),
                    timeout=timeout,
                    interval=0.3,
                    what="adplatform dev",
                    process=self.process,
                    log=self.log,
                )
                return self
            except ServerStartError as exc:
                last = exc
                stop_process(self.process)
        raise ServerStartError(f"adplatform dev did not start: {last}")

    def metrics_text(self) -> str:
        url = f"http://{self.metrics_address}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())

    def set_faults(self, *, error_rate: float = 0.0, delay_ms: int = 0) -> Any:
        """The bidder's test-only fault injection (ENVIRONMENT development/test)."""
        return http_json(
            self.url("bidding") + "/internal/faults",
            method="PUT",
            body={"error_rate": error_rate, "delay_ms": delay_ms},
            headers={"X-Internal-Key": DEV_INTERNAL_KEY},
        )

    def stop(self) -> None:
        stop_process(self.process)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def exposed_metric_names(text: str) -> set[str]:
    """Every series name a /metrics page can produce, from its TYPE lines and samples.

    A labelled metric that has not been observed yet still has its TYPE line, so a
    metric that only appears under load (a 5xx counter, a fault) is still known.
    """
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("", "_info"),
    }
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) < 4:
                continue
            name, kind = parts[2], parts[3]
            base = name.removesuffix("_total") if kind == "counter" else name
            names.update(base + suffix for suffix in suffixes.get(kind, ("",)))
            names.add(name)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names
