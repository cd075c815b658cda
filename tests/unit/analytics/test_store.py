"""The portable store on SQLite: dedup across batches, fencing, offsets."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from adplatform.analytics.aggregation import prepare_batch
from adplatform.analytics.store import OffsetConflict, SqlStore
from adplatform.core.bus import Message
from adplatform.core.db import session_factory
from adplatform.core.events import AdEvent, encode
from tests.unit.analytics.support import expected_minutes, generate_events, stored_minutes

TOPIC = "ad-events"
TP = (TOPIC, 0)


def polled(events: list[AdEvent], first_offset: int = 0) -> list[Message]:
    return [Message(TOPIC, 0, first_offset + i, None, encode(e), 0) for i, e in enumerate(events)]


async def test_offsets_start_at_zero_and_follow_commits(engine: AsyncEngine) -> None:
    store = SqlStore(engine, session_factory(engine))
    assert await store.load_offsets("g", [TP, (TOPIC, 1)]) == {TP: 0, (TOPIC, 1): 0}
    events = generate_events(10, duplicate_rate=0)
    await store.commit("g", prepare_batch(polled(events), {TP: 0}), {TP: 0})
    assert await store.load_offsets("g", [TP]) == {TP: len(events)}
    assert await store.load_offsets("other-group", [TP]) == {TP: 0}


async def test_an_event_seen_in_an_earlier_batch_is_not_counted_again(engine: AsyncEngine) -> None:
    store = SqlStore(engine, session_factory(engine))
    await store.load_offsets("g", [TP])
    events = generate_events(200, duplicate_rate=0.15, seed=9)
    half = len(events) // 2
    first = await store.commit("g", prepare_batch(polled(events[:half]), {TP: 0}), {TP: 0})
    # The second batch repeats the first one entirely (a redelivery), then goes on.
    replay = events[:half] + events[half:]
    second_batch = prepare_batch(polled(replay, first_offset=half), {TP: half})
    second = await store.commit("g", second_batch, {TP: half})
    assert await stored_minutes(engine) == expected_minutes(events)
    unique = len({e.id for e in events})
    assert first.fresh + second.fresh == unique
    assert first.duplicates + second.duplicates == len(events) + half - unique


async def test_a_stale_expected_offset_writes_nothing(engine: AsyncEngine) -> None:
    store = SqlStore(engine, session_factory(engine))
    await store.load_offsets("g", [TP])
    events = generate_events(30, duplicate_rate=0)
    await store.commit("g", prepare_batch(polled(events[:10]), {TP: 0}), {TP: 0})
    before = await stored_minutes(engine)
    stale = prepare_batch(polled(events[10:], first_offset=10), {TP: 10})
    with pytest.raises(OffsetConflict):
        await store.commit("g", stale, {TP: 5})
    assert await stored_minutes(engine) == before
    assert await store.load_offsets("g", [TP]) == {TP: 10}
