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


async def stored_offsets_by_partition(engine: AsyncEngine) -> dict[tuple[str, int], int]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT topic, partition, next_offset FROM analytics_consumer_offsets")
        )
        return {(r[0], r[1]): r[2] for r in rows}


async def test_ready_only_once_the_group_has_assigned_partitions(engine: AsyncEngine) -> None:
    """Subscribing is not joining: readiness waits for the first assignment."""
    bus = EventBus.from_brokers([])
    assert bus.memory is not None
    worker = consumer(engine, bus)
    release = asyncio.Event()
    real_load = worker.store.load_offsets

    async def slow_load(group, partitions):  # type: ignore[no-untyped-def]
        await release.wait()  # the assignment is still being handed out
        return await real_load(group, partitions)

    worker.store.load_offsets = slow_load  # type: ignore[method-assign]
    task = asyncio.create_task(worker.run())
    try:

        async def subscribed() -> bool:
            return bus.memory is not None and bus.memory.generation("analytics") > 0

        await eventually(subscribed, timeout=5)
        await asyncio.sleep(0.1)
        assert not worker.started.is_set()
        assert not worker.healthy
        release.set()

        async def assigned() -> bool:
            return worker.started.is_set() and worker.healthy

        await eventually(assigned, timeout=5)
        assert len(worker.positions) == 6
    finally:
        release.set()
        await worker.stop()
        await task


async def test_a_member_with_no_partitions_is_ready_too(engine: AsyncEngine) -> None:
    bus = EventBus.from_brokers([])
    workers = [consumer(engine, bus) for _ in range(7)]  # 6 partitions
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:

        async def all_ready() -> bool:
            owned = sum(len(w.positions) for w in workers)
            return owned == 6 and all(w.started.is_set() and w.healthy for w in workers)

        await eventually(all_ready, timeout=10)
        assert sorted(len(w.positions) for w in workers) == [0, 1, 1, 1, 1, 1, 1]
    finally:
        for w in workers:
            await w.stop()
        await asyncio.gather(*tasks)


async def test_the_groups_committed_offsets_follow_the_stored_ones(engine: AsyncEngine) -> None:
    """The in-process twin of the Kafka test: advisory commits mirror the database."""
    bus = EventBus.from_brokers([])
    assert bus.memory is not None
    events = generate_events(400, campaigns=3, seed=17)  # 3 campaigns: idle partitions
    await publish(bus, events)
    worker = consumer(engine, bus, 70)
    task = asyncio.create_task(worker.run())
    try:
        await caught_up(engine, bus)
        stored = await stored_offsets_by_partition(engine)
        assert len(stored) == 6
        assert 0 in stored.values()  # an idle partition is committed too (at 0)

        async def mirrored() -> bool:
            memory = bus.memory
            assert memory is not None
            return all(memory.committed("analytics", tp) == o for tp, o in stored.items())

        await eventually(mirrored, timeout=5)
    finally:
        await worker.stop()
        await task
    # the database stays the record: a bogus group offset is not where it resumes
    bus.memory.commit("analytics", dict.fromkeys(stored, 10_000))
    more = generate_events(50, campaigns=3, seed=18)
    await publish(bus, more)
    await run_until_caught_up(engine, bus, consumer(engine, bus))
    assert await stored_minutes(engine) == expected_minutes(events + more)
