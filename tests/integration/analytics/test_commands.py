"""The analytics commands as an operator runs them: `adplatform serve analytics`
without its dependencies, and `adplatform analytics-rollup` on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adplatform.analytics.aggregation import prepare_batch
from adplatform.analytics.retention import DAY, HOUR, roll_up_minutes
from adplatform.analytics.store import PostgresStore
from adplatform.core.bus import Message
from adplatform.core.db import create_engine
from adplatform.core.events import AdEvent, encode
from tests.unit.analytics.support import (
    expected_campaigns,
    expected_minutes,
    generate_events,
    stored_campaigns,
    stored_minutes,
)

pytestmark = pytest.mark.integration

TP = ("ad-events", 0)
DEPENDENCIES = ("DATABASE_URL", "KAFKA_BROKERS", "ADMIN_API_KEY")


def _adplatform(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adplatform", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _env_without(*names: str, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in names}
    return {**env, **extra}


def test_serve_analytics_refuses_to_start_without_its_dependencies() -> None:
    result = _adplatform("serve", "analytics", env=_env_without(*DEPENDENCIES))
    assert result.returncode == 2, result.stdout + result.stderr
    for name in DEPENDENCIES:
        assert name in result.stderr
    assert "adplatform dev" in result.stderr  # says what to do instead


@pytest.mark.parametrize("missing", ["DATABASE_URL", "KAFKA_BROKERS"])
def test_serve_analytics_names_the_one_dependency_missing(missing: str) -> None:
    configured = {
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "KAFKA_BROKERS": "127.0.0.1:1",
        "ADMIN_API_KEY": "k",
    }
    del configured[missing]
    result = _adplatform("serve", "analytics", env=_env_without(*DEPENDENCIES, **configured))
    assert result.returncode == 2, result.stdout + result.stderr
    assert missing in result.stderr
    assert not any(name in result.stderr for name in configured)


async def _load(url: str, events: list[AdEvent], offset: int) -> None:
    """Commit `events` as one batch at `offset` of one partition, as the consumer does."""
    store = PostgresStore(url)
    try:
        await store.load_offsets("g", [TP])
        messages = [Message(TP[0], 0, offset + i, None, encode(e), 0) for i, e in enumerate(events)]
        await store.commit("g", prepare_batch(messages, {TP: offset}), {TP: offset})
    finally:
        await store.close()


async def _hour_rows(engine: AsyncEngine) -> set[tuple[int, int]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT campaign_id, bucket FROM analytics_campaign_hour")
        )
        return {(int(r[0]), int(r[1])) for r in rows}


async def _oldest_id_bucket(engine: AsyncEngine) -> int | None:
    async with engine.connect() as connection:
        value = (
            await connection.execute(text("SELECT min(bucket) FROM analytics_processed_events"))
        ).scalar()
    return None if value is None else int(value)


@pytest.mark.slow
async def test_analytics_rollup_command_on_postgresql(
    postgres_url: str, pg_engine: AsyncEngine
) -> None:
    """Six days of minute rows plus one event stamped 1970: the command moves what is
    older than three days into hours, forgets ids older than two days, and no total
    changes; late events for rolled-up hours merge into them; two roll-ups at once
    move nothing twice."""
    now_ms = int(time.time() * 1000)
    events = generate_events(
        4000, campaigns=9, seed=81, start_ms=now_ms - 6 * DAY * 1000, span_ms=6 * DAY * 1000
    )
    ancient = generate_events(1, campaigns=9, seed=82, start_ms=0, span_ms=1, duplicate_rate=0)
    await _load(postgres_url, ancient + events, 0)
    everything = ancient + events
    before = await stored_campaigns(pg_engine)
    assert before == expected_campaigns(everything)

    env = _env_without("DATABASE_URL", DATABASE_URL=postgres_url)
    env["ANALYTICS_DEDUP_RETENTION_HOURS"] = "48"
    started = time.time()
    result = await asyncio.to_thread(
        _adplatform, "analytics-rollup", "--older-than-days", "3", env=env
    )
    elapsed = time.time() - started
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(
        r"rolled (\d+) minute rows older than (\S+) into (\d+) hourly rows; "
        r"forgot (\d+) processed event ids",
        result.stdout,
    )
    assert match, result.stdout
    moved, hours, forgot = int(match[1]), int(match[3]), int(match[4])
    assert moved > 0
    assert 0 < hours <= moved
    assert forgot > 0
    assert elapsed < 60, "the 1970 event must not make the job walk every day since"

    cutoff = int(time.time()) - 3 * DAY
    cutoff -= cutoff % HOUR
    minutes = await stored_minutes(pg_engine)
    assert all(bucket >= cutoff - HOUR for _, bucket in minutes)  # the job ran a moment ago
    hour_rows = await _hour_rows(pg_engine)
    assert all(bucket % HOUR == 0 and bucket < cutoff + HOUR for _, bucket in hour_rows)
    assert (ancient[0].campaign_id, 0) in hour_rows
    assert await stored_campaigns(pg_engine) == before
    oldest = await _oldest_id_bucket(pg_engine)
    assert oldest is not None
    assert oldest >= time.time() - 48 * HOUR - 120

    again = await asyncio.to_thread(
        _adplatform, "analytics-rollup", "--older-than-days", "3", "--no-prune", env=env
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("rolled 0 minute rows"), again.stdout
    assert "forgot" not in again.stdout

    # Late events for hours already rolled up become minute rows again, then merge.
    late = generate_events(
        500, campaigns=9, seed=83, start_ms=now_ms - 6 * DAY * 1000, span_ms=2 * DAY * 1000
    )
    await _load(postgres_url, late, len(everything))
    everything += late
    engines = [create_engine(postgres_url) for _ in range(2)]
    try:
        results = await asyncio.gather(
            *(roll_up_minutes(e, older_than_days=3) for e in engines)  # two replicas at once
        )
    finally:
        for e in engines:
            await e.dispose()
    # each late minute row moved once, by one of the two
    assert sum(r.minute_rows for r in results) == len(expected_minutes(late))
    cutoff = results[0].cutoff
    assert all(bucket >= cutoff for _, bucket in await stored_minutes(pg_engine))
    assert await stored_campaigns(pg_engine) == expected_campaigns(everything)
