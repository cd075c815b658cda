"""`/analytics/...` query routes.

Keys and tenancy are campaign-service's (`core.auth`): the admin key sees everything,
an advertiser key sees only its own campaigns and itself; anything else is a 404, so a
key cannot probe which ids exist. Periods are half-open `[from, to)` in ISO 8601
(UTC when no offset is given); a time series is zero-filled and capped in points.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Path, Query, Request

from adplatform.analytics.queries import (
    AnalyticsQueries,
    BudgetView,
    CampaignInfo,
    Granularity,
    Period,
    TopMetric,
    epoch,
    iso,
)
from adplatform.core.auth import Caller, Principal
from adplatform.core.errors import ApiError, NotFound

MAX_POINTS: Final = 10_080
"""Most buckets one time series returns: a week of minutes, 420 days of hours."""
MAX_TOTALS_SECONDS: Final = 3660 * 86_400
"""Totals and top lists cover at most ten years."""
DEFAULT_SERIES_SECONDS: Final = {
    Granularity.MINUTE: 3600,
    Granularity.HOUR: 2 * 86_400,
    Granularity.DAY: 30 * 86_400,
}
MAX_ID: Final = 2**31 - 1
"""As campaign-service caps its ids (its tables' keys are 32-bit integers): a larger id
is a 422 `validation_error` before any query, as there."""
MIN_EPOCH: Final = -62_135_596_800
"""0001-01-01T00:00:00Z: the first second a query period may start at."""
MAX_EPOCH: Final = 253_402_300_799
"""9999-12-31T23:59:59Z: the last second a query period may reach (`to` included)."""

CampaignId = Annotated[int, Path(ge=1, le=MAX_ID, description="Campaign id.")]
AdvertiserId = Annotated[int, Path(ge=1, le=MAX_ID, description="Advertiser id.")]
From = Annotated[
    datetime | None,
    Query(alias="from", description="Start of the period (inclusive), ISO 8601."),
]
To = Annotated[
    datetime | None, Query(alias="to", description="End of the period (exclusive), ISO 8601.")
]


class InvalidPeriod(ApiError):
    status_code = 422
    code = "invalid_range"


class RangeTooLarge(ApiError):
    status_code = 422
    code = "range_too_large"


def _period(start: datetime | None, end: datetime | None, default_seconds: int) -> Period:
    end_s = epoch(end) if end is not None else int(time.time()) + 1
    start_s = epoch(start) if start is not None else end_s - default_seconds
    if not (MIN_EPOCH <= start_s <= MAX_EPOCH and MIN_EPOCH <= end_s <= MAX_EPOCH):
        # A date with an offset can land in year 0 or 10000 once in UTC (as can a
        # default `from` before a `to` in year 1): no bucket can be named there.
        raise InvalidPeriod(
            "'from' and 'to' must lie between 0001-01-01T00:00:00Z and "
            "9999-12-31T23:59:59Z once converted to UTC",
            details={
                "from": start.isoformat() if start is not None else None,
                "to": end.isoformat() if end is not None else None,
                "min": iso(MIN_EPOCH),
                "max": iso(MAX_EPOCH),
            },
        )
    if start_s >= end_s:
        raise InvalidPeriod(
            "'from' must be before 'to'",
            details={"from": iso(start_s), "to": iso(end_s)},
        )
    return Period(start_s, end_s)


def _checked_total_period(start: datetime | None, end: datetime | None) -> Period | None:
    if start is None and end is None:
        return None
    period = _period(start, end, MAX_TOTALS_SECONDS)
    if period.end - period.start > MAX_TOTALS_SECONDS:
        raise RangeTooLarge(
            "period longer than ten years", details={"max_seconds": MAX_TOTALS_SECONDS}
        )
    return period


def _queries(request: Request) -> AnalyticsQueries:
    queries: AnalyticsQueries = request.app.state.queries
    return queries


Queries = Annotated[AnalyticsQueries, Depends(_queries)]


async def _visible_campaign(queries: AnalyticsQueries, principal: Principal, cid: int) -> Any:
    campaign = await queries.campaign(cid)
    if campaign is None or not principal.may_see(campaign.advertiser_id):
        raise NotFound(f"campaign {cid} not found")
    return campaign


def _campaign_body(campaign: CampaignInfo) -> dict[str, Any]:
    return {
        "campaign_id": campaign.id,
        "advertiser_id": campaign.advertiser_id,
        "name": campaign.name,
        "status": campaign.status,
    }


def _today(now: float | None = None) -> Period:
    moment = int(now if now is not None else time.time())
    start = moment - moment % 86_400
    return Period(start, start + 86_400)


router = APIRouter(prefix="/analytics", tags=["analytics"])


@router.get("/campaigns/{campaign_id}/timeseries")
async def campaign_time_series(
    campaign_id: CampaignId,
    principal: Caller,
    queries: Queries,
    start: From = None,
    end: To = None,
    granularity: Annotated[
        Granularity, Query(description="Bucket size: minute, hour or day (UTC).")
    ] = Granularity.MINUTE,
) -> dict[str, Any]:
    """A campaign's counters per bucket, zero-filled, with CTR, win rate and eCPM."""
    period = _period(start, end, DEFAULT_SERIES_SECONDS[granularity])
    step = granularity.seconds
    points = (period.end - (period.start - period.start % step) + step - 1) // step
    if points > MAX_POINTS:
        raise RangeTooLarge(
            f"{points} {granularity.value} buckets requested; at most {MAX_POINTS}",
            details={"max_points": MAX_POINTS, "granularity": granularity.value},
        )
    campaign = await _visible_campaign(queries, principal, campaign_id)
    series = await queries.time_series(campaign_id, period, granularity)
    return {
        **_campaign_body(campaign),
        "granularity": granularity.value,
        "from": iso(period.start),
        "to": iso(period.end),
        "points": series,
    }


@router.get("/campaigns/{campaign_id}/totals")
async def campaign_totals(
    campaign_id: CampaignId,
    principal: Caller,
    queries: Queries,
    start: From = None,
    end: To = None,
) -> dict[str, Any]:
    """A campaign's totals for a period (all time by default) and spend vs budget."""
    period = _checked_total_period(start, end)
    campaign = await _visible_campaign(queries, principal, campaign_id)
    totals = await queries.totals(period, campaign_id=campaign_id)
    lifetime = totals if period is None else await queries.totals(None, campaign_id=campaign_id)
    today = await queries.totals(_today(), campaign_id=campaign_id)
    budget = BudgetView(
        campaign.total_budget_micros,
        campaign.daily_budget_micros,
        lifetime.spend_micros,
        today.spend_micros,
    )
    return {
        **_campaign_body(campaign),
        "from": iso(period.start) if period else None,
        "to": iso(period.end) if period else None,
        "totals": totals.as_dict(),
        "budget": budget.as_dict(),
    }


@router.get("/advertisers/{advertiser_id}/totals")
async def advertiser_totals(
    advertiser_id: AdvertiserId,
    principal: Caller,
    queries: Queries,
    start: From = None,
    end: To = None,
) -> dict[str, Any]:
    """An advertiser's totals over all its campaigns, and spend vs their budgets."""
    period = _checked_total_period(start, end)
    if not principal.may_see(advertiser_id) or not await queries.advertiser_exists(advertiser_id):
        raise NotFound(f"advertiser {advertiser_id} not found")
    totals = await queries.totals(period, advertiser_id=advertiser_id)
    lifetime = totals if period is None else await queries.totals(None, advertiser_id=advertiser_id)
    today = await queries.totals(_today(), advertiser_id=advertiser_id)
    budgets = await queries.advertiser_budget(advertiser_id)
    budget = BudgetView(
        budgets["total_budget_micros"] or None,
        budgets["daily_budget_micros"] or None,
        lifetime.spend_micros,
        today.spend_micros,
        extra={"campaigns": budgets["campaigns"]},
    )
    return {
        "advertiser_id": advertiser_id,
        "from": iso(period.start) if period else None,
        "to": iso(period.end) if period else None,
        "totals": totals.as_dict(),
        "budget": budget.as_dict(),
    }


@router.get("/top")
async def top_campaigns(
    principal: Caller,
    queries: Queries,
    start: From = None,
    end: To = None,
    metric: Annotated[TopMetric, Query(description="Rank by spend, clicks or impressions.")] = (
        TopMetric.SPEND
    ),
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict[str, Any]:
    """The campaigns with the most spend (or clicks) in a period (default: last hour)."""
    period = _period(start, end, 3600)
    if period.end - period.start > MAX_TOTALS_SECONDS:
        raise RangeTooLarge(
            "period longer than ten years", details={"max_seconds": MAX_TOTALS_SECONDS}
        )
    campaigns = await queries.top(period, metric, limit, advertiser_id=principal.advertiser_id)
    return {
        "metric": metric.value,
        "from": iso(period.start),
        "to": iso(period.end),
        "campaigns": campaigns,
    }
