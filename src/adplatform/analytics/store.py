"""Writing a batch: aggregates, processed ids and offsets in one transaction.

Exactly once rests on three things done together, atomically:

1. **fencing**: each partition's stored offset moves from the value this consumer read
   at assignment (or last committed) to the batch's end, with a compare-and-set. If
   another consumer moved it in between (a rebalance, a consumer that was presumed
   dead), the whole transaction rolls back and `OffsetConflict` tells the consumer to
   re-read the offsets and seek;
2. **dedup**: event ids go into `analytics_processed_events` and only the ids that
   were not there yet are counted (a notice fired twice, a producer retry);
3. **aggregation**: the new events are summed per (campaign, minute) and added to the
   stored counters.

`PostgresStore` loads the batch into a temporary table by binary COPY, then does 2 and
3 in one SQL statement: a batch of thousands of events is a handful of round trips.
When no id of the batch was seen before (the usual case: the consumer already drops
duplicates it has just committed, see `aggregation.RecentIds`) a plain insert records
the ids; if the unique key says otherwise, a savepoint rolls that back and the
`ON CONFLICT DO NOTHING` form counts only the new ones. `SqlStore` is the portable
SQLAlchemy version (SQLite in `adplatform dev`; it works on PostgreSQL too).
"""

from __future__ import annotations

import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from adplatform.analytics import metrics
from adplatform.analytics.aggregation import PreparedBatch, aggregate
from adplatform.analytics.models import CampaignMinute, ConsumerOffset, ProcessedEvent
from adplatform.core.bus import TopicPartition
from adplatform.core.db import async_url


class OffsetConflict(RuntimeError):
    """Another consumer committed this partition range first; nothing was written."""


@dataclass(frozen=True, slots=True)
class CommitResult:
    fresh: int
    """Events counted by this batch (not seen before)."""
    duplicates: int
    """Events skipped because their id was already counted (in or before this batch)."""


class AggregateStore(ABC):
    @abstractmethod
    async def load_offsets(
        self, group: str, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """The stored next offset of each partition (0 for one never seen)."""

    @abstractmethod
    async def commit(
        self, group: str, batch: PreparedBatch, expected: dict[TopicPartition, int]
    ) -> CommitResult:
        """Write `batch` and move offsets from `expected` to `batch.next_offsets`."""

    @abstractmethod
    async def close(self) -> None: ...


def _now_ms() -> int:
    return int(time.time() * 1000)


# ------------------------------------------------------------------------ PostgreSQL

_PG_ENSURE_OFFSETS: Final = """
INSERT INTO analytics_consumer_offsets (group_id, topic, partition, next_offset, updated_ms)
SELECT $1, v.topic, v.partition, 0, $4
FROM unnest($2::text[], $3::int[]) AS v(topic, partition)
ON CONFLICT DO NOTHING
"""

_PG_LOAD_OFFSETS: Final = """
SELECT o.topic, o.partition, o.next_offset
FROM analytics_consumer_offsets AS o
JOIN unnest($2::text[], $3::int[]) AS v(topic, partition)
  ON o.topic = v.topic AND o.partition = v.partition
WHERE o.group_id = $1
"""

_PG_ADVANCE_OFFSETS: Final = """
UPDATE analytics_consumer_offsets AS o
SET next_offset = v.next_offset, updated_ms = $6
FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[])
  AS v(topic, partition, expected, next_offset)
WHERE o.group_id = $1 AND o.topic = v.topic AND o.partition = v.partition
  AND o.next_offset = v.expected
"""

_PG_BATCH_TABLE: Final = """
CREATE TEMPORARY TABLE IF NOT EXISTS analytics_batch (
    event_id uuid NOT NULL,
    campaign_id bigint NOT NULL,
    advertiser_id bigint NOT NULL,
    bucket bigint NOT NULL,
    kind smallint NOT NULL,
    bid_micros bigint NOT NULL,
    spend_micros bigint NOT NULL
) ON COMMIT DELETE ROWS
"""
"""The batch, loaded by binary COPY (far cheaper to encode than parameter arrays)."""

_PG_APPLY_ALL_NEW: Final = """
WITH recorded AS (
    INSERT INTO analytics_processed_events (event_id, bucket)
    SELECT event_id, bucket FROM analytics_batch
)
    INSERT INTO analytics_campaign_minute AS m
        (campaign_id, bucket, advertiser_id, bids, wins, impressions, clicks,
         bid_micros, spend_micros)
    SELECT b.campaign_id, b.bucket, max(b.advertiser_id),
           count(*) FILTER (WHERE b.kind = 0),
           count(*) FILTER (WHERE b.kind = 1),
           count(*) FILTER (WHERE b.kind = 3),
           count(*) FILTER (WHERE b.kind = 4),
           coalesce(sum(b.bid_micros) FILTER (WHERE b.kind = 0), 0),
           sum(b.spend_micros)
    FROM analytics_batch AS b
    GROUP BY b.campaign_id, b.bucket
    ORDER BY b.campaign_id, b.bucket
    ON CONFLICT (campaign_id, bucket) DO UPDATE SET
        advertiser_id = excluded.advertiser_id,
        bids = m.bids + excluded.bids,
        wins = m.wins + excluded.wins,
        impressions = m.impressions + excluded.impressions,
        clicks = m.clicks + excluded.clicks,
        bid_micros = m.bid_micros + excluded.bid_micros,
        spend_micros = m.spend_micros + excluded.spend_micros
"""
"""The common case: no id of the batch was counted before. A plain insert (no
`ON CONFLICT`) is much cheaper; if an id was there after all, the unique key raises
and the batch is applied with `_PG_APPLY_SOME_SEEN` instead."""

_PG_APPLY_SOME_SEEN: Final = """
WITH fresh AS (
    INSERT INTO analytics_processed_events (event_id, bucket)
    SELECT event_id, bucket FROM analytics_batch
    ON CONFLICT DO NOTHING
    RETURNING event_id
),
summed AS (
    INSERT INTO analytics_campaign_minute AS m
        (campaign_id, bucket, advertiser_id, bids, wins, impressions, clicks,
         bid_micros, spend_micros)
    SELECT b.campaign_id, b.bucket, max(b.advertiser_id),
           count(*) FILTER (WHERE b.kind = 0),
           count(*) FILTER (WHERE b.kind = 1),
           count(*) FILTER (WHERE b.kind = 3),
           count(*) FILTER (WHERE b.kind = 4),
           coalesce(sum(b.bid_micros) FILTER (WHERE b.kind = 0), 0),
           sum(b.spend_micros)
    FROM analytics_batch AS b JOIN fresh AS f ON f.event_id = b.event_id
    GROUP BY b.campaign_id, b.bucket
    ORDER BY b.campaign_id, b.bucket
    ON CONFLICT (campaign_id, bucket) DO UPDATE SET
        advertiser_id = excluded.advertiser_id,
        bids = m.bids + excluded.bids,
        wins = m.wins + excluded.wins,
        impressions = m.impressions + excluded.impressions,
        clicks = m.clicks + excluded.clicks,
        bid_micros = m.bid_micros + excluded.bid_micros,
        spend_micros = m.spend_micros + excluded.spend_micros
    RETURNING 1
)
SELECT (SELECT count(*) FROM fresh) AS fresh
"""

_BATCH_COLUMNS: Final = (
    "event_id",
    "campaign_id",
    "advertiser_id",
    "bucket",
    "kind",
    "bid_micros",
    "spend_micros",
)


def asyncpg_dsn(database_url: str) -> str:
    """The libpq form asyncpg connects with, from any accepted `DATABASE_URL`."""
    url = async_url(database_url).set(drivername="postgresql")
    return make_url(url).render_as_string(hide_password=False)


class PostgresStore(AggregateStore):
    """One dedicated asyncpg connection; (re)connected on first use after an error."""

    RETRYABLE: Final = ("40001", "40P01")
    """serialization_failure, deadlock_detected: another consumer's transaction won."""

    def __init__(
        self,
        database_url: str,
        *,
        statement_timeout_ms: int = 30_000,
        application_name: str = "adplatform-analytics",
    ) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._statement_timeout_ms = statement_timeout_ms
        self._application_name = application_name
        """How its backend shows in `pg_stat_activity` (the benchmark and tests look)."""
        self._connection: Any = None

    async def _connect(self) -> Any:
        import asyncpg  # type: ignore[import-untyped]

        if self._connection is None or self._connection.is_closed():
            connection = await asyncpg.connect(
                self._dsn,
                server_settings={
                    "application_name": self._application_name,
                    "statement_timeout": str(self._statement_timeout_ms),
                },
            )
            await connection.execute(_PG_BATCH_TABLE)
            self._connection = connection
        return self._connection

    async def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            connection.terminate()

    async def load_offsets(
        self, group: str, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int]:
        topics = [t for t, _ in partitions]
        numbers = [p for _, p in partitions]
        try:
            connection = await self._connect()
            async with connection.transaction():
                await connection.execute(_PG_ENSURE_OFFSETS, group, topics, numbers, _now_ms())
                rows = await connection.fetch(_PG_LOAD_OFFSETS, group, topics, numbers)
        except Exception:
            await self._drop_connection()
            raise
        return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}

    async def commit(
        self, group: str, batch: PreparedBatch, expected: dict[TopicPartition, int]
    ) -> CommitResult:
        import asyncpg

        tps = sorted(batch.next_offsets)
        try:
            connection = await self._connect()
            async with connection.transaction():
                status = await connection.execute(
                    _PG_ADVANCE_OFFSETS,
                    group,
                    [t for t, _ in tps],
                    [p for _, p in tps],
                    [expected[tp] for tp in tps],
                    [batch.next_offsets[tp] for tp in tps],
                    _now_ms(),
                )
                if int(status.rsplit(" ", 1)[-1]) != len(tps):
                    raise OffsetConflict(f"stored offsets moved for some of {tps}")
                fresh = await self._apply(connection, batch) if batch.rows else 0
        except OffsetConflict:
            raise
        except asyncpg.PostgresError as exc:
            if getattr(exc, "sqlstate", None) in self.RETRYABLE:
                raise OffsetConflict(str(exc)) from exc
            await self._drop_connection()
            raise
        except Exception:
            await self._drop_connection()
            raise
        duplicates = batch.duplicates_in_batch + len(batch.rows) - fresh
        return CommitResult(fresh=fresh, duplicates=duplicates)

    async def _apply(self, connection: Any, batch: PreparedBatch) -> int:
        """Load the batch and apply it; returns how many events were new."""
        import asyncpg

        await connection.copy_records_to_table(
            "analytics_batch", records=batch.rows, columns=_BATCH_COLUMNS
        )
        try:
            async with connection.transaction():  # a savepoint: the fallback needs the rows
                await connection.execute(_PG_APPLY_ALL_NEW)
        except asyncpg.UniqueViolationError:
            metrics.SEEN_ID_BATCHES.inc()
            fresh: int = await connection.fetchval(_PG_APPLY_SOME_SEEN)
            return fresh
        return len(batch.rows)

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            await connection.close(timeout=5)


# -------------------------------------------------------------------------- portable

_ID_CHUNK: Final = 500


class SqlStore(AggregateStore):
    """SQLAlchemy Core over the service's engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.engine = engine
        self.sessions = sessions
        self._insert: Any = sqlite.insert if engine.dialect.name == "sqlite" else postgresql.insert

    async def load_offsets(
        self, group: str, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int]:
        now = _now_ms()
        async with self.sessions() as session, session.begin():
            if partitions:
                await session.execute(
                    self._insert(ConsumerOffset).on_conflict_do_nothing(),
                    [
                        {
                            "group_id": group,
                            "topic": t,
                            "partition": p,
                            "next_offset": 0,
                            "updated_ms": now,
                        }
                        for t, p in partitions
                    ],
                )
            rows = await session.execute(
                select(
                    ConsumerOffset.topic, ConsumerOffset.partition, ConsumerOffset.next_offset
                ).where(ConsumerOffset.group_id == group)
            )
            wanted = set(partitions)
            return {(t, p): o for t, p, o in rows if (t, p) in wanted}

    async def commit(
        self, group: str, batch: PreparedBatch, expected: dict[TopicPartition, int]
    ) -> CommitResult:
        now = _now_ms()
        async with self.sessions() as session, session.begin():
            for (topic, partition), next_offset in sorted(batch.next_offsets.items()):
                result = await session.execute(
                    update(ConsumerOffset)
                    .where(
                        ConsumerOffset.group_id == group,
                        ConsumerOffset.topic == topic,
                        ConsumerOffset.partition == partition,
                        ConsumerOffset.next_offset == expected[(topic, partition)],
                    )
                    .values(next_offset=next_offset, updated_ms=now)
                )
                if result.rowcount != 1:  # type: ignore[attr-defined]
                    raise OffsetConflict(f"stored offset moved for {topic}[{partition}]")
            fresh = await self._record_new_ids(session, batch)
            rows = aggregate(batch, keep=fresh)
            if rows:
                statement = self._insert(CampaignMinute)
                excluded = statement.excluded
                table = CampaignMinute.__table__
                statement = statement.on_conflict_do_update(
                    index_elements=["campaign_id", "bucket"],
                    set_={
                        "advertiser_id": excluded.advertiser_id,
                        **{
                            name: table.c[name] + excluded[name]
                            for name in (
                                "bids",
                                "wins",
                                "impressions",
                                "clicks",
                                "bid_micros",
                                "spend_micros",
                            )
                        },
                    },
                )
                await session.execute(
                    statement,
                    [
                        {
                            "campaign_id": campaign_id,
                            "bucket": bucket,
                            "advertiser_id": c[0],
                            "bids": c[1],
                            "wins": c[2],
                            "impressions": c[3],
                            "clicks": c[4],
                            "bid_micros": c[5],
                            "spend_micros": c[6],
                        }
                        for (campaign_id, bucket), c in sorted(rows.items())
                    ],
                )
        duplicates = batch.duplicates_in_batch + len(batch.rows) - len(fresh)
        return CommitResult(fresh=len(fresh), duplicates=duplicates)

    async def _record_new_ids(self, session: AsyncSession, batch: PreparedBatch) -> set[str]:
        existing: set[str] = set()
        ids = batch.ids
        for start in range(0, len(ids), _ID_CHUNK):
            chunk = ids[start : start + _ID_CHUNK]
            found = await session.execute(
                select(ProcessedEvent.event_id).where(ProcessedEvent.event_id.in_(chunk))
            )
            existing.update(uuid.UUID(str(value)).hex for value in found.scalars())
        fresh_rows: list[dict[str, Any]] = [
            {"event_id": row[0], "bucket": row[3]} for row in batch.rows if row[0] not in existing
        ]
        if fresh_rows:
            await session.execute(self._insert(ProcessedEvent), fresh_rows)
        return {row["event_id"] for row in fresh_rows}

    async def close(self) -> None:
        """The engine belongs to the app; nothing to release here."""
