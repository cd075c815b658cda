"""What Kafka itself sees of the analytics group: committed offsets and lag.

The database holds the offsets of record; the consumer also commits them to the Kafka
group, asynchronously and after its transaction, so KEDA's Kafka trigger and
`kafka-consumer-groups` see real lag. These tests read the group from the broker.
"""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import Consumer, TopicPartition
from sqlalchemy.ext.asyncio import AsyncEngine

from adplatform.analytics import consumer as consumer_module
from adplatform.core.bus import kafka_end_offsets
from adplatform.core.metrics import REGISTRY
from tests.infra.kafka import KafkaBroker
from tests.integration.analytics.conftest import (
    PARTITIONS,
    analytics_consumer,
    produce,
    stored_offsets_by_partition,
    wait_caught_up,
)
from tests.unit.analytics.support import (
    eventually,
    expected_minutes,
    generate_events,
    stored_minutes,
)

pytestmark = pytest.mark.integration


def _client(brokers: str, group: str) -> Consumer:
    """A client of the group that never joins it (reads and sets its offsets only)."""
    return Consumer({"bootstrap.servers": brokers, "group.id": group, "enable.auto.commit": False})


def kafka_committed(brokers: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets as Kafka has them (-1001: none)."""
    client = _client(brokers, group)
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: tp.offset for tp in client.committed(tps, timeout=10)}
    finally:
        client.close()


def commit_to_kafka(brokers: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    client = _client(brokers, group)
    try:
        tps = [TopicPartition(topic, p, o) for p, o in offsets.items()]
        client.commit(offsets=tps, asynchronous=False)
    finally:
        client.close()


def kafka_lag(brokers: str, group: str, topic: str) -> int:
    """The group's lag the way KEDA's Kafka trigger reads it: end minus committed."""
    ends = kafka_end_offsets([brokers], topic)
    committed = kafka_committed(brokers, group, topic)
    return sum(ends[(topic, p)] - committed[p] for p in range(PARTITIONS))


async def test_the_groups_kafka_offsets_follow_the_database_and_show_real_lag(
    kafka_broker: KafkaBroker, postgres_url: str, pg_engine: AsyncEngine, topic: str
) -> None:
    brokers = kafka_broker.bootstrap
    group = "g-advisory"
    events = generate_events(3000, campaigns=3, seed=61, duplicate_rate=0.1)
    await produce(brokers, topic, events)
    ends = await asyncio.to_thread(kafka_end_offsets, [brokers], topic)
    assert 0 in ends.values(), "three campaign keys should leave some partitions idle"
    # Offsets in Kafka far past the end: a consumer that started from them would count
    # nothing. The database (no offsets yet: from 0) is the record.
    bogus = {p: ends[(topic, p)] + 1000 for p in range(PARTITIONS)}
    await asyncio.to_thread(commit_to_kafka, brokers, group, topic, bogus)

    async def run_until_mirrored(total: int) -> None:
        worker = analytics_consumer(brokers, postgres_url, topic, group, 400)
        task = asyncio.create_task(worker.run())
        try:
            await wait_caught_up(pg_engine, group, total)
            stored = await stored_offsets_by_partition(pg_engine, group)
            assert len(stored) == PARTITIONS

            async def mirrored() -> bool:
                found = await asyncio.to_thread(kafka_committed, brokers, group, topic)
                return found == stored

            await eventually(mirrored, timeout=30, interval=0.25)
        finally:
            await worker.stop()
            await task
            await worker.store.close()

    await run_until_mirrored(len(events))
    assert await stored_minutes(pg_engine) == expected_minutes(events)
    assert await asyncio.to_thread(kafka_lag, brokers, group, topic) == 0

    # Nothing consumes: the lag Kafka reports is exactly what arrived since.
    more = generate_events(400, campaigns=3, seed=62, duplicate_rate=0.1)
    await produce(brokers, topic, more)
    assert await asyncio.to_thread(kafka_lag, brokers, group, topic) == len(more)

    await run_until_mirrored(len(events) + len(more))
    assert await stored_minutes(pg_engine) == expected_minutes(events + more)
    assert await asyncio.to_thread(kafka_lag, brokers, group, topic) == 0


async def test_consumer_lag_metric_on_real_kafka(
    kafka_broker: KafkaBroker,
    postgres_url: str,
    pg_engine: AsyncEngine,
    topic: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`event_consumer_lag_messages{group,topic,partition}`: the backlog while it is
    worked off, then 0 on every partition, labelled by group, topic and partition."""
    monkeypatch.setattr(consumer_module, "LAG_REPORT_SECONDS", 0.0)  # every loop turn
    brokers = kafka_broker.bootstrap
    group = "g-lag-metric"
    events = generate_events(12_000, campaigns=50, seed=63, duplicate_rate=0.05)
    await produce(brokers, topic, events)
    ends = await asyncio.to_thread(kafka_end_offsets, [brokers], topic)

    def lags() -> dict[int, float]:
        found = {}
        for p in range(PARTITIONS):
            value = REGISTRY.get_sample_value(
                "event_consumer_lag_messages", {"group": group, "topic": topic, "partition": str(p)}
            )
            if value is not None:
                found[p] = value
        return found

    worker = analytics_consumer(brokers, postgres_url, topic, group, 300)
    task = asyncio.create_task(worker.run())
    seen: list[dict[int, float]] = []
    try:
        async with asyncio.timeout(120):
            while await _stored_total(pg_engine, group) < len(events):
                seen.append(lags())
                await asyncio.sleep(0.01)
        await wait_caught_up(pg_engine, group, len(events))

        async def drained() -> bool:
            now = lags()
            return len(now) == PARTITIONS and all(v == 0 for v in now.values())

        await eventually(drained, timeout=30)
    finally:
        await worker.stop()
        await task
        await worker.store.close()
    backlog = [sum(sample.values()) for sample in seen if sample]
    assert backlog, "no lag was reported while the backlog was consumed"
    assert max(backlog) > 0
    assert max(backlog) <= len(events)
    # no sample ever claims more than a partition holds
    assert all(v <= ends[(topic, p)] for sample in seen for p, v in sample.items())


async def _stored_total(engine: AsyncEngine, group: str) -> int:
    return sum((await stored_offsets_by_partition(engine, group)).values())
