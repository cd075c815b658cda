"""Read side: time series, totals, top campaigns, and who owns a campaign.

Minute rows and (after the retention roll-up) hour rows are read together, so a
period that crosses the retention boundary still adds up; past the boundary the
series has hourly resolution. Budgets and names come from campaign-service's
`campaigns` table in the shared database, read through a Core table declared here
(the service packages stay independent; only the table's public columns are used).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    func,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from adplatform.analytics.models import CampaignHour, CampaignMinute

MEASURES: Final = ("bids", "wins", "impressions", "clicks", "bid_micros", "spend_micros")

_campaign_metadata = MetaData()
CAMPAIGNS: Final = Table(
    "campaigns",
    _campaign_metadata,
    Column("id", Integer, primary_key=True),
    Column("advertiser_id", Integer),
    Column("name", String),
    Column("status", String),
    Column("total_budget_micros", BigInteger),
    Column("daily_budget_micros", BigInteger),
)
ADVERTISERS: Final = Table(
    "advertisers",
    _campaign_metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String),
)


class Granularity(StrEnum):
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"

    @property
    def seconds(self) -> int:
        return {"minute": 60, "hour": 3600, "day": 86_400}[self.value]


class TopMetric(StrEnum):
    SPEND = "spend"
    CLICKS = "clicks"
    IMPRESSIONS = "impressions"

    @property
    def column(self) -> str:
        return {"spend": "spend_micros", "clicks": "clicks", "impressions": "impressions"}[
            self.value
        ]


@dataclass
class Totals:
    bids: int = 0
    wins: int = 0
    impressions: int = 0
    clicks: int = 0
    bid_micros: int = 0
    spend_micros: int = 0

    @classmethod
    def from_row(cls, row: Any) -> Totals:
        return cls(**{name: int(getattr(row, name) or 0) for name in MEASURES})

    def derived(self) -> dict[str, float | None]:
        """CTR, win rate and eCPM (spend per 1000 impressions, in micros)."""
        return {
            "ctr": self.clicks / self.impressions if self.impressions else None,
            "win_rate": self.wins / self.bids if self.bids else None,
            "ecpm_micros": self.spend_micros * 1000 / self.impressions
            if self.impressions
            else None,
        }

    def as_dict(self) -> dict[str, Any]:
        return {**{name: getattr(self, name) for name in MEASURES}, **self.derived()}


@dataclass
class CampaignInfo:
    id: int
    advertiser_id: int
    name: str | None = None
    status: str | None = None
    total_budget_micros: int | None = None
    daily_budget_micros: int | None = None


@dataclass
class Period:
    """A half-open interval [start, end) of epoch seconds."""

    start: int
    end: int


def epoch(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp())


def iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _stats(period: Period | None, **where: Any) -> Any:
    """Minute and hour rows, filtered, as one selectable."""
    parts = []
    for model in (CampaignMinute, CampaignHour):
        query = select(
            model.campaign_id,
            model.advertiser_id,
            model.bucket,
            *(getattr(model, name) for name in MEASURES),
        )
        for column, value in where.items():
            attribute = getattr(model, column)
            query = query.where(
                attribute.in_(value) if isinstance(value, list | tuple) else attribute == value
            )
        if period is not None:
            query = query.where(model.bucket >= period.start, model.bucket < period.end)
        parts.append(query)
    return union_all(*parts).subquery("stats")


def _sums(stats: Any) -> list[Any]:
    return [func.coalesce(func.sum(stats.c[name]), 0).label(name) for name in MEASURES]


class AnalyticsQueries:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def campaign(self, campaign_id: int) -> CampaignInfo | None:
        """The campaign as campaign-service has it, else as the aggregates know it."""
        async with self.engine.connect() as connection:
            row = (
                await connection.execute(select(CAMPAIGNS).where(CAMPAIGNS.c.id == campaign_id))
            ).first()
            if row is not None:
                return CampaignInfo(
                    id=row.id,
                    advertiser_id=row.advertiser_id,
                    name=row.name,
                    status=row.status,
                    total_budget_micros=row.total_budget_micros,
                    daily_budget_micros=row.daily_budget_micros,
                )
            stats = _stats(None, campaign_id=campaign_id)
            advertiser = (
                await connection.execute(select(func.max(stats.c.advertiser_id)))
            ).scalar()
        if advertiser is None:
            return None
        return CampaignInfo(id=campaign_id, advertiser_id=int(advertiser))

    async def advertiser_exists(self, advertiser_id: int) -> bool:
        async with self.engine.connect() as connection:
            found = (
                await connection.execute(
                    select(ADVERTISERS.c.id).where(ADVERTISERS.c.id == advertiser_id)
                )
            ).first()
            if found is not None:
                return True
            stats = _stats(None, advertiser_id=advertiser_id)
            any_row = (await connection.execute(select(stats.c.campaign_id).limit(1))).first()
        return any_row is not None

    async def time_series(
        self, campaign_id: int, period: Period, granularity: Granularity
    ) -> list[dict[str, Any]]:
        """Every bucket of the period, zero-filled, oldest first."""
        step = granularity.seconds
        stats = _stats(period, campaign_id=campaign_id)
        bucket = (stats.c.bucket - stats.c.bucket % step).label("bucket_start")
        query = select(bucket, *_sums(stats)).group_by(bucket).order_by(bucket)
        async with self.engine.connect() as connection:
            rows = {
                int(r.bucket_start): Totals.from_row(r) for r in await connection.execute(query)
            }
        points = []
        start = period.start - period.start % step
        for t in range(start, period.end, step):
            totals = rows.get(t) or Totals()
            points.append({"t": iso(t), "ts": t, **totals.as_dict()})
        return points

    async def totals(
        self,
        period: Period | None,
        *,
        campaign_id: int | None = None,
        advertiser_id: int | None = None,
    ) -> Totals:
        where: dict[str, Any] = {}
        if campaign_id is not None:
            where["campaign_id"] = campaign_id
        if advertiser_id is not None:
            where["advertiser_id"] = advertiser_id
        stats = _stats(period, **where)
        async with self.engine.connect() as connection:
            row = (await connection.execute(select(*_sums(stats)))).one()
        return Totals.from_row(row)

    async def advertiser_budget(self, advertiser_id: int) -> dict[str, int]:
        async with self.engine.connect() as connection:
            row = (
                await connection.execute(
                    select(
                        func.count(CAMPAIGNS.c.id).label("campaigns"),
                        func.coalesce(func.sum(CAMPAIGNS.c.total_budget_micros), 0).label("total"),
                        func.coalesce(func.sum(CAMPAIGNS.c.daily_budget_micros), 0).label("daily"),
                    ).where(CAMPAIGNS.c.advertiser_id == advertiser_id)
                )
            ).one()
        return {
            "campaigns": int(row.campaigns),
            "total_budget_micros": int(row.total),
            "daily_budget_micros": int(row.daily),
        }

    async def top(
        self,
        period: Period,
        metric: TopMetric,
        limit: int,
        advertiser_id: int | None = None,
    ) -> list[dict[str, Any]]:
        where: dict[str, Any] = {} if advertiser_id is None else {"advertiser_id": advertiser_id}
        stats = _stats(period, **where)
        sums = _sums(stats)
        order = next(s for s in sums if s.name == metric.column)
        query = (
            select(
                stats.c.campaign_id,
                func.max(stats.c.advertiser_id).label("advertiser_id"),
                *sums,
            )
            .group_by(stats.c.campaign_id)
            .order_by(order.desc(), stats.c.campaign_id)
            .limit(limit)
        ).subquery("top")
        named = select(query, CAMPAIGNS.c.name).join_from(
            query, CAMPAIGNS, CAMPAIGNS.c.id == query.c.campaign_id, isouter=True
        )
        async with self.engine.connect() as connection:
            rows = list(await connection.execute(named))
        result = []
        for row in rows:
            totals = Totals.from_row(row)
            result.append(
                {
                    "campaign_id": int(row.campaign_id),
                    "advertiser_id": int(row.advertiser_id),
                    "name": row.name,
                    **totals.as_dict(),
                }
            )
        result.sort(key=lambda r: (-r[metric.column], r["campaign_id"]))
        return result


@dataclass
class BudgetView:
    total_budget_micros: int | None
    daily_budget_micros: int | None
    spent_micros: int
    spent_today_micros: int
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        total, daily = self.total_budget_micros, self.daily_budget_micros
        return {
            **self.extra,
            "total_budget_micros": total,
            "daily_budget_micros": daily,
            "spent_micros": self.spent_micros,
            "spent_today_micros": self.spent_today_micros,
            "remaining_micros": max(total - self.spent_micros, 0) if total else None,
            "total_utilization": self.spent_micros / total if total else None,
            "daily_utilization": self.spent_today_micros / daily if daily else None,
        }


__all__ = [
    "CAMPAIGNS",
    "AnalyticsQueries",
    "BudgetView",
    "CampaignInfo",
    "Granularity",
    "Period",
    "TopMetric",
    "Totals",
    "epoch",
    "iso",
]
