"""The budget store's contract, run against every implementation (memory, Redis,
Redis Cluster) by the unit and integration tests."""

from __future__ import annotations

import asyncio
import time
import uuid

from adplatform.bidding.budget import (
    BudgetStore,
    Reservation,
    ReserveResult,
    Settlement,
    SettleResult,
    cap_key,
    reservation_id,
)
from adplatform.bidding.pacing import NO_LIMIT, utc_day
from adplatform.core.events import ad_event_id

R = ReserveResult


def now_ms() -> int:
    return int(time.time() * 1000)


def reservation(
    campaign_id: int,
    price: int,
    *,
    total: int = 1_000_000,
    daily: int = NO_LIMIT,
    rid: str | None = None,
    user: str | None = None,
    cap: int = 0,
    expires_in_ms: int = 60_000,
) -> Reservation:
    item = Reservation(
        campaign_id=campaign_id,
        rid=rid or reservation_id(uuid.uuid4().hex, "1"),
        price=price,
        total_budget=total,
        daily_limit=daily,
        day=utc_day(time.time()),
        expires_ms=now_ms() + expires_in_ms,
    )
    if user is not None and cap:
        item.cap_key = cap_key(user, 3600, time.time())
        item.cap_limit = cap
        item.cap_ttl = 3660
    return item


def settlement(
    campaign_id: int, rid: str, clearing: int, kind: str = "win", *, total: int = 1_000_000
) -> Settlement:
    return Settlement(
        campaign_id=campaign_id,
        rid=rid,
        notice_id=ad_event_id(rid, "1", kind),
        clearing=clearing,
        total_budget=total,
        daily_budget=NO_LIMIT,
        day=utc_day(time.time()),
        ttl=3600,
    )


async def check_total_budget(store: BudgetStore, cid: int) -> None:
    items = [reservation(cid, 400, total=1000) for _ in range(3)]
    results, _ = await store.reserve_many(items, now_ms())
    assert results == [R.RESERVED, R.RESERVED, R.NO_BUDGET]
    view = await store.view(cid, utc_day(time.time()))
    assert (view.spent, view.reserved, view.reservations) == (0, 800, 2)


async def check_daily_limit(store: BudgetStore, cid: int) -> None:
    items = [reservation(cid, 400, daily=500), reservation(cid, 100, daily=500)]
    results, _ = await store.reserve_many(items, now_ms())
    assert results == [R.RESERVED, R.RESERVED]
    results, _ = await store.reserve_many([reservation(cid, 1, daily=500)], now_ms())
    assert results == [R.DAILY_LIMIT]


async def check_duplicate(store: BudgetStore, cid: int) -> None:
    rid = reservation_id("auction", "imp")
    results, _ = await store.reserve_many(
        [reservation(cid, 10, rid=rid), reservation(cid, 10, rid=rid)], now_ms()
    )
    assert results == [R.RESERVED, R.DUPLICATE]


async def check_no_second_reservation_once_settled(store: BudgetStore, cid: int) -> None:
    """An exchange repeating a request id after the win: its settlement already took the
    reservation away, and a new one would be answered as a duplicate notice later, so
    its spend would never be counted."""
    rid = reservation_id("repeated-auction", "1")
    await store.reserve_many([reservation(cid, 400, rid=rid)], now_ms())
    settled = await store.settle(settlement(cid, rid, 300), now_ms())
    assert settled.result is SettleResult.SETTLED
    results, _ = await store.reserve_many([reservation(cid, 400, rid=rid)], now_ms())
    assert results == [R.DUPLICATE]
    view = await store.view(cid, utc_day(time.time()))
    assert (view.spent, view.reserved, view.reservations) == (300, 0, 0)


async def check_frequency_cap(store: BudgetStore, cid: int) -> None:
    items = [reservation(cid, 10, user="alice", cap=2) for _ in range(3)]
    items.append(reservation(cid, 10, user="bob", cap=2))
    results, _ = await store.reserve_many(items, now_ms())
    assert results == [R.RESERVED, R.RESERVED, R.CAPPED, R.RESERVED]


async def check_settle_once(store: BudgetStore, cid: int) -> None:
    item = reservation(cid, 400)
    await store.reserve_many([item], now_ms())
    first = await store.settle(settlement(cid, item.rid, 300), now_ms())
    assert (first.result, first.amount) == (SettleResult.SETTLED, 300)
    first_ms = now_ms()
    again = await store.settle(settlement(cid, item.rid, 300), now_ms())
    # A duplicate says what the first notice's event carried, and when it was counted.
    assert (again.result, again.amount) == (SettleResult.DUPLICATE_NOTICE, 300)
    assert first_ms - 5_000 <= again.first_ms <= first_ms
    billing = await store.settle(settlement(cid, item.rid, 300, "billing"), now_ms())
    assert (billing.result, billing.amount) == (SettleResult.ALREADY_SETTLED, 0)
    billing_again = await store.settle(settlement(cid, item.rid, 300, "billing"), now_ms())
    assert (billing_again.result, billing_again.amount) == (SettleResult.DUPLICATE_NOTICE, 0)
    assert billing_again.first_ms >= again.first_ms
    view = await store.view(cid, utc_day(time.time()))
    assert (view.spent, view.reserved, view.day_spent, view.reservations) == (300, 0, 300, 0)


async def check_settle_never_above_reservation(store: BudgetStore, cid: int) -> None:
    item = reservation(cid, 400)
    await store.reserve_many([item], now_ms())
    outcome = await store.settle(settlement(cid, item.rid, 900), now_ms())
    assert (outcome.result, outcome.amount) == (SettleResult.SETTLED, 400)


async def check_release(store: BudgetStore, cid: int) -> None:
    item = reservation(cid, 400, user="carol", cap=1)
    await store.reserve_many([item], now_ms())
    assert await store.release(cid, item.rid)
    assert not await store.release(cid, item.rid)
    view = await store.view(cid, utc_day(time.time()))
    assert (view.reserved, view.reservations) == (0, 0)
    # the frequency cap counted the bid and gave it back with the release
    results, _ = await store.reserve_many([reservation(cid, 10, user="carol", cap=1)], now_ms())
    assert results == [R.RESERVED]


async def check_expiry_releases_budget_and_cap(store: BudgetStore, cid: int) -> None:
    item = reservation(cid, 600, total=1000, user="dave", cap=1, expires_in_ms=100)
    results, _ = await store.reserve_many([item], now_ms())
    assert results == [R.RESERVED]
    blocked, _ = await store.reserve_many([reservation(cid, 600, total=1000)], now_ms())
    assert blocked == [R.NO_BUDGET]
    await asyncio.sleep(0.15)
    again = reservation(cid, 600, total=1000, user="dave", cap=1)
    results, released = await store.reserve_many([again], now_ms())
    assert results == [R.RESERVED]
    assert released == 1
    view = await store.view(cid, utc_day(time.time()))
    assert (view.reserved, view.reservations) == (600, 1)


async def check_late_settlement(store: BudgetStore, cid: int) -> None:
    item = reservation(cid, 500, total=1000, expires_in_ms=50)
    await store.reserve_many([item], now_ms())
    await asyncio.sleep(0.1)
    assert await store.release_expired([cid], now_ms()) == 1
    # released, then the win arrives: settled if the budget can still take it
    late = await store.settle(settlement(cid, item.rid, 400, total=1000), now_ms())
    assert (late.result, late.amount) == (SettleResult.SETTLED, 400)
    other = reservation(cid, 700, total=1000, expires_in_ms=50)
    results, _ = await store.reserve_many([other], now_ms())
    assert results == [R.NO_BUDGET]  # 400 spent + 700 > 1000
    filler = reservation(cid, 500, total=1000, expires_in_ms=50)
    assert (await store.reserve_many([filler], now_ms()))[0] == [R.RESERVED]
    await asyncio.sleep(0.1)
    await store.release_expired([cid], now_ms())
    await store.reserve_many([reservation(cid, 600, total=1000)], now_ms())  # 400 + 600 = full
    rejected = await store.settle(settlement(cid, filler.rid, 500, total=1000), now_ms())
    assert rejected.result is SettleResult.REJECTED
    view = await store.view(cid, utc_day(time.time()))
    assert view.spent == 400


async def check_release_expired_releases_them_all(store: BudgetStore, cid: int) -> None:
    """A campaign that stopped bidding (paused) with more expired reservations than one
    script call releases: the sweeper visits it once, so that visit must give back all
    of them, not leave the rest reserved until the campaign bids again."""
    items = [reservation(cid, 10, total=1_000_000, expires_in_ms=50) for _ in range(450)]
    results, _ = await store.reserve_many(items, now_ms())
    assert results == [R.RESERVED] * 450
    await asyncio.sleep(0.1)
    assert await store.release_expired([cid], now_ms()) == 450
    view = await store.view(cid, utc_day(time.time()))
    assert (view.reserved, view.reservations) == (0, 0)


async def check_mark_once(store: BudgetStore, cid: int) -> None:
    first = now_ms()
    assert await store.mark_once(cid, "event-1", 60, first) is None
    assert await store.mark_once(cid, "event-1", 60, first + 1_000) == first
    assert await store.mark_once(cid, "event-2", 60, first + 2_000) is None


CHECKS = [
    check_total_budget,
    check_daily_limit,
    check_duplicate,
    check_no_second_reservation_once_settled,
    check_frequency_cap,
    check_settle_once,
    check_settle_never_above_reservation,
    check_release,
    check_expiry_releases_budget_and_cap,
    check_late_settlement,
    check_release_expired_releases_them_all,
    check_mark_once,
]
