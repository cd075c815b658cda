"""Retention: roll minute buckets older than N days into hourly ones; prune old ids.

The roll-up is exact: every minute row it deletes is added to its hour row in the same
transaction. On PostgreSQL one statement deletes the rows and sums exactly the rows it
deleted (`DELETE ... RETURNING` feeding the upsert), so a late event that lands in an
old minute while the job runs is either rolled up now or stays a minute row for the
next run, and two replicas running the job at once never move a row twice. On SQLite a
write transaction excludes every other writer, so insert-then-delete is just as exact.

Work is cut into one-day slices (one-hour slices for the ids), so a first run over a
long backlog does not hold one huge transaction, and only slices that hold rows are
visited: one event stamped 1970 (any time from the epoch on is counted, however late it
arrives) costs one more slice, not one per day or hour since 1970.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adplatform.analytics import metrics
from adplatform.analytics.queries import iso
from adplatform.core.config import Settings
from adplatform.core.db import create_engine, is_sqlite
from adplatform.core.logging import get_logger

log = get_logger(__name__)

HOUR: Final = 3600
DAY: Final = 86_400

# Table and column names are written out: these statements take only bound values.
_PG_ROLL: Final = """
WITH moved AS (
    DELETE FROM analytics_campaign_minute
    WHERE bucket >= :start AND bucket < :end
    RETURNING *
),
summed AS (
    INSERT INTO analytics_campaign_hour AS h
        (campaign_id, bucket, advertiser_id, bids, wins, impressions, clicks,
         bid_micros, spend_micros)
    SELECT campaign_id, bucket - bucket % 3600, max(advertiser_id),
           sum(bids), sum(wins), sum(impressions), sum(clicks),
           sum(bid_micros), sum(spend_micros)
    FROM moved
    GROUP BY campaign_id, bucket - bucket % 3600
    ORDER BY 1, 2
    ON CONFLICT (campaign_id, bucket) DO UPDATE SET
    advertiser_id = excluded.advertiser_id,
    bids = h.bids + excluded.bids,
    wins = h.wins + excluded.wins,
    impressions = h.impressions + excluded.impressions,
    clicks = h.clicks + excluded.clicks,
    bid_micros = h.bid_micros + excluded.bid_micros,
    spend_micros = h.spend_micros + excluded.spend_micros
    RETURNING 1
)
SELECT (SELECT count(*) FROM moved) AS moved, (SELECT count(*) FROM summed) AS hours
"""

_SQLITE_ROLL_INSERT: Final = """
INSERT INTO analytics_campaign_hour AS h
    (campaign_id, bucket, advertiser_id, bids, wins, impressions, clicks, bid_micros, spend_micros)
SELECT campaign_id, bucket - bucket % 3600, max(advertiser_id),
       sum(bids), sum(wins), sum(impressions), sum(clicks), sum(bid_micros), sum(spend_micros)
FROM analytics_campaign_minute
WHERE bucket >= :start AND bucket < :end
GROUP BY campaign_id, bucket - bucket % 3600
ON CONFLICT (campaign_id, bucket) DO UPDATE SET
advertiser_id = excluded.advertiser_id,
    bids = h.bids + excluded.bids,
    wins = h.wins + excluded.wins,
    impressions = h.impressions + excluded.impressions,
    clicks = h.clicks + excluded.clicks,
    bid_micros = h.bid_micros + excluded.bid_micros,
    spend_micros = h.spend_micros + excluded.spend_micros
"""
_SQLITE_ROLL_DELETE: Final = (
    "DELETE FROM analytics_campaign_minute WHERE bucket >= :start AND bucket < :end"
)
_PRUNE: Final = "DELETE FROM analytics_processed_events WHERE bucket >= :start AND bucket < :end"
_MINUTE_DAYS: Final = (
    "SELECT DISTINCT bucket - bucket % 86400 AS day FROM analytics_campaign_minute"
    " WHERE bucket < :cutoff ORDER BY 1"
)
"""The days that hold minute rows to roll up (read from the bucket index)."""
_ID_HOURS: Final = (
    "SELECT DISTINCT bucket - bucket % 3600 AS hour FROM analytics_processed_events"
    " WHERE bucket < :cutoff ORDER BY 1"
)
"""The hours that hold ids to forget (the BRIN index narrows it to the old rows, which
are the rows the prune deletes anyway)."""


@dataclass(frozen=True, slots=True)
class RollupResult:
    cutoff: int
    """Minute buckets before this epoch second (an hour boundary) were rolled up."""
    minute_rows: int
    hour_rows: int


def rollup_cutoff(older_than_days: int, now: float | None = None) -> int:
    """The hour boundary at or before `now - older_than_days`."""
    moment = int(now if now is not None else time.time()) - older_than_days * DAY
    return moment - moment % HOUR


async def roll_up_minutes(
    engine: AsyncEngine, *, older_than_days: int, now: float | None = None
) -> RollupResult:
    """Move every minute row older than the cutoff into its hour row."""
    cutoff = rollup_cutoff(older_than_days, now)
    async with engine.connect() as connection:
        found = await connection.execute(text(_MINUTE_DAYS), {"cutoff": cutoff})
        days = [int(day) for day in found.scalars()]
    if not days:
        return RollupResult(cutoff, 0, 0)
    moved = hours = 0
    for start in days:  # day boundaries are hour boundaries: no hour is split
        end = min(start + DAY, cutoff)
        params = {"start": start, "end": end}
        async with engine.begin() as connection:
            if is_sqlite(engine):
                inserted = await connection.execute(text(_SQLITE_ROLL_INSERT), params)
                deleted = await connection.execute(text(_SQLITE_ROLL_DELETE), params)
                moved += deleted.rowcount
                hours += inserted.rowcount
            else:
                row = (await connection.execute(text(_PG_ROLL), params)).one()
                moved += int(row.moved)
                hours += int(row.hours)
    metrics.ROLLED_UP_ROWS.inc(moved)
    log.info("analytics_rolled_up", cutoff=cutoff, minute_rows=moved, hour_rows=hours)
    return RollupResult(cutoff, moved, hours)


async def prune_processed_ids(
    engine: AsyncEngine, *, older_than_hours: int, now: float | None = None
) -> int:
    """Forget event ids older than the dedup window (by event minute)."""
    moment = int(now if now is not None else time.time()) - older_than_hours * HOUR
    cutoff = moment - moment % 60
    async with engine.connect() as connection:
        found = await connection.execute(text(_ID_HOURS), {"cutoff": cutoff})
        slices = [int(hour) for hour in found.scalars()]
    if not slices:
        return 0
    removed = 0
    for start in slices:
        end = min(start + HOUR, cutoff)
        async with engine.begin() as connection:
            result = await connection.execute(text(_PRUNE), {"start": start, "end": end})
            removed += result.rowcount
    log.info("analytics_pruned_ids", cutoff=cutoff, removed=removed)
    return removed


async def run_retention(
    settings: Settings, *, older_than_days: int | None = None, prune: bool = True
) -> str:
    """The `adplatform analytics-rollup` job: roll up, then prune; a one-line summary."""
    engine = create_engine(settings.database_url)
    try:
        days = older_than_days or settings.analytics_minute_retention_days
        result = await roll_up_minutes(engine, older_than_days=days)
        summary = (
            f"rolled {result.minute_rows} minute rows older than {iso(result.cutoff)} "
            f"into {result.hour_rows} hourly rows"
        )
        if prune:
            removed = await prune_processed_ids(
                engine, older_than_hours=settings.analytics_dedup_retention_hours
            )
            summary += f"; forgot {removed} processed event ids"
        return summary
    finally:
        await engine.dispose()
