"""Analytics integration fixtures: a migrated PostgreSQL database and a fresh topic."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adplatform.core.bus import KafkaProducer, ensure_topics
from adplatform.core.db import create_engine
from adplatform.core.events import AdEvent, encode
from adplatform.migrations import upgrade
from tests.infra.kafka import KafkaBroker
from tests.unit.analytics.support import eventually

PARTITIONS = 6


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
