"""The roll-up moves minutes into hours without changing any total."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adplatform.analytics.aggregation import prepare_batch
from adplatform.analytics.retention import (
    DAY,
    prune_processed_ids,
    roll_up_minutes,
    rollup_cutoff,
)
from adplatform.analytics.store import SqlStore
from adplatform.core.bus import Message
from adplatform.core.db import session_factory
from adplatform.core.events import AdEvent, encode
from tests.unit.analytics.support import (
    expected_campaigns,
    generate_events,
    stored_campaigns,
    stored_minutes,
)

TP = ("ad-events", 0)
START_MS = 1_790_000_000_000  # events span 3 days from here


async def load(engine: AsyncEngine, events: list[AdEvent], offset: int = 0) -> None:
    store = SqlStore(engine, session_factory(engine))
    await store.load_offsets("g", [TP])
    messages = [Message(TP[0], 0, offset + i, None, encode(e), 0) for i, e in enumerate(events)]
    await store.commit("g", prepare_batch(messages, {TP: offset}), {TP: offset})


async def hour_rows(engine: AsyncEngine) -> list[tuple[int, int]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT campaign_id, bucket FROM analytics_campaign_hour")
        )
        return [(r[0], r[1]) for r in rows]


def test_cutoff_is_an_hour_boundary_n_days_back() -> None:
    now = 1_790_003_599
    cutoff = rollup_cutoff(2, now)
    assert cutoff % 3600 == 0
    assert now - 2 * DAY - 3600 < cutoff <= now - 2 * DAY


async def test_roll_up_keeps_totals_and_leaves_recent_minutes(engine: AsyncEngine) -> None:
    events = generate_events(3000, campaigns=9, seed=21, start_ms=START_MS, span_ms=3 * DAY * 1000)
    await load(engine, events)
    minutes_before = await stored_minutes(engine)
    now = START_MS / 1000 + 3 * DAY  # end of the span: a day and a half back is the middle
    result = await roll_up_minutes(engine, older_than_days=1, now=now + DAY // 2)
    assert result.minute_rows > 0
    assert result.hour_rows > 0
    remaining = await stored_minutes(engine)
    assert all(bucket >= result.cutoff for _, bucket in remaining)
    assert {k: v for k, v in minutes_before.items() if k[1] >= result.cutoff} == remaining
    assert all(
        bucket % 3600 == 0 and bucket < result.cutoff for _, bucket in await hour_rows(engine)
    )
    assert await stored_campaigns(engine) == expected_campaigns(events)

    again = await roll_up_minutes(engine, older_than_days=1, now=now + DAY // 2)
    assert again.minute_rows == 0
    assert await stored_campaigns(engine) == expected_campaigns(events)


async def test_late_events_for_a_rolled_up_hour_merge_into_it(engine: AsyncEngine) -> None:
    events = generate_events(500, campaigns=3, seed=22, start_ms=START_MS, span_ms=3600_000)
    await load(engine, events)
    now = START_MS / 1000 + 10 * DAY
    await roll_up_minutes(engine, older_than_days=7, now=now)
    late = generate_events(200, campaigns=3, seed=23, start_ms=START_MS, span_ms=3600_000)
    await load(engine, late, offset=len(events))
    hours_before = set(await hour_rows(engine))
    await roll_up_minutes(engine, older_than_days=7, now=now)
    assert set(await hour_rows(engine)) == hours_before  # merged, not duplicated
    assert await stored_minutes(engine) == {}
    assert await stored_campaigns(engine) == expected_campaigns(events + late)


async def test_prune_forgets_only_ids_older_than_the_window(engine: AsyncEngine) -> None:
    events = generate_events(400, seed=24, start_ms=START_MS, span_ms=10 * 3600_000)
    await load(engine, events)
    async with engine.connect() as connection:
        total = (
            await connection.execute(text("SELECT count(*) FROM analytics_processed_events"))
        ).scalar()
    now = START_MS / 1000 + 10 * 3600
    removed = await prune_processed_ids(engine, older_than_hours=5, now=now)
    async with engine.connect() as connection:
        oldest = (
            await connection.execute(text("SELECT min(bucket) FROM analytics_processed_events"))
        ).scalar()
        left = (
            await connection.execute(text("SELECT count(*) FROM analytics_processed_events"))
        ).scalar()
    assert total is not None
    assert left is not None
    assert oldest is not None  # ids inside the window remain
    assert 0 < removed < total
    assert left == total - removed
    assert oldest >= now - 5 * 3600 - 60


async def test_an_event_from_1970_costs_one_slice_not_one_per_day_since(
    engine: AsyncEngine,
) -> None:
    """ts_ms=0 is counted (a late event is never dropped for its age), and the jobs
    visit only the slices that hold rows: before, they stepped from 1970 a day (roll-up)
    or an hour (prune) at a time, some 20,000 and 490,000 transactions."""
    from sqlalchemy import event as sa_event

    events = generate_events(300, campaigns=3, seed=25, start_ms=START_MS, span_ms=3 * DAY * 1000)
    ancient = generate_events(1, campaigns=3, seed=26, start_ms=0, span_ms=1, duplicate_rate=0)
    assert ancient[0].ts_ms == 0
    await load(engine, ancient + events)
    assert (ancient[0].campaign_id, 0) in await stored_minutes(engine)
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith(("DELETE", "INSERT")):
            statements.append(statement)

    sa_event.listen(engine.sync_engine, "before_cursor_execute", count)
    now = START_MS / 1000 + 3 * DAY
    async with asyncio.timeout(30):
        rolled = await roll_up_minutes(engine, older_than_days=1, now=now)
        roll_statements = len(statements)
        removed = await prune_processed_ids(engine, older_than_hours=24, now=now)
    sa_event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert rolled.minute_rows > 0
    assert removed > 0
    # 1970's day plus at most 3 days of events: an insert and a delete each
    assert roll_statements <= 2 * 4
    # 1970's hour plus at most 49 hours of events
    assert len(statements) - roll_statements <= 50
    assert await stored_campaigns(engine) == expected_campaigns(ancient + events)
    assert (ancient[0].campaign_id, 0) in await hour_rows(engine)
