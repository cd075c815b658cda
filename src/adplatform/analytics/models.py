"""analytics-service tables (migration `0002_analytics`).

Buckets are integer UTC epoch seconds of the bucket's start (a minute, or an hour after
the retention roll-up), so grouping by hour or day is plain integer arithmetic that
PostgreSQL and SQLite evaluate the same way and the hot upsert compares two integers.

Counters only ever grow by additions, so the consumer's upsert (`x = x + excluded.x`)
and the roll-up (minute rows moved into their hour row) commute: totals are the same
whatever order they run in.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from adplatform.core.db import Base

MINUTE_TABLE = "analytics_campaign_minute"
HOUR_TABLE = "analytics_campaign_hour"
PROCESSED_TABLE = "analytics_processed_events"
OFFSETS_TABLE = "analytics_consumer_offsets"


class _Counters:
    """The measures of one campaign in one bucket."""

    advertiser_id: Mapped[int] = mapped_column(BigInteger)
    bids: Mapped[int] = mapped_column(BigInteger, default=0)
    wins: Mapped[int] = mapped_column(BigInteger, default=0)
    impressions: Mapped[int] = mapped_column(BigInteger, default=0)
    clicks: Mapped[int] = mapped_column(BigInteger, default=0)
    bid_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    """Sum of the prices bid (bid events only)."""
    spend_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    """Sum of the money settled (the event that settled it carries it)."""


class CampaignMinute(_Counters, Base):
    __tablename__ = MINUTE_TABLE
    __table_args__ = (
        Index("ix_analytics_campaign_minute_bucket", "bucket"),
        Index("ix_analytics_campaign_minute_advertiser", "advertiser_id", "bucket"),
    )

    campaign_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    """Epoch seconds of the minute's start (UTC)."""


class CampaignHour(_Counters, Base):
    """Minute buckets older than the retention window, summed per hour."""

    __tablename__ = HOUR_TABLE
    __table_args__ = (
        Index("ix_analytics_campaign_hour_bucket", "bucket"),
        Index("ix_analytics_campaign_hour_advertiser", "advertiser_id", "bucket"),
    )

    campaign_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    """Epoch seconds of the hour's start (UTC)."""


class ProcessedEvent(Base):
    """Event ids already counted: a redelivered or duplicated event is skipped.

    Ids older than `ANALYTICS_DEDUP_RETENTION_HOURS` are pruned; the event time index
    is a BRIN index on PostgreSQL (ids arrive roughly in time order), nearly free to
    maintain on the hot insert path.
    """

    __tablename__ = PROCESSED_TABLE
    __table_args__ = (
        Index("ix_analytics_processed_events_bucket", "bucket", postgresql_using="brin"),
    )

    event_id: Mapped[object] = mapped_column(Uuid(as_uuid=False), primary_key=True)
    """The event id as 128 bits (see `aggregation.event_key`)."""
    bucket: Mapped[int] = mapped_column(BigInteger)
    """The event's minute, for pruning."""


class ConsumerOffset(Base):
    """The next offset to read per partition, written with the aggregates it covers.

    Each batch advances it with a compare-and-set on the value the consumer read at
    assignment, so of two consumers that briefly own a partition during a rebalance
    only one can commit a given range.
    """

    __tablename__ = OFFSETS_TABLE

    group_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    topic: Mapped[str] = mapped_column(String(249), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    next_offset: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)
