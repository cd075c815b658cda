#!/usr/bin/env python3
"""`make monitor`: Prometheus and Alertmanager on this machine, watching `adplatform dev`.

Starts the embedded platform (or attaches to one already serving metrics on the
metrics port, e.g. from `make run`), then Prometheus with the project's rules and a
loopback scrape config, and Alertmanager with the project's routing whose paging and
chat receivers are a small local webhook that prints every notification here.
Config and data live in .cache/monitor/ (--cache). Ctrl-C (or SIGTERM) stops what it
started.

    .venv/bin/python scripts/monitor.py [--fast] [--attach] [--rate 20]

tests/monitoring/test_monitor_script.py runs it once (fresh database, free ports) and
checks Prometheus and Alertmanager come up with the rules loaded and stop with it.

--fast loads the live tests' copies of the rules (every window and `for:` divided
by 20) and Alertmanager timers of seconds, so alerts fire within seconds: try
    curl -X PUT -H 'X-Internal-Key: dev-internal-key' -d '{"error_rate": 0.5}' \\
        http://127.0.0.1:8081/internal/faults
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.infra.common import port_is_free, stop_process  # noqa: E402
from tests.infra.prometheus import (  # noqa: E402
    INSTALL_HINT,
    AlertmanagerServer,
    Notification,
    PrometheusServer,
    WebhookReceiver,
    accelerate_rules,
    local_alertmanager_config,
    loopback_prometheus_config,
    rule_files,
)

DEFAULT_CACHE = ROOT / ".cache" / "monitor"


def serves_adplatform_metrics(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return b"adplatform_service_info" in response.read()
    except OSError:
        return False


def print_notification(note: Notification) -> None:
    receiver = note.path.strip("/") or "?"
    for alert in note.body.get("alerts", []):
        labels = alert.get("labels", {})
        summary = alert.get("annotations", {}).get("summary", "")
        print(
            f"[{time.strftime('%H:%M:%S')}] {receiver:<6} {alert.get('status', '?').upper():<8} "
            f"{labels.get('alertname')} ({labels.get('severity')}, {labels.get('service')}): "
            f"{summary}",
            flush=True,
        )
    if not note.body.get("alerts") and note.body.get("attachments"):  # chat (Slack format)
        for attachment in note.body["attachments"]:
            print(f"[{time.strftime('%H:%M:%S')}] chat   {attachment.get('title')}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="accelerated rules (demo/testing)")
    parser.add_argument("--attach", action="store_true", help="never start adplatform dev")
    parser.add_argument("--metrics-port", type=int, default=9090, help="adplatform dev metrics")
    parser.add_argument("--port-base", type=int, default=8080, help="adplatform dev HTTP ports")
    parser.add_argument("--prometheus-port", type=int, default=9091)
    parser.add_argument("--alertmanager-port", type=int, default=9093)
    parser.add_argument("--rate", type=float, default=20.0, help="simulated bid requests/s")
    parser.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help="config, data and logs (.cache/monitor)"
    )
    parser.add_argument(
        "--database", type=Path, help="SQLite file of the adplatform dev it starts (its default)"
    )
    args = parser.parse_args()
    cache: Path = args.cache.resolve()

    missing = [b for b in ("prometheus",) if not shutil.which(b)]
    if not (shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")):
        missing.append("prometheus-alertmanager")
    if missing:
        print(f"missing {', '.join(missing)}; install with {INSTALL_HINT}", file=sys.stderr)
        return 2

    cache.mkdir(parents=True, exist_ok=True)
    started: list[object] = []
    dev_process = None
    # From here on a SIGTERM unwinds through `finally`: what was started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        if serves_adplatform_metrics(args.metrics_port):
            print(f"attaching to adplatform dev (metrics on :{args.metrics_port})")
        elif args.attach:
            print(f"nothing serves adplatform metrics on :{args.metrics_port}", file=sys.stderr)
            return 2
        else:
            import subprocess

            if not port_is_free(args.metrics_port):
                print(f"port {args.metrics_port} is taken by something else", file=sys.stderr)
                return 2
            command = [
                sys.executable,
                "-m",
                "adplatform",
                "dev",
                "--port-base",
                str(args.port_base),
                "--metrics-port",
                str(args.metrics_port),
                "--rate",
                str(args.rate),
            ]
            if args.database:
                command += ["--database", str(args.database.resolve())]
            with (cache / "dev.log").open("ab") as log:
                dev_process = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
                )
            deadline = time.monotonic() + 90
            while not serves_adplatform_metrics(args.metrics_port):
                if dev_process.poll() is not None or time.monotonic() > deadline:
                    print(f"adplatform dev did not start; see {cache / 'dev.log'}", file=sys.stderr)
                    return 1
                time.sleep(0.5)
            print(f"started adplatform dev (log: {cache / 'dev.log'})")

        webhook = WebhookReceiver(on_notification=print_notification).start()
        started.append(webhook)
        timings = {"group_wait": "2s", "group_interval": "5s"} if args.fast else None
        am_config = local_alertmanager_config(
            {"paging": webhook.url("/paging"), "chat": webhook.url("/chat")},
            cache / "secrets",
            timings=timings,
        )
        alertmanager = AlertmanagerServer(am_config, cache / "alertmanager")
        started.append(alertmanager)
        alertmanager.start(port=args.alertmanager_port)

        rules = rule_files()
        if args.fast:
            rules = accelerate_rules(rules, cache / "rules-fast")
        config = loopback_prometheus_config(
            [f"127.0.0.1:{args.metrics_port}"],
            rules=rules,
            alertmanagers=[alertmanager.address],
            scrape_interval="1s" if args.fast else "5s",
            evaluation_interval="1s" if args.fast else "5s",
        )
        prometheus = PrometheusServer(config, cache / "prometheus")
        started.append(prometheus)
        prometheus.start(port=args.prometheus_port)

        base = args.port_base
        print(
            "\n".join(
                [
                    "",
                    "adplatform monitoring"
                    + (" (fast rules: windows and for: / 20)" if args.fast else ""),
                    f"  Prometheus    {prometheus.url}   (alerts: {prometheus.url}/alerts)",
                    f"  Alertmanager  {alertmanager.url}",
                    f"  metrics       http://127.0.0.1:{args.metrics_port}/metrics",
                    f"  campaigns     http://127.0.0.1:{base}/docs",
                    f"  bidding       http://127.0.0.1:{base + 1}/openrtb2/bid",
                    f"  analytics     http://127.0.0.1:{base + 2}/analytics/dashboard",
                    f"  config/data   {cache}",
                    "",
                    "Notifications (paging: critical, chat: warning) are printed below.",
                    "Ctrl-C stops.",
                    "",
                ]
            ),
            flush=True,
        )
        while True:
            time.sleep(1)
            if dev_process is not None and dev_process.poll() is not None:
                print("adplatform dev exited", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for thing in reversed(started):
            thing.stop()  # type: ignore[attr-defined]
        stop_process(dev_process)


if __name__ == "__main__":
    sys.exit(main())
