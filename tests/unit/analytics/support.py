"""Shared by the analytics unit and integration tests: event generators, an independent
oracle for the expected totals, and database helpers (seeding, reading aggregates)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypedDict

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adplatform.core.auth import generate_api_key
from adplatform.core.events import AdEvent, AdEventType, ad_event_id

MEASURES = ("bids", "wins", "impressions", "clicks", "bid_micros", "spend_micros")


def event(
    kind: AdEventType,
    *,
    campaign_id: int,
    advertiser_id: int,
    ts_ms: int,
    auction_id: str,
    imp_id: str = "1",
    bid_micros: int = 0,
    spend_micros: int = 0,
) -> AdEvent:
    return AdEvent(
        id=ad_event_id(auction_id, imp_id, kind),
        type=kind,
        ts_ms=ts_ms,
        campaign_id=campaign_id,
        advertiser_id=advertiser_id,
        creative_id=campaign_id * 10,
        auction_id=auction_id,
        imp_id=imp_id,
        bid_micros=bid_micros,
        spend_micros=spend_micros,
    )


class _Auction(TypedDict):
    """What every notice of one auction shares (typed so `**` unpacking is checked)."""

    campaign_id: int
    advertiser_id: int
    auction_id: str


def advertiser_of(campaign_id: int) -> int:
    return (campaign_id - 1) // 3 + 1


def generate_events(
    auctions: int,
    *,
    campaigns: int = 10,
    seed: int = 1,
    start_ms: int | None = None,
    duplicate_rate: float = 0.1,
    span_ms: int = 10 * 60_000,
) -> list[AdEvent]:
    """A realistic stream: every auction a bid; some won (win, maybe a billing notice,
    an impression, sometimes a click). Spend sits on the event that settled it (the
    win, or the billing notice when the win notice carried no price). A share of the
    notices is fired twice, the copy a little later (possibly in the next minute)."""
    rng = random.Random(seed)
    start = start_ms if start_ms is not None else 1_790_000_000_000
    result: list[AdEvent] = []
    for n in range(auctions):
        campaign = rng.randint(1, campaigns)
        advertiser = advertiser_of(campaign)
        ts = start + (n * span_ms) // max(auctions, 1)
        auction = f"a{seed}-{n}"
        bid = rng.randint(500, 5000)
        base: _Auction = {
            "campaign_id": campaign,
            "advertiser_id": advertiser,
            "auction_id": auction,
        }
        notices = [event(AdEventType.BID, ts_ms=ts, bid_micros=bid, **base)]
        if rng.random() < 0.4:
            price = rng.randint(100, bid)
            settled_by_billing = rng.random() < 0.3
            notices.append(
                event(
                    AdEventType.WIN,
                    ts_ms=ts + 50,
                    bid_micros=bid,
                    spend_micros=0 if settled_by_billing else price,
                    **base,
                )
            )
            if settled_by_billing:
                notices.append(
                    event(
                        AdEventType.BILLING,
                        ts_ms=ts + 80,
                        bid_micros=bid,
                        spend_micros=price,
                        **base,
                    )
                )
            if rng.random() < 0.9:
                notices.append(event(AdEventType.IMPRESSION, ts_ms=ts + 100, **base))
                if rng.random() < 0.1:
                    notices.append(event(AdEventType.CLICK, ts_ms=ts + 3000, **base))
        for notice in notices:
            result.append(notice)
            if rng.random() < duplicate_rate:
                delay = rng.randint(1, 90_000)
                result.append(_later(notice, delay))
    return result


def _later(notice: AdEvent, delay_ms: int) -> AdEvent:
    """The same notice again (same id), received `delay_ms` later."""
    fields = {f: getattr(notice, f) for f in notice.__struct_fields__}
    fields["ts_ms"] = notice.ts_ms + delay_ms
    return AdEvent(**fields)


def expected_minutes(events: list[AdEvent]) -> dict[tuple[int, int], tuple[int, ...]]:
    """The oracle: first occurrence of each id counts, bucketed by its minute."""
    seen: set[str] = set()
    totals: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0] * 6)
    for e in events:
        if e.id in seen:
            continue
        seen.add(e.id)
        row = totals[(e.campaign_id, e.ts_ms // 60_000 * 60)]
        if e.type == AdEventType.BID:
            row[0] += 1
            row[4] += e.bid_micros
        elif e.type == AdEventType.WIN:
            row[1] += 1
        elif e.type == AdEventType.IMPRESSION:
            row[2] += 1
        elif e.type == AdEventType.CLICK:
            row[3] += 1
        row[5] += e.spend_micros
    return {key: tuple(value) for key, value in totals.items()}


def expected_campaigns(events: list[AdEvent]) -> dict[int, tuple[int, ...]]:
    per_campaign: dict[int, list[int]] = defaultdict(lambda: [0] * 6)
    for (campaign, _), row in expected_minutes(events).items():
        for i, value in enumerate(row):
            per_campaign[campaign][i] += value
    return {key: tuple(value) for key, value in per_campaign.items()}


async def stored_minutes(engine: AsyncEngine) -> dict[tuple[int, int], tuple[int, ...]]:
    columns = ", ".join(MEASURES)
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(f"SELECT campaign_id, bucket, {columns} FROM analytics_campaign_minute")  # noqa: S608
        )
        return {(r[0], r[1]): tuple(r[2:]) for r in rows}


async def stored_campaigns(engine: AsyncEngine) -> dict[int, tuple[int, ...]]:
    sums = ", ".join(f"sum({m})" for m in MEASURES)
    union = (
        f"SELECT campaign_id, {', '.join(MEASURES)} FROM analytics_campaign_minute "  # noqa: S608
        f"UNION ALL SELECT campaign_id, {', '.join(MEASURES)} FROM analytics_campaign_hour"
    )
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(f"SELECT campaign_id, {sums} FROM ({union}) AS s GROUP BY campaign_id")  # noqa: S608
        )
        return {r[0]: tuple(int(v) for v in r[1:]) for r in rows}


@dataclass
class Seeded:
    advertiser_keys: dict[int, str]


async def seed_campaigns(
    engine: AsyncEngine,
    campaigns: dict[int, dict[str, Any]],
) -> Seeded:
    """Advertisers, campaigns and one API key per advertiser, as campaign-service's
    tables hold them (`campaigns` maps id -> advertiser_id, budgets, name)."""
    now = datetime.now(UTC)
    keys: dict[int, str] = {}
    async with engine.begin() as connection:
        for advertiser in sorted({c["advertiser_id"] for c in campaigns.values()}):
            await connection.execute(
                text(
                    "INSERT INTO advertisers (id, name, version, created_at, updated_at)"
                    " VALUES (:id, :name, 1, :now, :now)"
                ),
                {"id": advertiser, "name": f"advertiser {advertiser}", "now": now},
            )
            issued = generate_api_key()
            await connection.execute(
                text(
                    "INSERT INTO api_keys (advertiser_id, key_hash, display_prefix)"
                    " VALUES (:a, :h, :p)"
                ),
                {"a": advertiser, "h": issued.key_hash, "p": issued.display_prefix},
            )
            keys[advertiser] = issued.plaintext
        for campaign_id, spec in campaigns.items():
            await connection.execute(
                text(
                    "INSERT INTO campaigns (id, advertiser_id, name, status,"
                    " total_budget_micros, daily_budget_micros, max_bid_cpm_micros, pacing,"
                    " targeting, version, created_at, updated_at) VALUES (:id, :a, :name,"
                    " 'active', :total, :daily, 5000000, 'even', '{}', 1, :now, :now)"
                ),
                {
                    "id": campaign_id,
                    "a": spec["advertiser_id"],
                    "name": spec.get("name", f"campaign {campaign_id}"),
                    "total": spec.get("total_budget_micros", 1_000_000_000),
                    "daily": spec.get("daily_budget_micros", 100_000_000),
                    "now": now,
                },
            )
    return Seeded(keys)


async def eventually(
    condition: Callable[[], Awaitable[bool]], *, timeout: float, interval: float = 0.05
) -> None:
    """Wait until `condition()` holds; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if await condition():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
