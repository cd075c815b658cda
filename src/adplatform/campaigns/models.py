"""campaign-service tables: advertisers, campaigns, creatives and the outbox.

Migration `0001_campaigns` creates exactly these (a test compares them), on
PostgreSQL and SQLite alike. Money columns are `bigint` micros. Every resource row has
a `version` that grows with each write (optimistic concurrency, the bidder's "newest
wins"); a creative write also bumps its campaign's version, because the campaign's
biddable state includes its creatives.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column

from adplatform.core.db import Base


class UtcDateTime(TypeDecorator[datetime]):
    """`timestamptz` on PostgreSQL; on SQLite (which has no zones) values are stored as
    UTC and come back zone-aware, so both backends hand the code the same datetimes."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JsonDocument = JSON().with_variant(JSONB(), "postgresql")
OutboxId = BigInteger().with_variant(Integer(), "sqlite")
"""SQLite only auto-increments an `INTEGER PRIMARY KEY`."""

CAMPAIGN_STATUSES = ("draft", "active", "paused", "completed", "archived")
CREATIVE_STATUSES = ("active", "paused", "archived")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Advertiser(Base):
    __tablename__ = "advertisers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    domain: Mapped[str | None] = mapped_column(String(253), default=None)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Campaign(Base):
    __tablename__ = "campaigns"
    __table_args__ = (
        UniqueConstraint("advertiser_id", "name", name="uq_campaigns_advertiser_id_name"),
        Index("ix_campaigns_status_id", "status", "id"),
        CheckConstraint(_in("status", CAMPAIGN_STATUSES), name="status"),
        CheckConstraint("pacing IN ('even', 'asap')", name="pacing"),
        CheckConstraint("total_budget_micros > 0", name="total_budget_positive"),
        CheckConstraint("daily_budget_micros > 0", name="daily_budget_positive"),
        CheckConstraint("daily_budget_micros <= total_budget_micros", name="daily_within_total"),
        CheckConstraint("max_bid_cpm_micros > 0", name="max_bid_positive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    advertiser_id: Mapped[int] = mapped_column(
        ForeignKey("advertisers.id", ondelete="RESTRICT"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="draft")
    total_budget_micros: Mapped[int] = mapped_column(BigInteger)
    daily_budget_micros: Mapped[int] = mapped_column(BigInteger)
    max_bid_cpm_micros: Mapped[int] = mapped_column(BigInteger)
    pacing: Mapped[str] = mapped_column(String(8), default="even")
    flight_start: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    flight_end: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    frequency_cap_impressions: Mapped[int | None] = mapped_column(Integer, default=None)
    frequency_cap_window_seconds: Mapped[int | None] = mapped_column(Integer, default=None)
    targeting: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Creative(Base):
    __tablename__ = "creatives"
    __table_args__ = (
        CheckConstraint(_in("status", CREATIVE_STATUSES), name="status"),
        CheckConstraint("width > 0 AND height > 0", name="size_positive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    advertiser_id: Mapped[int] = mapped_column(
        ForeignKey("advertisers.id", ondelete="RESTRICT"), index=True
    )
    """Copied from the campaign (which never changes advertiser): tenancy filters on
    creatives need no join."""
    name: Mapped[str | None] = mapped_column(String(200), default=None)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    markup: Mapped[str | None] = mapped_column(Text, default=None)
    image_url: Mapped[str | None] = mapped_column(String(2048), default=None)
    click_url: Mapped[str] = mapped_column(String(2048))
    adomain: Mapped[str] = mapped_column(String(253))
    iab_category: Mapped[str | None] = mapped_column(String(16), default=None)
    status: Mapped[str] = mapped_column(String(16), default="active")
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class OutboxRow(Base):
    """One campaign write waiting for (or done with) publication to `campaign-updates`.

    `state` is the msgspec JSON of the campaign's `CampaignState` after the write; the
    published message is `CampaignUpdate(seq=id, campaign=state, deleted=deleted)`.
    Rows are never updated except to set `sent_at`, and sent rows are pruned after a
    retention period (the newest row always stays: it is the snapshot's position).
    """

    __tablename__ = "campaign_outbox"
    __table_args__ = (
        Index(
            "ix_campaign_outbox_pending",
            "id",
            postgresql_where=text("sent_at IS NULL"),
            sqlite_where=text("sent_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(OutboxId, primary_key=True, autoincrement=True)
    campaign_id: Mapped[int] = mapped_column(Integer)
    campaign_version: Mapped[int] = mapped_column(Integer)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
