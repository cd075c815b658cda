"""Benchmark of the bidding-service's full bid path (issue 3).

    .venv/bin/python bench/bidding.py [--duration 10] [--rounds 3] [--campaigns 10000]
                                      [--connections 64]

Starts a real Redis and a real Kafka broker (tests/infra), a snapshot server with
`--campaigns` synthetic active campaigns, and `adplatform serve bidding` pinned to
core 0 (`taskset`); wrk (pinned to core 1, with Redis and Kafka) sends varied OpenRTB
bodies (unique auction ids, drawn from the simulator's traffic model). In the same run
it measures the bare baseline: a raw ASGI app on the same server stack (uvicorn +
httptools + uvloop, same options) that decodes the same bodies with msgspec and answers
a fixed small JSON. Both servers stay up and are measured in alternating rounds
(`--rounds`): this machine's speed drifts by up to 2x within minutes, so a ratio is only
taken between neighbouring measurements, and the round with the median ratio is
reported. It prints req/s, latency p50/p99/p99.9, the ratio to the baseline,
the share of bids vs no-bids, latency at half the maximum rate, and the index look-up
cost at 1k/10k/100k campaigns.

Targets: >= 12,000 req/s on one core, >= 0.5 x baseline, p99 <= 5 ms at half the
maximum rate, index cost at 100k <= 1.5 x at 1k.

`--redis-replicas N` gives the Redis N replicas and measures the full bid path twice in
the same run, `REDIS_WAIT_REPLICAS` off and then N (each reservation batch followed by
WAIT in the same round trip): the cost of budget writes that survive a failover.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402

from adplatform.bidding.auction import _sizes, request_context  # noqa: E402
from adplatform.bidding.index import TargetingIndex  # noqa: E402
from adplatform.bidding.openrtb import decode_bid_request  # noqa: E402
from adplatform.bidding.simulator import (  # noqa: E402
    BUNDLES,
    CATEGORIES,
    COUNTRIES,
    DOMAINS,
    SIZES,
    TrafficGenerator,
)
from adplatform.core.events import (  # noqa: E402
    CampaignSnapshot,
    CampaignState,
    CreativeState,
    FrequencyCap,
    Targeting,
    encode,
)

SERVER_CORE = "0"
LOAD_CORE = "1"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
ID_MARK = "__AUCTION_ID__"

WRK_SCRIPT = r"""
local bodies = {}
local counter = 0
local prefix = "x"
local threads = 0
local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "0")

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  for line in io.lines(os.getenv("WRK_BODIES")) do
    local a, b = line:match("^(.-)__AUCTION_ID__(.*)$")
    if a then bodies[#bodies + 1] = {a, b} end
  end
  prefix = tostring(tid or 0) .. "-" .. tostring(os.time()) .. "-"
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function request()
  counter = counter + 1
  local b = bodies[(counter % #bodies) + 1]
  return wrk.format(nil, nil, nil, b[1] .. prefix .. counter .. b[2])
end

if delay_ms > 0 then
  function delay() return delay_ms end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"socket_errors":%d,"status_errors":%d,' ..
    '"p50":%d,"p99":%d,"p999":%d,"mean":%f}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.mean))
end
"""

BASELINE_APP = r"""
import msgspec
from adplatform.bidding.openrtb import BidRequest

_decoder = msgspec.json.Decoder(BidRequest)
_BODY = b'{"id":"baseline","seatbid":[]}'
_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", b"30")],
}
_END = {"type": "http.response.body", "body": _BODY}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    message = await receive()
    body = message.get("body", b"")
    while message.get("more_body"):
        message = await receive()
        body += message.get("body", b"")
    _decoder.decode(body)
    await send(_START)
    await send(_END)
"""


# ------------------------------------------------------------------ data


def synthetic_campaigns(count: int, seed: int = 7) -> list[CampaignState]:
    """Campaigns with realistic, mixed targeting (same distribution at every size)."""
    rng = random.Random(seed)
    sizes = [size for size, _ in SIZES[:9]]  # campaigns buy the common sizes
    countries = [code for code, _ in COUNTRIES[:12]]  # and the big markets
    campaigns = []
    for cid in range(1, count + 1):
        targeting: dict[str, Any] = {}
        if rng.random() < 0.7:
            targeting["countries"] = rng.sample(countries, rng.randint(1, 3))
        if rng.random() < 0.4:
            targeting["device_types"] = rng.sample([2, 4, 5], rng.randint(1, 2))
        if rng.random() < 0.2:
            targeting["os"] = rng.sample(["ios", "android", "windows", "macos"], 2)
        if rng.random() < 0.3:
            targeting["categories"] = rng.sample(CATEGORIES, rng.randint(2, 6))
        if rng.random() < 0.1:
            targeting["domains_block"] = rng.sample(DOMAINS, 2)
        if rng.random() < 0.03:
            targeting["domains_allow"] = rng.sample(DOMAINS + BUNDLES, 4)
        if rng.random() < 0.1:
            start = rng.randint(0, 12)
            targeting["hours"] = list(range(start, start + 12))
        creatives = [
            CreativeState(
                id=cid * 10 + k,
                w=w,
                h=h,
                click_url=f"https://advertiser{cid % 500}.example/landing",
                adomain=f"advertiser{cid % 500}.example",
                image_url=f"https://cdn.example/{cid}/{k}.png",
                iab_category=rng.choice(CATEGORIES),
            )
            for k, (w, h) in enumerate(rng.sample(sizes, rng.randint(1, 3)))
        ]
        cap = None
        if rng.random() < 0.2:
            cap = FrequencyCap(impressions=rng.randint(3, 10), window_seconds=3600)
        campaigns.append(
            CampaignState(
                id=cid,
                advertiser_id=cid % 500 + 1,
                version=1,
                name=f"bench {cid}",
                status="active",
                total_budget_micros=10_000_000_000_000,
                daily_budget_micros=0,
                max_bid_cpm_micros=rng.randint(50, 500) * 10_000,
                pacing="asap",
                frequency_cap=cap,
                targeting=Targeting(**targeting),
                creatives=creatives,
            )
        )
    return campaigns


def request_bodies(count: int, seed: int = 11) -> list[bytes]:
    generator = TrafficGenerator(seed, users=200_000)
    bodies = []
    for _ in range(count):
        body = generator.request()
        body["id"] = ID_MARK
        bodies.append(msgspec.json.encode(body))
    return bodies


# ------------------------------------------------------------------ index cost


def index_cost(
    sizes: tuple[int, ...] = (1_000, 10_000, 100_000), lookups: int = 20_000
) -> dict[int, tuple[float, float]]:
    """Mean microseconds per imp look-up, and the share of imps with a candidate."""
    generator = TrafficGenerator(5, users=10_000)
    requests = [
        decode_bid_request(msgspec.json.encode({**generator.request(), "id": f"r{i}"}))
        for i in range(2_000)
    ]
    results: dict[int, tuple[float, float]] = {}
    for size in sizes:
        index = TargetingIndex()
        index.load(
            CampaignSnapshot(
                position=0, generated_at=datetime.now(UTC), campaigns=synthetic_campaigns(size)
            )
        )
        prepared = []
        for request in requests:
            for imp in request.imp:
                prepared.append((request, _sizes(imp), (imp.bidfloor or 0.0) * 1_000_000))
        done = 0
        found = 0
        elapsed = 0.0
        while done < lookups:
            for request, imp_sizes, floor in prepared:
                now = time.time()
                ctx = request_context(request, now, time.monotonic())
                start = time.perf_counter()
                hits = index.candidates(imp_sizes, ctx, floor, frozenset(), 2)
                elapsed += time.perf_counter() - start
                found += bool(hits)
                done += 1
                if done >= lookups:
                    break
        results[size] = (elapsed / done * 1e6, found / done)
    return results


# ------------------------------------------------------------------ servers


class _SnapshotHandler(BaseHTTPRequestHandler):
    payload = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *args: Any) -> None:
        return


def serve_snapshot(campaigns: list[CampaignState]) -> tuple[ThreadingHTTPServer, int]:
    from tests.infra.common import free_port

    _SnapshotHandler.payload = encode(
        CampaignSnapshot(position=0, generated_at=datetime.now(UTC), campaigns=campaigns)
    )
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), _SnapshotHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


def pin(pid: int, core: str) -> None:
    subprocess.run(["taskset", "-a", "-p", "-c", core, str(pid)], capture_output=True, check=False)


def wait_http(url: str, timeout: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def run_wrk(
    url: str, bodies_file: Path, script: Path, seconds: float, connections: int, delay_ms: int = 0
) -> dict[str, float]:
    env = {**os.environ, "WRK_BODIES": str(bodies_file), "WRK_DELAY_MS": str(delay_ms)}
    result = subprocess.run(
        [
            "taskset",
            "-c",
            LOAD_CORE,
            WRK,
            "-t1",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--timeout",
            "2s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    match = re.search(r"WRKJSON (\{.*\})", result.stdout)
    if not match:
        raise RuntimeError(f"wrk failed: {result.stdout}\n{result.stderr}")
    data: dict[str, float] = json.loads(match.group(1))
    data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
    return data


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pid(process: subprocess.Popen[bytes]) -> int:
    """The Python server under `taskset` (taskset execs it: same pid)."""
    return process.pid


def measured(
    process: subprocess.Popen[bytes],
    url: str,
    bodies: Path,
    script: Path,
    seconds: float,
    conns: int,
) -> dict[str, float]:
    """A wrk run plus the server's CPU time per request: on a shared machine the CPU
    cost is the steadier figure, and 1 / cost is what one dedicated core would do."""
    before = cpu_seconds(server_pid(process))
    result = run_wrk(url, bodies, script, seconds, conns)
    used = cpu_seconds(server_pid(process)) - before
    result["cpu_us"] = used / max(result["requests"], 1) * 1e6
    return result


def scrape_outcomes(metrics_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'^bid_requests_total\{outcome="(\w+)"\} ([0-9.e+]+)$', text, re.M)
    }


def scrape_counter(metrics_port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def measure_half_rate(
    url: str, bodies: Path, script: Path, target: float, seconds: float
) -> dict[str, float]:
    """wrk paced by a per-connection delay; connections calibrated to hit `target`."""
    delay_ms = 2
    connections = max(1, round(target * (delay_ms + 0.5) / 1000))
    result: dict[str, float] = {}
    for _ in range(3):
        result = run_wrk(url, bodies, script, 3, connections, delay_ms)
        if abs(result["rps"] - target) / target < 0.07:
            break
        connections = max(1, round(connections * target / max(result["rps"], 1)))
    return run_wrk(url, bodies, script, seconds, connections, delay_ms) | {
        "connections": connections
    }


def fmt_latency(result: dict[str, float]) -> str:
    return (
        f"p50 {result['p50'] / 1000:.2f} ms  p99 {result['p99'] / 1000:.2f} ms  "
        f"p99.9 {result['p999'] / 1000:.2f} ms"
    )


# ------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--campaigns", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--skip-index", action="store_true", help="skip the index look-up cost")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="baseline and full-path measurements alternate this many times (the machine's "
        "speed drifts; a ratio is only taken between neighbouring measurements)",
    )
    parser.add_argument(
        "--redis-replicas",
        type=int,
        default=0,
        help="replicas of the Redis; >0 also measures REDIS_WAIT_REPLICAS=N against 0",
    )
    args = parser.parse_args()
    if not Path(WRK).exists():
        print("wrk not found: apt-get install wrk (scripts/install-system.sh)")
        return 2
    os.sched_setaffinity(0, {int(SERVER_CORE)})
    lines: list[str] = []
    if not args.skip_index:
        costs = index_cost()
        print("index look-up cost (mean per imp, same traffic and campaign mix):")
        for size, (micros, share) in costs.items():
            print(f"  {size:>7,} campaigns: {micros:7.2f} us   imps with a candidate {share:.0%}")
        ratio = costs[100_000][0] / costs[1_000][0]
        lines.append(f"index cost 100k / 1k campaigns: {ratio:.2f}x (target <= 1.5x)")
        print(lines[-1])
    os.sched_setaffinity(0, {int(LOAD_CORE)})

    from tests.infra.common import free_ports
    from tests.infra.kafka import KafkaBroker
    from tests.infra.redis import RedisServer

    from adplatform.core.bus import ensure_topics

    work = Path(tempfile.mkdtemp(prefix="adplatform-bench-"))
    bodies_file = work / "bodies.txt"
    bodies_file.write_bytes(b"\n".join(request_bodies(4000)) + b"\n")
    script = work / "bid.lua"
    script.write_text(WRK_SCRIPT)
    (work / "baseline_app.py").write_text(BASELINE_APP)

    redis = RedisServer().start()
    kafka = KafkaBroker().start()
    assert redis.process is not None
    assert kafka.process is not None
    pin(redis.process.pid, LOAD_CORE)
    pin(kafka.process.pid, LOAD_CORE)
    replicas = [start_replica(redis) for _ in range(args.redis_replicas)]
    ensure_topics([kafka.bootstrap], {"ad-events": 6, "campaign-updates": 6})
    snapshot_server, snapshot_port = serve_snapshot(synthetic_campaigns(args.campaigns))
    baseline = bidder = None
    python = str(ROOT / ".venv" / "bin" / "python")
    try:
        port, metrics_port, baseline_port = free_ports(3)
        # ---------------------------------------------------------- baseline
        baseline = subprocess.Popen(
            [
                "taskset",
                "-c",
                SERVER_CORE,
                python,
                "-c",
                "import sys; sys.path.insert(0, sys.argv[1]);"
                "import uvloop; from baseline_app import app;"
                "from adplatform.core.server import Listener, uvicorn_config;"
                "import uvicorn;"
                "listener = Listener(app, '127.0.0.1', int(sys.argv[2]));"
                "cfg = uvicorn_config(listener, log_level='warning');"
                "uvloop.run(uvicorn.Server(cfg).serve())",
                str(work),
                str(baseline_port),
            ],
            cwd=ROOT,
        )
        time.sleep(1.5)
        base_url = f"http://127.0.0.1:{baseline_port}/openrtb2/bid"
        run_wrk(base_url, bodies_file, script, 2, args.connections)
        # It stays up: its rounds alternate with the bidder's.

        # ---------------------------------------------------------- bidder
        env = {
            **os.environ,
            "ENVIRONMENT": "test",
            "LOG_LEVEL": "WARNING",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(port),
            "METRICS_PORT": str(metrics_port),
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(redis.port),
            "KAFKA_BROKERS": kafka.bootstrap,
            "TRACKING_SECRET": "bench-secret",
            "INTERNAL_API_KEY": "bench-internal",
            "CAMPAIGN_SERVICE_URL": f"http://127.0.0.1:{snapshot_port}",
            "PUBLIC_BIDDING_URL": f"http://127.0.0.1:{port}",
            "BID_CURRENCY_RATES": "EUR=1.08",
        }
        url = f"http://127.0.0.1:{port}/openrtb2/bid"
        runs: dict[int, dict[str, Any]] = {}
        for wait in [0, args.redis_replicas] if args.redis_replicas else [0]:
            redis.command("FLUSHALL")  # each run starts from full budgets
            bidder = subprocess.Popen(
                [
                    "taskset",
                    "-c",
                    SERVER_CORE,
                    str(ROOT / ".venv" / "bin" / "adplatform"),
                    "serve",
                    "bidding",
                ],
                cwd=ROOT,
                env=env | {"REDIS_WAIT_REPLICAS": str(wait)},
            )
            wait_http(f"http://127.0.0.1:{port}/ready", 120, bidder)
            run_wrk(url, bodies_file, script, 3, args.connections)
            before = scrape_outcomes(metrics_port)
            rounds: list[tuple[dict[str, float], dict[str, float]]] = []
            for _ in range(max(1, args.rounds)):
                rounds.append(
                    (
                        measured(
                            baseline, base_url, bodies_file, script, args.duration, args.connections
                        ),
                        measured(bidder, url, bodies_file, script, args.duration, args.connections),
                    )
                )
            after = scrape_outcomes(metrics_port)
            # The round with the median ratio stands for the run (its latencies too).
            ordered = sorted(rounds, key=lambda pair: pair[1]["rps"] / pair[0]["rps"])
            base, full = ordered[len(ordered) // 2]
            half = measure_half_rate(url, bodies_file, script, full["rps"] / 2, args.duration)
            unconfirmed = scrape_counter(metrics_port, "bid_reservations_unconfirmed_total")
            runs[wait] = {
                "rounds": rounds,
                "base": base,
                "full": full,
                "half": half,
                "before": before,
                "after": after,
                "unconfirmed": unconfirmed,
            }
            stop(bidder)
            bidder = None
        base, full, half = runs[0]["base"], runs[0]["full"], runs[0]["half"]
        before, after = runs[0]["before"], runs[0]["after"]
    finally:
        stop(baseline)
        stop(bidder)
        snapshot_server.shutdown()
        kafka.cleanup()
        for replica in replicas:
            replica.cleanup()
        redis.cleanup()
        shutil.rmtree(work, ignore_errors=True)

    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    answered = sum(delta.values()) or 1
    print()
    print(f"bidding benchmark: {args.campaigns:,} active campaigns, real Redis and Kafka,")
    load = f"wrk ({args.connections} connections) on core {LOAD_CORE}"
    print(f"server pinned to core {SERVER_CORE}, {load}")
    print(f"  {len(runs[0]['rounds'])} alternating rounds of {args.duration:g} s each:")
    for number, (b, f) in enumerate(runs[0]["rounds"], 1):
        print(
            f"    {number}. baseline {b['rps']:8,.0f} req/s ({b['cpu_us']:.1f} us CPU/req), full "
            f"{f['rps']:8,.0f} req/s ({f['cpu_us']:.1f} us CPU/req): ratio "
            f"{f['rps'] / b['rps']:.2f}"
        )
    print("  median round:")
    print(f"  baseline (raw ASGI + msgspec decode): {base['rps']:9,.0f} req/s  {fmt_latency(base)}")
    print(f"  full bid path:                        {full['rps']:9,.0f} req/s  {fmt_latency(full)}")
    print(f"  ratio full / baseline: {full['rps'] / base['rps']:.2f} (target >= 0.5)")
    print(
        f"  server CPU per request: baseline {base['cpu_us']:.1f} us, full {full['cpu_us']:.1f} us"
        f" -> one dedicated core: baseline {1e6 / base['cpu_us']:,.0f} req/s, full "
        f"{1e6 / full['cpu_us']:,.0f} req/s (ratio {base['cpu_us'] / full['cpu_us']:.2f})"
    )
    print(
        "  outcomes: " + ", ".join(f"{k} {v / answered:.1%}" for k, v in sorted(delta.items()) if v)
    )
    print(
        f"  at half the maximum rate ({half['rps']:,.0f} req/s, {half['connections']:.0f} paced "
        f"connections): {fmt_latency(half)} (target p99 <= 5 ms)"
    )
    errors = sum(f["socket_errors"] + f["status_errors"] for _, f in runs[0]["rounds"])
    print(f"  errors during the full-rate runs: {errors:.0f}")
    for line in lines:
        print("  " + line)
    target_ok = full["rps"] >= 12_000 and full["rps"] >= 0.5 * base["rps"] and half["p99"] <= 5000
    print(f"  throughput/latency targets met: {'yes' if target_ok else 'no'}")
    if args.redis_replicas:
        print_wait_cost(runs, args.redis_replicas)
    return 0


def start_replica(master: Any) -> Any:
    """A replica of `master`, in sync, pinned with the load (like its master)."""
    from tests.infra.common import wait_for
    from tests.infra.redis import RedisServer

    replica = RedisServer().start()
    assert replica.process is not None
    pin(replica.process.pid, LOAD_CORE)
    master.command("CONFIG", "SET", "repl-diskless-sync-delay", "0")
    replica.command("REPLICAOF", "127.0.0.1", str(master.port))
    wait_for(
        lambda: "master_link_status:up" in replica.command("INFO", "replication"),
        timeout=30,
        what="replica in sync",
    )
    return replica


def print_wait_cost(runs: dict[int, dict[str, Any]], replicas: int) -> None:
    off, on = runs[0], runs[replicas]
    print(f"\n  REDIS_WAIT_REPLICAS 0 vs {replicas} ({replicas} replica(s) attached in both runs)")
    for label, run in (("WAIT off", off), (f"WAIT {replicas}  ", on)):
        delta = {k: run["after"].get(k, 0) - run["before"].get(k, 0) for k in run["after"]}
        bids = delta.get("bid", 0) / (sum(delta.values()) or 1)
        print(
            f"    {label}: {run['full']['rps']:8,.0f} req/s, {run['full']['cpu_us']:.1f} us "
            f"CPU/request, bids {bids:.1%} ({run['unconfirmed']:.0f} reservations unconfirmed); "
            f"at half rate ({run['half']['rps']:,.0f} req/s) {fmt_latency(run['half'])}"
        )
    print(
        f"    cost of WAIT: {on['full']['cpu_us'] - off['full']['cpu_us']:+.1f} us CPU/request, "
        f"{(on['full']['rps'] / off['full']['rps'] - 1):+.1%} req/s, p50 at half rate "
        f"{(on['half']['p50'] - off['half']['p50']) / 1000:+.2f} ms, p99 "
        f"{(on['half']['p99'] - off['half']['p99']) / 1000:+.2f} ms"
    )


if __name__ == "__main__":
    sys.exit(main())
