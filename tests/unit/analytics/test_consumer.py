"""The consumer on the in-process bus and SQLite: the same code path as `adplatform dev`."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adplatform.analytics.aggregation import prepare_batch
from adplatform.analytics.consumer import AnalyticsConsumer
from adplatform.analytics.store import SqlStore
from adplatform.core.bus import EventBus
from adplatform.core.db import session_factory
from adplatform.core.events import AD_EVENTS_TOPIC, AdEvent, encode
from tests.unit.analytics.support import (
    eventually,
    expected_minutes,
    generate_events,
    stored_minutes,
)


async def publish(bus: EventBus, events: list[AdEvent]) -> None:
    producer = bus.producer()
    for e in events:
        assert producer.send(AD_EVENTS_TOPIC, str(e.campaign_id), encode(e))
    await producer.flush()


def end_offsets(bus: EventBus) -> int:
    assert bus.memory is not None
    return len(bus.memory.messages(AD_EVENTS_TOPIC))


async def stored_offset_total(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        value = (
            await connection.execute(
                text("SELECT sum(next_offset) FROM analytics_consumer_offsets")
            )
        ).scalar()
    return int(value or 0)


async def caught_up(engine: AsyncEngine, bus: EventBus) -> None:
    async def done() -> bool:
        return await stored_offset_total(engine) >= end_offsets(bus)

    await eventually(done, timeout=20)


async def run_until_caught_up(
    engine: AsyncEngine, bus: EventBus, *consumers: AnalyticsConsumer
) -> None:
    tasks = [asyncio.create_task(c.run()) for c in consumers]
    try:
        await caught_up(engine, bus)
    finally:
        for c in consumers:
            await c.stop()
        await asyncio.gather(*tasks)


def consumer(engine: AsyncEngine, bus: EventBus, batch_size: int = 100) -> AnalyticsConsumer:
    return AnalyticsConsumer(
        bus, SqlStore(engine, session_factory(engine)), group="analytics", batch_size=batch_size
    )


async def test_known_events_with_duplicates_give_exact_minute_totals(engine: AsyncEngine) -> None:
    bus = EventBus.from_brokers([])
    events = generate_events(600, campaigns=12, seed=11, duplicate_rate=0.2)
    await publish(bus, events)
    worker = consumer(engine, bus)
    await run_until_caught_up(engine, bus, worker)
    assert await stored_minutes(engine) == expected_minutes(events)
    assert worker.committed_events == len({e.id for e in events})


async def test_redelivery_after_a_lost_offset_counts_nothing_twice(engine: AsyncEngine) -> None:
    bus = EventBus.from_brokers([])
    events = generate_events(300, seed=12)
    await publish(bus, events)
    await run_until_caught_up(engine, bus, consumer(engine, bus))
    # Rewind the stored offsets: every message is delivered again.
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE analytics_consumer_offsets SET next_offset = 0"))
    more = generate_events(100, seed=13)
    await publish(bus, more)
    await run_until_caught_up(engine, bus, consumer(engine, bus))
    assert await stored_minutes(engine) == expected_minutes(events + more)


async def test_two_consumers_in_one_group_split_the_partitions_exactly(
    engine: AsyncEngine,
) -> None:
    bus = EventBus.from_brokers([])
    events = generate_events(800, campaigns=30, seed=14)
    await publish(bus, events[:400])
    first, second = consumer(engine, bus, 50), consumer(engine, bus, 50)
    first_task = asyncio.create_task(first.run())
    await asyncio.sleep(0.2)
    second_task = asyncio.create_task(second.run())  # joins: a rebalance mid-stream
    await publish(bus, events[400:])
    await caught_up(engine, bus)
    assert first.positions
    assert second.positions
    assert not set(first.positions) & set(second.positions)
    for c in (first, second):
        await c.stop()
    await asyncio.gather(first_task, second_task)
    assert await stored_minutes(engine) == expected_minutes(events)


async def test_a_consumer_fenced_out_rewinds_to_the_stored_offsets(engine: AsyncEngine) -> None:
    """Another consumer commits ahead of this one (it was presumed dead): this one's
    batch is rejected whole, it re-reads the stored offsets and carries on exactly."""
    bus = EventBus.from_brokers([])
    events = generate_events(400, campaigns=6, seed=15, duplicate_rate=0.1)
    await publish(bus, events[:200])
    worker = consumer(engine, bus, 1000)
    await run_until_caught_up(engine, bus, worker)

    # A "zombie" consumer of the same group that still thinks the offsets are at 0
    # would re-apply everything: its commits must be refused, not double counted.
    zombie = consumer(engine, bus, 1000)
    store = zombie.store
    stored = await store.load_offsets("analytics", [(AD_EVENTS_TOPIC, p) for p in range(6)])
    zombie.positions = dict.fromkeys(stored, 0)
    assert bus.memory is not None
    messages = list(bus.memory.messages(AD_EVENTS_TOPIC))
    conflict = await zombie._commit(prepare_batch(messages, zombie.positions))
    assert conflict is True
    assert await stored_minutes(engine) == expected_minutes(events[:200])

    await publish(bus, events[200:])
    await run_until_caught_up(engine, bus, consumer(engine, bus))
    assert await stored_minutes(engine) == expected_minutes(events)


async def test_a_running_consumer_that_loses_a_commit_race_seeks_and_stays_exact(
    engine: AsyncEngine,
) -> None:
    """Another consumer commits the very batch this one is committing: this one's
    transaction is refused, it seeks to the stored offsets and goes on with the rest."""
    from adplatform.analytics import metrics

    bus = EventBus.from_brokers([])
    events = generate_events(500, campaigns=8, seed=16)
    await publish(bus, events)
    worker = consumer(engine, bus, 120)
    rival = SqlStore(engine, session_factory(engine))
    real_commit = worker.store.commit
    raced = 0

    async def commit_after_rival(group, batch, expected):  # type: ignore[no-untyped-def]
        nonlocal raced
        if raced < 2:
            raced += 1
            await rival.commit(group, batch, expected)  # the rival wins this range
        return await real_commit(group, batch, expected)

    worker.store.commit = commit_after_rival  # type: ignore[method-assign]
    before = metrics.OFFSET_CONFLICTS._value.get()
    await run_until_caught_up(engine, bus, worker)
    assert raced == 2
    assert metrics.OFFSET_CONFLICTS._value.get() - before == 2
    assert await stored_minutes(engine) == expected_minutes(events)
