"""Benchmark of the analytics-service's consumer (issue 4).

    .venv/bin/python bench/analytics.py [--events 1000000] [--campaigns 10000]
                                        [--rate 10000] [--freshness-seconds 20]
                                        [--repeat 2] [--pin-servers]

Starts a real Kafka broker and a real PostgreSQL (tests/infra; `--pin-servers` pins
them to the last core), pre-fills a 6-partition topic with `--events` ad events (a
realistic mix: every auction a bid, a quarter won, wins mostly billed as impressions,
a few clicks, 1 % of notices fired twice; Zipf-distributed over `--campaigns`
campaigns, spread over ten minutes), then measures on core 0 (`taskset`):

a) the raw rate of a plain confluent-kafka consumer reading the whole topic, and
b) the rate of `adplatform serve analytics` from the same topic to committed
   aggregates in PostgreSQL (from its first commit to its last), checked exact per
   campaign and minute (bids, wins, impressions, clicks, bid and spend micros);

`--repeat` times each (a fresh database per run; the best run counts, since other
work on a shared machine only ever slows a run down), and prints both, the ratio, and
the same per CPU-second of each process, which does not depend on what else runs.
Then it produces a steady `--rate` events/s for `--freshness-seconds` and measures,
per event, the time from the event's timestamp to the moment its offset is committed
in the database (queryable), p50 and p99.

Targets: >= 100,000 events/s on one core, >= 0.5 x raw, freshness p99 < 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adplatform.core.bus import ensure_topics  # noqa: E402
from adplatform.core.events import AdEvent, AdEventType, ad_event_id, encode  # noqa: E402

PARTITIONS = 6
GROUP = "bench-analytics"
MEASURE_OF = {
    AdEventType.BID: 0,
    AdEventType.WIN: 1,
    AdEventType.IMPRESSION: 2,
    AdEventType.CLICK: 3,
}
"""The counter each event type adds one to (a billing notice only carries spend)."""


# ----------------------------------------------------------------------- workload


class Workload:
    """Realistic ad events: auctions over Zipf-popular campaigns, with notices."""

    def __init__(self, campaigns: int, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        weights = [1.0 / rank for rank in range(1, campaigns + 1)]
        self.cumulative = list(itertools.accumulate(weights))
        self.campaigns = campaigns
        self.auction = 0
        self.unique = 0
        self.spend = 0
        self.counts = dict.fromkeys(AdEventType, 0)
        self.minutes: dict[tuple[int, int], list[int]] = {}
        """Per (campaign, minute): bids, wins, impressions, clicks, bid and spend micros."""

    def _campaign(self) -> int:
        point = self.rng.random() * self.cumulative[-1]
        return bisect.bisect_left(self.cumulative, point) + 1

    def auction_events(self, ts_ms: int) -> list[tuple[AdEvent, bool]]:
        """One auction's events, each with whether it is a repeated notice."""
        rng = self.rng
        self.auction += 1
        campaign = self._campaign()
        advertiser = (campaign - 1) // 10 + 1
        auction_id = f"bench-{self.auction:012d}"
        bid = rng.randint(200, 8000)
        kinds = [(AdEventType.BID, 0)]
        if rng.random() < 0.25:
            price = rng.randint(100, bid)
            if rng.random() < 0.3:
                kinds += [(AdEventType.WIN, 0), (AdEventType.BILLING, price)]
            else:
                kinds.append((AdEventType.WIN, price))
            if rng.random() < 0.95:
                kinds.append((AdEventType.IMPRESSION, 0))
                if rng.random() < 0.03:
                    kinds.append((AdEventType.CLICK, 0))
        events = []
        for kind, spend in kinds:
            event = AdEvent(
                id=ad_event_id(auction_id, "1", kind),
                type=kind,
                ts_ms=ts_ms,
                campaign_id=campaign,
                advertiser_id=advertiser,
                creative_id=campaign * 3,
                auction_id=auction_id,
                imp_id="1",
                bid_micros=bid,
                spend_micros=spend,
            )
            events.append((event, False))
            if rng.random() < 0.01:
                events.append((event, True))  # the same notice fired twice
        return events

    def count(self, event: AdEvent) -> None:
        """Record a produced first copy: what the aggregates must add up to."""
        self.unique += 1
        self.spend += event.spend_micros
        self.counts[event.type] += 1
        key = (event.campaign_id, event.ts_ms // 60_000 * 60)
        row = self.minutes.get(key)
        if row is None:
            row = self.minutes[key] = [0, 0, 0, 0, 0, 0]
        column = MEASURE_OF.get(event.type)
        if column is not None:
            row[column] += 1
        if event.type == AdEventType.BID:
            row[4] += event.bid_micros  # bid micros are summed over bids only
        row[5] += event.spend_micros


def prefill(brokers: str, topic: str, total: int, campaigns: int) -> Workload:
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": brokers,
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "enable.idempotence": True,
            "acks": "all",
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    workload = Workload(campaigns)
    now_ms = int(time.time() * 1000)
    span_ms = 10 * 60_000
    produced = 0
    while produced < total:
        ts = now_ms - span_ms + (produced * span_ms) // total
        for event, repeated in workload.auction_events(ts):
            if produced >= total:
                break
            if not repeated:
                workload.count(event)
            payload = encode(event)
            key = str(event.campaign_id).encode()
            while True:
                try:
                    producer.produce(topic, payload, key)
                    break
                except BufferError:
                    producer.poll(0.05)
            produced += 1
        if produced % 20_000 == 0:
            producer.poll(0)
    if producer.flush(120):
        raise SystemExit("pre-fill: messages left undelivered")
    return workload


# --------------------------------------------------------------------- raw consumer


def raw_consume(brokers: str, topic: str, total: int) -> dict[str, float]:
    """A plain confluent-kafka consumer: consume batches, touch every value."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": f"bench-raw-{os.getpid()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    count = 0
    size = 0
    started = None
    cpu_start = time.process_time()
    while count < total:
        batch = consumer.consume(10_000, 1.0)
        if started is None and batch:
            started = time.perf_counter()
            cpu_start = time.process_time()
        for message in batch:
            if message.error() is None:
                value = message.value()
                assert value is not None  # the pre-fill produces no tombstones
                count += 1
                size += len(value)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    cpu = time.process_time() - cpu_start  # every thread, librdkafka's included
    consumer.close()
    return {"events": count, "seconds": elapsed, "rate": count / elapsed, "cpu": cpu}


# -------------------------------------------------------------------- the service


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_service(
    database_url: str, brokers: str, topic: str, log: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ENVIRONMENT": "test",
        "DATABASE_URL": database_url,
        "KAFKA_BROKERS": brokers,
        "ADMIN_API_KEY": "bench-admin-key",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(free_port()),
        "METRICS_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
        "ANALYTICS_TOPIC": topic,
        "ANALYTICS_CONSUMER_GROUP": GROUP,
    }
    adplatform = Path(sys.executable).with_name("adplatform")
    with open(log, "ab") as out:
        return subprocess.Popen(
            ["taskset", "-c", "0", str(adplatform), "serve", "analytics"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def free_port() -> int:
    from tests.infra.common import free_port as pick

    return pick()


async def committed(connection: Any) -> dict[int, int]:
    rows = await connection.fetch(
        "SELECT partition, next_offset FROM analytics_consumer_offsets WHERE group_id = $1",
        GROUP,
    )
    return {r["partition"]: r["next_offset"] for r in rows}


async def measure_service(
    dsn: str, total: int, process: subprocess.Popen[bytes]
) -> dict[str, float]:
    import asyncpg  # type: ignore[import-untyped]

    connection = await asyncpg.connect(dsn)
    first_at = first_count = None
    cpu_start = cpu_seconds(process.pid)
    backend = None
    backend_start = 0.0
    deadline = time.monotonic() + 600
    while True:
        done = sum((await committed(connection)).values())
        now = time.perf_counter()
        if first_at is None and done > 0:
            first_at, first_count = now, done
            cpu_start = cpu_seconds(process.pid)
            backend = await connection.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'adplatform-analytics'"
            )
            backend_start = cpu_seconds(backend) if backend else 0.0
        if done >= total:
            break
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"service stopped or stalled at {done}/{total}")
        await asyncio.sleep(0.01)
    cpu = cpu_seconds(process.pid) - cpu_start
    database_cpu = cpu_seconds(backend) - backend_start if backend else float("nan")
    assert first_at is not None
    assert first_count is not None
    events = total - first_count
    elapsed = now - first_at
    await connection.close()
    if events == 0 or elapsed <= 0:
        raise SystemExit(
            f"all {total} events were committed before the first sample: "
            "too few to time, use a larger --events"
        )
    return {
        "events": events,
        "seconds": elapsed,
        "rate": events / elapsed,
        "cpu": cpu,
        "database_cpu": database_cpu,
    }


async def check_exact(dsn: str, workload: Workload) -> None:
    """Every (campaign, minute) row equals what was produced: all six measures."""
    import asyncpg

    connection = await asyncpg.connect(dsn)
    rows = await connection.fetch(
        "SELECT campaign_id, bucket, bids, wins, impressions, clicks, bid_micros,"
        " spend_micros FROM analytics_campaign_minute"
    )
    await connection.close()
    got = {(r[0], r[1]): [int(v) for v in tuple(r)[2:]] for r in rows}
    want = workload.minutes
    if got != want:
        wrong = sorted(key for key in got.keys() | want.keys() if got.get(key) != want.get(key))
        examples = ", ".join(
            f"campaign {c} minute {b}: got {got.get((c, b))}, want {want.get((c, b))}"
            for c, b in wrong[:3]
        )
        raise SystemExit(
            f"aggregates are not exact: {len(wrong)} of {len(want)} (campaign, minute) "
            f"rows differ ({examples})"
        )


# ---------------------------------------------------------------------- freshness


async def measure_freshness(
    brokers: str, topic: str, dsn: str, rate: int, seconds: float, workload: Workload
) -> dict[str, float]:
    """Produce `rate` events/s; per event, commit time minus event time."""
    import asyncpg
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": brokers,
            "linger.ms": 5,
            "compression.type": "lz4",
            "enable.idempotence": True,
            "acks": "all",
        }
    )
    sent: dict[int, list[tuple[int, int]]] = {p: [] for p in range(PARTITIONS)}

    def delivered(err: Any, msg: Any) -> None:
        if err is None:
            sent[msg.partition()].append((msg.offset(), msg.timestamp()[1]))

    connection = await asyncpg.connect(dsn)
    delays: list[float] = []
    cursor = dict.fromkeys(range(PARTITIONS), 0)

    async def sample() -> None:
        stored = await committed(connection)
        now_ms = time.time() * 1000
        for partition, next_offset in stored.items():
            done = sent[partition]
            i = cursor[partition]
            while i < len(done) and done[i][0] < next_offset:
                delays.append((now_ms - done[i][1]) / 1000)
                i += 1
            cursor[partition] = i

    tick = 0.01
    per_tick = rate * tick
    owed = 0.0
    started = time.perf_counter()
    produced = 0
    next_tick = started
    while time.perf_counter() - started < seconds:
        owed += per_tick
        while owed >= 1:
            ts = int(time.time() * 1000)
            for event, _ in workload.auction_events(ts):
                producer.produce(
                    topic,
                    encode(event),
                    str(event.campaign_id).encode(),
                    on_delivery=delivered,
                    timestamp=ts,
                )
                produced += 1
                owed -= 1
        producer.poll(0)
        await sample()
        next_tick += tick
        await asyncio.sleep(max(0.0, next_tick - time.perf_counter()))
    producer.flush(30)
    drain_deadline = time.monotonic() + 30
    while sum(cursor.values()) < produced and time.monotonic() < drain_deadline:
        producer.poll(0)
        await sample()
        await asyncio.sleep(0.01)
    await connection.close()
    delays.sort()
    if len(delays) < produced:
        raise SystemExit(f"freshness: only {len(delays)} of {produced} events committed")
    return {
        "events": produced,
        "rate": produced / seconds,
        "p50": delays[len(delays) // 2],
        "p99": delays[int(len(delays) * 0.99)],
        "max": delays[-1],
    }


# --------------------------------------------------------------------------- main


def pin(pid: int, core: int) -> None:
    subprocess.run(
        ["taskset", "-a", "-p", "-c", str(core), str(pid)], check=False, capture_output=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--campaigns", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--freshness-seconds", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=2, help="runs of (a) and (b); best kept")
    parser.add_argument(
        "--pin-servers",
        action="store_true",
        help="also pin Kafka and PostgreSQL to the last core (default: they float)",
    )
    parser.add_argument("--raw-only", nargs=2, metavar=("BROKERS", "TOPIC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_only:
        print(json.dumps(raw_consume(args.raw_only[0], args.raw_only[1], args.events)))
        return

    from tests.infra.kafka import KafkaBroker
    from tests.infra.postgres import PostgresServer

    from adplatform.analytics.store import asyncpg_dsn
    from adplatform.migrations import upgrade

    cores = os.cpu_count() or 1
    other = cores - 1 if cores > 1 else 0
    broker = KafkaBroker(heap="1g").start()
    postgres = PostgresServer().start()
    service: subprocess.Popen[bytes] | None = None
    try:
        if args.pin_servers:
            for process in (broker.process, postgres.process):
                if process is not None:
                    pin(process.pid, other)
        topic = f"bench-ad-events-{os.getpid()}"
        ensure_topics([broker.bootstrap], {topic: PARTITIONS})
        print(
            f"pre-filling {args.events:,} events over {args.campaigns:,} campaigns ...", flush=True
        )
        started = time.perf_counter()
        workload = prefill(broker.bootstrap, topic, args.events, args.campaigns)
        print(
            f"  done in {time.perf_counter() - started:.1f} s ({workload.unique:,} distinct ids)",
            flush=True,
        )

        raws: list[dict[str, float]] = []
        runs: list[dict[str, float]] = []
        for attempt in range(args.repeat):
            raws.append(
                json.loads(
                    subprocess.run(
                        [
                            "taskset",
                            "-c",
                            "0",
                            sys.executable,
                            __file__,
                            "--events",
                            str(args.events),
                            "--raw-only",
                            broker.bootstrap,
                            topic,
                        ],
                        check=True,
                        capture_output=True,
                        text=True,
                    )
                    .stdout.strip()
                    .splitlines()[-1]
                )
            )
            url = postgres.create_database(f"bench_analytics_{attempt}")
            upgrade(url)
            dsn = asyncpg_dsn(url)
            log = Path(broker.root) / f"analytics-service-{attempt}.log"
            service = start_service(url, broker.bootstrap, topic, log)
            runs.append(asyncio.run(measure_service(dsn, args.events, service)))
            asyncio.run(check_exact(dsn, workload))
            if attempt < args.repeat - 1:
                service.send_signal(signal.SIGTERM)
                service.wait(30)
                service = None
            print(
                f"  run {attempt + 1}: raw {raws[-1]['rate']:,.0f}/s, "
                f"service {runs[-1]['rate']:,.0f}/s",
                flush=True,
            )
        fresh = asyncio.run(
            measure_freshness(
                broker.bootstrap, topic, dsn, args.rate, args.freshness_seconds, workload
            )
        )
    finally:
        if service is not None:
            service.send_signal(signal.SIGTERM)
            try:
                service.wait(30)
            except subprocess.TimeoutExpired:
                service.kill()
        broker.cleanup()
        postgres.cleanup()

    raw = max(raws, key=lambda r: r["rate"])
    result = max(runs, key=lambda r: r["rate"])
    ratio = result["rate"] / raw["rate"]
    service_per_cpu = result["events"] / result["cpu"]
    raw_per_cpu = raw["events"] / raw["cpu"]
    print()
    print(
        f"analytics benchmark: {args.events:,} events, {args.campaigns:,} campaigns, "
        f"{PARTITIONS} partitions, {cores} cores, best of {args.repeat} "
        "(service and raw consumer pinned to core 0)"
    )
    print(f"  (a) raw confluent-kafka consume      {raw['rate']:>10,.0f} events/s")
    print(f"  (b) service to committed aggregates  {result['rate']:>10,.0f} events/s (exact)")
    print(f"      ratio (b)/(a)                    {ratio:>10.2f}")
    print(
        f"  per CPU-second (load-independent): raw {raw_per_cpu:,.0f} events, "
        f"service {service_per_cpu:,.0f} events (ratio {service_per_cpu / raw_per_cpu:.2f}); "
        f"the service's PostgreSQL backend spends "
        f"{result['database_cpu'] / result['events'] * 1e6:.1f} us per event"
    )
    print(
        f"  freshness at {fresh['rate']:,.0f} events/s for {args.freshness_seconds:g} s: "
        f"p50 {fresh['p50'] * 1000:.0f} ms, p99 {fresh['p99'] * 1000:.0f} ms, "
        f"max {fresh['max'] * 1000:.0f} ms"
    )
    targets = [
        ("rate >= 100,000 events/s", result["rate"] >= 100_000),
        ("ratio >= 0.5", ratio >= 0.5),
        ("freshness p99 < 2 s", fresh["p99"] < 2.0),
    ]
    for name, ok in targets:
        print(f"  target {name:<28} {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
