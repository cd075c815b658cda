"""Exactly once against real Kafka and PostgreSQL: duplicates, SIGKILLs, rebalances."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.infra.common import PROJECT_ROOT, free_port, port_open
from tests.infra.kafka import KafkaBroker
from tests.integration.analytics.conftest import (
    PARTITIONS,
    analytics_consumer,
    database_now,
    kill_mid_batch,
    produce,
    produce_blocking,
    stored_offsets,
    wait_caught_up,
)
from tests.integration.analytics.consumer_process import VICTIM_APP
from tests.unit.analytics.support import (
    eventually,
    expected_campaigns,
    expected_minutes,
    generate_events,
    stored_campaigns,
    stored_minutes,
)

pytestmark = pytest.mark.integration


async def test_known_events_with_duplicates_give_exact_totals_per_campaign_and_minute(
    kafka_broker: KafkaBroker, postgres_url: str, pg_engine: AsyncEngine, topic: str
) -> None:
    events = generate_events(6000, campaigns=40, seed=51, duplicate_rate=0.15)
    duplicates = len(events) - len({e.id for e in events})
    assert duplicates > 500
    await produce(kafka_broker.bootstrap, topic, events)
    consumer = analytics_consumer(kafka_broker.bootstrap, postgres_url, topic, "g-dup", 1000)
    task = asyncio.create_task(consumer.run())
    try:
        await wait_caught_up(pg_engine, "g-dup", len(events))
    finally:
        await consumer.stop()
        await task
        await consumer.store.close()
    assert await stored_minutes(pg_engine) == expected_minutes(events)
    assert consumer.committed_events == len(events) - duplicates


async def test_two_consumers_in_one_group_with_forced_rebalances_stay_exact(
    kafka_broker: KafkaBroker, postgres_url: str, pg_engine: AsyncEngine, topic: str
) -> None:
    events = generate_events(40_000, campaigns=60, seed=52, duplicate_rate=0.1)
    group = "g-rebalance"
    first = analytics_consumer(kafka_broker.bootstrap, postgres_url, topic, group, 500)
    second = analytics_consumer(kafka_broker.bootstrap, postgres_url, topic, group, 500)
    third = analytics_consumer(kafka_broker.bootstrap, postgres_url, topic, group, 500)
    producing = asyncio.create_task(produce(kafka_broker.bootstrap, topic, events))
    tasks = [asyncio.create_task(first.run())]
    try:

        async def under_way() -> bool:
            return await stored_offsets(pg_engine, group) >= 3000

        await eventually(under_way, timeout=60)  # the first one is under way alone
        tasks.append(asyncio.create_task(second.run()))  # rebalance: partitions move

        async def both_own_partitions() -> bool:
            return bool(first.positions and second.positions)

        await eventually(both_own_partitions, timeout=60)
        assert not set(first.positions) & set(second.positions)
        await first.stop()  # rebalance again: the second takes everything over
        await tasks[0]
        tasks.append(asyncio.create_task(third.run()))  # and a third one joins
        await producing
        await wait_caught_up(pg_engine, group, len(events))
    finally:
        for c in (first, second, third):
            await c.stop()
        await asyncio.gather(*tasks, producing, return_exceptions=True)
        for c in (first, second, third):
            await c.store.close()
    assert await stored_minutes(pg_engine) == expected_minutes(events)
    assert first.committed_events + second.committed_events + third.committed_events == len(
        {e.id for e in events}
    )


SERVICE_APP = "adplatform-analytics"
"""The service's PostgreSQL application name (its store's connection)."""


def _serve(
    postgres_url: str, brokers: str, topic: str, group: str, log: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """`adplatform serve analytics` with its default batch size (20,000 events)."""
    port = free_port()
    env = {
        **os.environ,
        "ENVIRONMENT": "test",
        "DATABASE_URL": postgres_url,
        "KAFKA_BROKERS": brokers,
        "ADMIN_API_KEY": "integration-admin",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(port),
        "METRICS_ENABLED": "false",
        "ANALYTICS_TOPIC": topic,
        "ANALYTICS_CONSUMER_GROUP": group,
    }
    env.pop("ANALYTICS_BATCH_SIZE", None)
    adplatform = Path(sys.executable).with_name("adplatform")
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [str(adplatform), "serve", "analytics"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    return process, port


@pytest.mark.slow
async def test_sigkill_mid_batch_then_restart_keeps_totals_exact(
    kafka_broker: KafkaBroker,
    postgres_url: str,
    pg_engine: AsyncEngine,
    topic: str,
    tmp_path: Path,
) -> None:
    """`adplatform serve analytics` (batches of the default 20,000 events) is killed
    with SIGKILL five times, each time while its PostgreSQL connection has a batch
    transaction open (seen in pg_stat_activity), inside the first, second or third
    batch of its run, while more events arrive; restarted each time. A kill counts as
    interrupting a batch only if the server then rolled that transaction back (the
    stored offsets did not move); at least three must have."""
    rng = random.Random(53)
    group = "g-kill"
    first = generate_events(150_000, campaigns=300, seed=53, duplicate_rate=0.1)
    later = generate_events(20_000, campaigns=300, seed=54, duplicate_rate=0.1)
    await produce(kafka_broker.bootstrap, topic, first)
    log = tmp_path / "analytics.log"
    interrupted = 0
    progress: list[int] = []
    for round_number in range(5):
        since = await database_now(pg_engine)
        process, port = _serve(postgres_url, kafka_broker.bootstrap, topic, group, log)
        try:
            if round_number == 1:
                await produce(kafka_broker.bootstrap, topic, later[:10_000])
            # let it commit up to two batches, then kill inside the next one
            for _ in range(rng.randint(0, 2)):
                before = await stored_offsets(pg_engine, group)
                async with asyncio.timeout(120):
                    while await stored_offsets(pg_engine, group) <= before:
                        assert process.poll() is None, log.read_text()[-3000:]
                        await asyncio.sleep(0.005)
            await asyncio.sleep(rng.uniform(0, 0.05))
            if await kill_mid_batch(process, pg_engine, app=SERVICE_APP, group=group, since=since):
                interrupted += 1
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
        progress.append(await stored_offsets(pg_engine, group))
    print(f"{interrupted} of 5 kills interrupted a batch; stored offsets after each: {progress}")
    assert interrupted >= 3, f"only {interrupted} of 5 kills interrupted a batch"
    total = len(first) + 10_000
    assert progress[-1] < total, "the kills should land before the end of the stream"
    assert progress == sorted(progress)

    await produce(kafka_broker.bootstrap, topic, later[10_000:])
    process, port = _serve(postgres_url, kafka_broker.bootstrap, topic, group, log)
    try:
        await wait_caught_up(pg_engine, group, len(first) + len(later), timeout=180)

        async def listening() -> bool:
            return port_open(port)

        await eventually(listening, timeout=30)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    # uvicorn re-raises the signal once it has shut down gracefully
    assert process.returncode in (0, -signal.SIGTERM), log.read_text()[-3000:]
    assert "Application shutdown complete" in log.read_text()[-3000:]
    everything = first + later
    assert await stored_minutes(pg_engine) == expected_minutes(everything)
    assert await stored_campaigns(pg_engine) == expected_campaigns(everything)


def _lone_consumer(
    brokers: str, postgres_url: str, topic: str, group: str, log: Path
) -> subprocess.Popen[bytes]:
    """An analytics consumer in a process of its own (batches of 2,000 events)."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.analytics.consumer_process",
                brokers,
                postgres_url,
                topic,
                group,
                "2000",
                VICTIM_APP,
            ],
            cwd=PROJECT_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.slow
async def test_a_group_member_sigkilled_mid_batch_hands_its_partitions_over_exactly(
    kafka_broker: KafkaBroker,
    postgres_url: str,
    pg_engine: AsyncEngine,
    topic: str,
    tmp_path: Path,
) -> None:
    """Three consumers in one group, one of them in its own process: SIGKILLed (no
    goodbye to the group) while it has a batch transaction open. The other two take
    its partitions over once its session times out, from the offsets it committed,
    and the totals are exact."""
    brokers = kafka_broker.bootstrap
    group = "g-member-kill"
    all_partitions = {(topic, p) for p in range(PARTITIONS)}
    first = analytics_consumer(brokers, postgres_url, topic, group, 500)
    second = analytics_consumer(brokers, postgres_url, topic, group, 500)
    log = tmp_path / "victim.log"
    victim = _lone_consumer(brokers, postgres_url, topic, group, log)
    since = await database_now(pg_engine)
    tasks = [asyncio.create_task(c.run()) for c in (first, second)]
    try:

        async def three_members() -> bool:  # 6 partitions: two each
            assert victim.poll() is None, log.read_text()[-3000:]
            return len(first.positions) == 2 and len(second.positions) == 2

        await eventually(three_members, timeout=90, interval=0.1)
        victims = all_partitions - set(first.positions) - set(second.positions)
        assert len(victims) == 2

        events = generate_events(60_000, campaigns=120, seed=56, duplicate_rate=0.1)
        # produced from a thread, so this loop keeps watching the victim meanwhile
        producing = asyncio.create_task(
            asyncio.to_thread(produce_blocking, brokers, topic, events[: len(events) // 2])
        )
        # killed only once seen inside a batch transaction (whether the server then
        # rolled it back or it committed in the instant between is left to chance)
        await kill_mid_batch(victim, pg_engine, app=VICTIM_APP, group=group, since=since)
        victim.wait(10)
        assert victim.returncode == -signal.SIGKILL
        committed_before = await stored_offsets(pg_engine, group)
        await producing

        async def taken_over() -> bool:
            owned = set(first.positions) | set(second.positions)
            return owned == all_partitions

        await eventually(taken_over, timeout=60, interval=0.1)
        assert not set(first.positions) & set(second.positions)
        assert committed_before < len(events) // 2, "the victim should die mid-stream"
        await produce(brokers, topic, events[len(events) // 2 :])
        await wait_caught_up(pg_engine, group, len(events))
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait(10)
        for c in (first, second):
            await c.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in (first, second):
            await c.store.close()
    assert await stored_minutes(pg_engine) == expected_minutes(events)


@pytest.mark.slow
async def test_postgresql_killed_mid_stream_then_back_keeps_totals_exact(
    kafka_broker: KafkaBroker, topic: str
) -> None:
    """The database dies (SIGKILL) while batches commit; the consumer backs off,
    rebuilds itself once PostgreSQL has recovered, and the totals are exact."""
    from adplatform.analytics import metrics
    from adplatform.core.db import create_engine
    from adplatform.migrations import upgrade
    from tests.infra.postgres import PostgresServer

    server = PostgresServer().start()
    try:
        url = server.create_database("analytics_outage")
        await asyncio.to_thread(upgrade, url)
        engine = create_engine(url)
        events = generate_events(60_000, campaigns=80, seed=55, duplicate_rate=0.1)
        await produce(kafka_broker.bootstrap, topic, events)
        consumer = analytics_consumer(kafka_broker.bootstrap, url, topic, "g-pg-kill", 2000)
        restarts = metrics.CONSUMER_RESTARTS._value.get()
        task = asyncio.create_task(consumer.run())
        try:

            async def under_way() -> bool:
                return consumer.committed_events > 5000

            await eventually(under_way, timeout=60)
            await asyncio.to_thread(server.kill)
            assert consumer.committed_events < len({e.id for e in events}), "killed too late"
            await asyncio.sleep(1.0)
            await asyncio.to_thread(server.restart)
            await engine.dispose()
            await wait_caught_up(engine, "g-pg-kill", len(events), timeout=120)
        finally:
            await consumer.stop()
            await task
            await consumer.store.close()
        assert metrics.CONSUMER_RESTARTS._value.get() > restarts
        assert await stored_minutes(engine) == expected_minutes(events)
        await engine.dispose()
    finally:
        server.cleanup()
