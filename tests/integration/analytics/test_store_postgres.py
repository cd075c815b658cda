"""The PostgreSQL store: its bulk statements agree with the portable store, and the
fast path falls back exactly when an id was counted before."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from adplatform.analytics import metrics
from adplatform.analytics.aggregation import prepare_batch
from adplatform.analytics.store import OffsetConflict, PostgresStore, SqlStore
from adplatform.core.bus import Message
from adplatform.core.db import create_engine, session_factory
from adplatform.core.events import AdEvent, encode
from adplatform.migrations import upgrade
from tests.unit.analytics.support import expected_minutes, generate_events, stored_minutes

pytestmark = pytest.mark.integration

TP = ("ad-events", 0)


def polled(events: list[AdEvent], first_offset: int = 0) -> list[Message]:
    return [Message(TP[0], 0, first_offset + i, None, encode(e), 0) for i, e in enumerate(events)]


async def test_batches_with_redeliveries_are_exact_and_match_the_portable_store(
    postgres_url: str, pg_engine: AsyncEngine, tmp_path: Path
) -> None:
    events = generate_events(3000, campaigns=25, seed=71, duplicate_rate=0.1)
    third = len(events) // 3
    # batch 2 repeats half of batch 1's events (notices fired again), batch 3 is the rest
    batches = [
        (events[:third], 0),
        (events[third // 2 : 2 * third], third),
        (events[2 * third :], 2 * third),
    ]
    sqlite_url = f"sqlite:///{tmp_path / 'portable.db'}"
    await asyncio.to_thread(upgrade, sqlite_url)
    sqlite_engine = create_engine(sqlite_url)
    stores = [PostgresStore(postgres_url), SqlStore(sqlite_engine, session_factory(sqlite_engine))]
    fallbacks = metrics.SEEN_ID_BATCHES._value.get()
    results = []
    for store in stores:
        await store.load_offsets("g", [TP])
        offset, fresh = 0, 0
        for chunk, first in batches:
            batch = prepare_batch(polled(chunk, first), {TP: first})
            result = await store.commit("g", batch, {TP: offset})
            offset = first + len(chunk)
            fresh += result.fresh
        results.append(fresh)
        await store.close()
    assert metrics.SEEN_ID_BATCHES._value.get() - fallbacks == 1  # batch 2 on PostgreSQL
    assert results[0] == results[1] == len({e.id for e in events})
    assert await stored_minutes(pg_engine) == expected_minutes(events)
    assert await stored_minutes(sqlite_engine) == expected_minutes(events)
    await sqlite_engine.dispose()


async def test_a_stale_expected_offset_writes_nothing_on_postgresql(
    postgres_url: str, pg_engine: AsyncEngine
) -> None:
    store = PostgresStore(postgres_url)
    await store.load_offsets("g", [TP])
    events = generate_events(200, seed=72, duplicate_rate=0)
    await store.commit("g", prepare_batch(polled(events[:100]), {TP: 0}), {TP: 0})
    before = await stored_minutes(pg_engine)
    with pytest.raises(OffsetConflict):
        await store.commit("g", prepare_batch(polled(events[100:], 100), {TP: 100}), {TP: 7})
    assert await stored_minutes(pg_engine) == before
    assert await store.load_offsets("g", [TP]) == {TP: 100}
    await store.close()
