"""Analytics integration fixtures: a migrated PostgreSQL database and a fresh topic."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adplatform.analytics.consumer import AnalyticsConsumer
from adplatform.analytics.store import PostgresStore
from adplatform.core.bus import EventBus, KafkaProducer, ensure_topics
from adplatform.core.db import create_engine
from adplatform.core.events import AdEvent, encode
from adplatform.migrations import upgrade
from tests.infra.kafka import KafkaBroker
from tests.unit.analytics.support import eventually

PARTITIONS = 6
FAST_GROUP_CONFIG = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


@pytest.fixture
async def pg_engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    await asyncio.to_thread(upgrade, postgres_url)
    engine = create_engine(postgres_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def topic(kafka_broker: KafkaBroker, topic_suffix: str) -> str:
    name = f"ad-events-{topic_suffix}"
    ensure_topics([kafka_broker.bootstrap], {name: PARTITIONS})
    return name


async def produce(brokers: str, topic: str, events: list[AdEvent]) -> None:
    """Publish in order (key: campaign id, as the bidder does) and wait for the acks."""
    producer = KafkaProducer([brokers], linger_ms=20)
    for e in events:
        assert producer.send(topic, str(e.campaign_id), encode(e))  # the buffer holds 500k
    assert await producer.flush(60) == 0
    await producer.close()


def produce_blocking(brokers: str, topic: str, events: list[AdEvent]) -> None:
    """`produce` for a worker thread (its own event loop), e.g. `asyncio.to_thread`."""
    asyncio.run(produce(brokers, topic, events))


async def stored_offsets(engine: AsyncEngine, group: str) -> int:
    async with engine.connect() as connection:
        value = (
            await connection.execute(
                text("SELECT sum(next_offset) FROM analytics_consumer_offsets WHERE group_id = :g"),
                {"g": group},
            )
        ).scalar()
    return int(value or 0)


async def wait_caught_up(
    engine: AsyncEngine, group: str, total: int, timeout: float = 120.0
) -> None:
    async def done() -> bool:
        return await stored_offsets(engine, group) >= total

    await eventually(done, timeout=timeout, interval=0.1)


def analytics_consumer(
    brokers: str,
    postgres_url: str,
    topic: str,
    group: str,
    batch_size: int = 2000,
    *,
    application_name: str = "adplatform-analytics",
) -> AnalyticsConsumer:
    """An in-process consumer on real Kafka and PostgreSQL, quick to leave a group."""
    return AnalyticsConsumer(
        EventBus.from_brokers([brokers]),
        PostgresStore(postgres_url, application_name=application_name),
        group=group,
        topic=topic,
        batch_size=batch_size,
        kafka_config=FAST_GROUP_CONFIG,
    )


async def stored_offsets_by_partition(engine: AsyncEngine, group: str) -> dict[int, int]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT partition, next_offset FROM analytics_consumer_offsets WHERE group_id = :g"
            ),
            {"g": group},
        )
        return {int(r[0]): int(r[1]) for r in rows}


_MID_BATCH = text(
    """
SELECT a.pid, a.xact_start,
       (SELECT coalesce(sum(o.next_offset), 0) FROM analytics_consumer_offsets AS o
        WHERE o.group_id = :group) AS stored
FROM pg_stat_activity AS a
WHERE a.application_name = :app AND a.backend_start >= :since
  AND a.state IN ('active', 'idle in transaction')
  AND a.backend_xid IS NOT NULL
  AND (a.query LIKE '%SET next_offset%'
       OR a.query LIKE '%COPY%analytics_batch%'
       OR a.query LIKE '%INTO analytics_campaign_minute%'
       OR a.query LIKE '%INTO analytics_processed_events%')
"""
)


@dataclass(frozen=True)
class MidBatch:
    """A consumer's batch transaction seen open (it has written: it has an xid)."""

    pid: int
    xact_start: datetime
    stored: int
    """The group's committed offsets (summed) at that moment, without this batch."""


async def database_now(engine: AsyncEngine) -> datetime:
    async with engine.connect() as connection:
        value = (await connection.execute(text("SELECT now()"))).scalar()
    assert isinstance(value, datetime)
    return value


async def open_batch(
    engine: AsyncEngine, *, app: str, group: str, since: datetime
) -> MidBatch | None:
    """The batch transaction the consumer named `app` (connected after `since`) has
    open right now, if any: a SIGKILL now lands in the middle of a batch."""
    async with engine.connect() as connection:
        row = (
            await connection.execute(_MID_BATCH, {"app": app, "group": group, "since": since})
        ).first()
    if row is None:
        return None
    return MidBatch(int(row.pid), row.xact_start, int(row.stored))


async def backend_gone(engine: AsyncEngine, pid: int, timeout: float = 30.0) -> None:
    """Wait until the server has ended a killed client's backend (rolled back)."""

    async def gone() -> bool:
        async with engine.connect() as connection:
            found = (
                await connection.execute(
                    text("SELECT 1 FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
                )
            ).first()
        return found is None

    await eventually(gone, timeout=timeout)


async def kill_mid_batch(
    process: subprocess.Popen[bytes],
    engine: AsyncEngine,
    *,
    app: str,
    group: str,
    since: datetime,
    timeout: float = 120.0,
) -> bool:
    """SIGKILL `process` the moment a batch transaction of `app` is seen open; True if
    the kill interrupted it (the server rolled it back: the committed offsets did not
    move), False if it committed in the instant between look and kill."""
    async with asyncio.timeout(timeout):
        while True:
            if process.poll() is not None:
                raise AssertionError("the consumer process exited before it was killed")
            seen = await open_batch(engine, app=app, group=group, since=since)
            if seen is not None:
                break
            await asyncio.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    await backend_gone(engine, seen.pid)
    return await stored_offsets(engine, group) == seen.stored
