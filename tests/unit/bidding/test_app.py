"""The bidder over HTTP, on the in-process store and bus: bids, no-bids, currencies,
multi-imp, OpenRTB tolerance, tracking, readiness, faults."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from adplatform.bidding import notices as notices_module
from adplatform.bidding.budget import MemoryBudgetStore, StoreUnavailable
from adplatform.bidding.pacing import utc_day
from adplatform.core.bus import EventBus
from adplatform.core.events import (
    AD_EVENTS_TOPIC,
    CAMPAIGN_UPDATES_TOPIC,
    AdEvent,
    AdEventType,
    CampaignUpdate,
    decode_ad_event,
    encode,
)
from tests.unit.bidding.factories import (
    INTERNAL_KEY,
    RunningBidder,
    SnapshotServer,
    bid_request,
    bidder_settings,
    bids_of,
    campaign,
    creative,
    metric,
    running_bidder,
    snapshot,
)


async def events(bus: EventBus, bidder: RunningBidder) -> list[tuple[bytes | None, AdEvent]]:
    """What reached the bus (after the producer's buffer is drained)."""
    producer = bidder.bidder.auction.producer
    assert producer is not None
    assert bus.memory is not None
    await producer.flush()
    return [(m.key, decode_ad_event(m.value)) for m in bus.memory.messages(AD_EVENTS_TOPIC)]


@pytest.fixture
async def world() -> AsyncIterator[tuple[SnapshotServer, RunningBidder, EventBus]]:
    server = await SnapshotServer(
        snapshot(
            [
                campaign(501, advertiser_id=5, cpm=3_000_000),
                campaign(502, advertiser_id=6, cpm=2_000_000, creatives=[creative(w=728, h=90)]),
                campaign(503, advertiser_id=6, cpm=1_000_000),
            ]
        )
    ).start()
    bus = EventBus.from_brokers([])
    settings = bidder_settings(server.url, bid_currency_rates={"EUR": 1.25})
    async with running_bidder(settings, bus=bus) as bidder:
        yield server, bidder, bus
    await server.stop()


async def test_bid_response_has_every_field_and_publishes_a_bid_event(world: Any) -> None:
    _, bidder, bus = world
    before = metric("bid_requests_total", outcome="bid")
    observed = metric("bid_request_duration_seconds_count")
    body = bid_request()
    response = await bidder.bid(body)
    assert response.status_code == 200
    assert response.headers["x-openrtb-version"] == "2.6"
    payload = response.json()
    assert payload["id"] == body["id"]
    (bid,) = bids_of(response)
    assert payload["seatbid"][0]["seat"] == "5"
    assert bid["impid"] == "1"
    assert bid["price"] == 3.0
    assert bid["cid"] == "501"
    assert (bid["w"], bid["h"]) == (300, 250)
    assert bid["adomain"] == ["brand.example"]
    for field in ("nurl", "burl", "lurl", "adm", "crid"):
        assert bid[field]
    assert "/t/click?" in bid["adm"]
    assert "/t/imp?" in bid["adm"]
    assert metric("bid_requests_total", outcome="bid") == before + 1
    assert metric("bid_request_duration_seconds_count") == observed + 1
    assert metric("bid_request_duration_seconds_bucket", le="+Inf") == observed + 1
    route = {"service": "bidding", "method": "POST", "route": "/openrtb2/bid", "status": "200"}
    assert metric("http_requests_total", **route) > 0
    key, event = (await events(bus, bidder))[-1]
    assert key == b"501"
    assert event.type is AdEventType.BID
    assert event.bid_micros == 3000
    assert event.auction_id == body["id"]
    assert event.spend_micros == 0


async def test_no_eligible_campaign_is_a_204(world: Any) -> None:
    _, bidder, _ = world
    response = await bidder.bid(bid_request(imps=[{"id": "1", "banner": {"w": 1, "h": 1}}]))
    assert response.status_code == 204
    assert response.content == b""


async def test_multi_imp_bids_each_imp_with_distinct_campaigns(world: Any) -> None:
    _, bidder, _ = world
    imps = [
        {"id": "a", "banner": {"w": 300, "h": 250}},
        {"id": "b", "banner": {"w": 300, "h": 250}},
        {"id": "c", "banner": {"format": [{"w": 728, "h": 90}]}},
        {"id": "d", "banner": {"w": 300, "h": 250}},
    ]
    bids = {b["impid"]: b for b in bids_of(await bidder.bid(bid_request(imps=imps)))}
    assert {k: v["cid"] for k, v in bids.items()} == {"a": "501", "b": "503", "c": "502"}


async def test_floors_and_currencies(world: Any) -> None:
    _, bidder, _ = world

    def imp(**fields: Any) -> list[dict[str, Any]]:
        return [{"id": "1", "banner": {"w": 300, "h": 250}, **fields}]

    # 2.40 EUR = 3.00 USD: 501 still clears it; 2.41 EUR does not, and 503 is too cheap
    assert bids_of(await bidder.bid(bid_request(imps=imp(bidfloor=2.4, bidfloorcur="EUR"))))
    assert not bids_of(await bidder.bid(bid_request(imps=imp(bidfloor=2.41, bidfloorcur="EUR"))))
    # a floor in a currency without a rate: no bid for that imp
    assert not bids_of(await bidder.bid(bid_request(imps=imp(bidfloor=0.1, bidfloorcur="JPY"))))
    # the exchange only takes EUR: the bid is converted
    response = await bidder.bid(bid_request(cur=["EUR"]))
    assert response.json()["cur"] == "EUR"
    assert bids_of(response)[0]["price"] == 2.4
    assert (await bidder.bid(bid_request(cur=["JPY"]))).status_code == 204
    assert bids_of(await bidder.bid(bid_request(cur=["usd", "EUR"])))[0]["price"] == 3.0


async def test_an_imp_cannot_bid_twice_for_the_same_auction(world: Any) -> None:
    _, bidder, _ = world
    body = bid_request()
    assert (await bidder.bid(body)).status_code == 200
    assert (await bidder.bid(body)).status_code == 204


async def test_too_short_tmax_answers_no_bid_in_time(world: Any) -> None:
    _, bidder, _ = world
    before = metric("bid_requests_total", outcome="timeout")
    response = await bidder.bid(bid_request(tmax=3))  # below the 5 ms safety margin
    assert response.status_code == 204
    assert metric("bid_requests_total", outcome="timeout") == before + 1


async def test_tolerates_unknown_fields_and_missing_optional_objects(world: Any) -> None:
    _, bidder, _ = world
    rich = bid_request(
        ext={"prebid": {"x": [1, {"y": None}]}},
        dooh={"id": "screen-1"},
        source={"tid": "t", "schain": {"complete": 1}},
        regs={"gdpr": 1, "ext": {"us_privacy": "1YNN"}},
    )
    rich["imp"][0]["banner"]["ext"] = {"vendor": True}
    rich["imp"][0]["rwdd"] = 1
    rich["device"]["devicetype"] = 99
    assert (await bidder.bid(rich)).status_code == 200
    bare = {"id": "bare-1", "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}]}
    assert (await bidder.bid(bare)).status_code == 200  # untargeted campaigns still bid


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"imp": []}', "missing required field `id`"),
        (b'{"id": "x", "imp": []}', "`imp` is empty"),
        (b'{"id": "x", "imp": [{"id": "1"}]}', "has no banner"),
        (b'{"id": "x", "imp": [{"id": "1", "banner": {"w": "wide"}}]}', "$.imp[0].banner.w"),
        (b"not json", "malformed JSON"),
    ],
)
async def test_invalid_requests_are_400_with_a_reason(world: Any, body: bytes, reason: str) -> None:
    _, bidder, _ = world
    before = metric("bid_requests_total", outcome="invalid")
    response = await bidder.bid(body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_bid_request"
    assert reason in error["message"]
    assert metric("bid_requests_total", outcome="invalid") == before + 1


async def test_wrong_method_and_oversized_body(world: Any) -> None:
    _, bidder, _ = world
    assert (await bidder.client.get("/openrtb2/bid")).status_code == 405
    huge = b'{"id": "x", "imp": [], "pad": "' + b"x" * 300_000 + b'"}'
    assert (await bidder.bid(huge)).status_code == 413


def split(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    return parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}


async def test_tracking_flow_counts_each_notice_once_and_settles_once(world: Any) -> None:
    _, bidder, bus = world
    store = bidder.bidder.store
    start = len(await events(bus, bidder))
    settled = metric("bid_settlements_total", result="settled")
    duplicates = metric("tracking_events_total", type="win", result="duplicate")
    body = bid_request()
    (bid,) = bids_of(await bidder.bid(body))
    assert (await bidder.notice(bid["nurl"].replace("${AUCTION_PRICE}", "1.5"))).status_code == 204
    assert (await bidder.notice(bid["nurl"].replace("${AUCTION_PRICE}", "1.5"))).status_code == 204
    assert (await bidder.notice(bid["burl"].replace("${AUCTION_PRICE}", "1.5"))).status_code == 204
    adm = bid["adm"].replace("&amp;", "&")
    pixel = adm.split('<img src="')[-1].split('"')[0]
    click = adm.split('href="')[1].split('"')[0]
    shown = await bidder.notice(pixel)
    assert shown.status_code == 200
    assert shown.headers["content-type"] == "image/gif"
    assert (await bidder.notice(pixel)).status_code == 200  # a repeat still gets the pixel
    redirect = await bidder.notice(click)
    assert redirect.status_code == 302
    assert redirect.headers["location"] == "https://brand.example/landing"
    view = await store.view(501, utc_day(time.time()))
    assert view.spent == 1500
    assert view.reserved == 0
    assert metric("bid_settlements_total", result="settled") == settled + 1
    assert metric("tracking_events_total", type="win", result="duplicate") == duplicates + 1
    published = [e for _, e in (await events(bus, bidder))[start:]]
    # The repeats came at once, so their events went out again (same ids, same spend):
    # analytics counts each id once.
    assert [(e.type, e.spend_micros) for e in published] == [
        (AdEventType.BID, 0),
        (AdEventType.WIN, 1500),
        (AdEventType.WIN, 1500),
        (AdEventType.BILLING, 0),
        (AdEventType.IMPRESSION, 0),
        (AdEventType.IMPRESSION, 0),
        (AdEventType.CLICK, 0),
    ]
    once = {e.id: e for e in published}
    assert len(once) == 5
    assert sum(e.spend_micros for e in once.values()) == view.spent


async def test_a_notice_whose_store_reply_was_lost_still_reaches_the_bus(
    world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis ran the settle script but its reply never came (a timeout): the notice is
    answered 503 and no event went out. The exchange's retry finds the notice already
    counted; its event must be published then, or analytics never sees the spend."""
    _, bidder, bus = world
    store = bidder.bidder.store
    real_settle = store.settle
    lose_next_reply = True

    async def settle_then_lose_the_reply(settlement: Any, now_ms: int) -> Any:
        nonlocal lose_next_reply
        outcome = await real_settle(settlement, now_ms)
        if lose_next_reply:
            lose_next_reply = False
            raise StoreUnavailable("Redis: Timeout reading from socket")
        return outcome

    monkeypatch.setattr(store, "settle", settle_then_lose_the_reply)
    start = len(await events(bus, bidder))
    (bid,) = bids_of(await bidder.bid(bid_request()))
    win = bid["nurl"].replace("${AUCTION_PRICE}", "1.5")
    assert (await bidder.notice(win)).status_code == 503
    assert [e.type for _, e in (await events(bus, bidder))[start:]] == [AdEventType.BID]
    assert (await bidder.notice(win)).status_code == 204
    published = [e for _, e in (await events(bus, bidder))[start:]]
    assert [(e.type, e.spend_micros) for e in published] == [
        (AdEventType.BID, 0),
        (AdEventType.WIN, 1500),
    ]
    assert (await store.view(501, utc_day(time.time()))).spent >= 1500


async def test_a_repeat_long_after_the_first_notice_publishes_nothing(
    world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, bidder, bus = world
    (bid,) = bids_of(await bidder.bid(bid_request()))
    adm = bid["adm"].replace("&amp;", "&")
    pixel = adm.split('<img src="')[-1].split('"')[0]
    win = bid["nurl"].replace("${AUCTION_PRICE}", "1.5")
    assert (await bidder.notice(win)).status_code == 204
    assert (await bidder.notice(pixel)).status_code == 200
    start = len(await events(bus, bidder))
    monkeypatch.setattr(notices_module, "REPUBLISH_WINDOW_MS", 0)
    await asyncio.sleep(0.002)
    assert (await bidder.notice(win)).status_code == 204
    assert (await bidder.notice(pixel)).status_code == 200
    assert len(await events(bus, bidder)) == start


async def test_bad_notices_are_4xx_and_not_counted(world: Any) -> None:
    _, bidder, bus = world
    (bid,) = bids_of(await bidder.bid(bid_request()))
    path, params = split(bid["nurl"])
    invalid = metric("tracking_events_total", type="win", result="invalid")
    start = len(await events(bus, bidder))
    forged = {**params, "s": "A" * 22, "p": "1"}
    assert (await bidder.client.get(path, params=forged)).status_code == 403
    assert (await bidder.client.get(path, params={"s": params["s"]})).status_code == 400
    above = {**params, "p": "3.01"}
    response = await bidder.client.get(path, params=above)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "price_above_bid"
    assert metric("tracking_events_total", type="win", result="invalid") == invalid + 3
    assert len(await events(bus, bidder)) == start
    view = await bidder.bidder.store.view(501, utc_day(time.time()))
    assert view.reserved >= 3000  # still reserved: nothing settled


async def test_the_ad_markups_urls_cannot_be_turned_into_win_billing_or_loss_notices(
    world: Any,
) -> None:
    """The adm is shown on the publisher's page: whoever sees it must not be able to
    settle the impression at price 0 before the exchange does, or give its reservation
    back, by moving the pixel's or the click's `d` and `s` to another notice path."""
    _, bidder, _ = world
    store = bidder.bidder.store
    day = utc_day(time.time())
    before = await store.view(501, day)
    (bid,) = bids_of(await bidder.bid(bid_request()))
    adm = bid["adm"].replace("&amp;", "&")
    for public in (adm.split('<img src="')[-1].split('"')[0], adm.split('href="')[1].split('"')[0]):
        _, params = split(public)
        signed = {"d": params["d"], "s": params["s"]}
        for path in ("/t/win", "/t/billing"):
            forged = await bidder.client.get(path, params={**signed, "p": "0"})
            assert forged.status_code == 403
        assert (await bidder.client.get("/t/loss", params=signed)).status_code == 403
    view = await store.view(501, day)
    assert (view.spent, view.reserved) == (before.spent, before.reserved + 3000)
    # the exchange's own notice still settles, at its price
    assert (await bidder.notice(bid["nurl"].replace("${AUCTION_PRICE}", "1.5"))).status_code == 204
    assert (await store.view(501, day)).spent == before.spent + 1500


async def test_loss_notice_gives_the_reservation_back(world: Any) -> None:
    _, bidder, _ = world
    store = bidder.bidder.store
    day = utc_day(time.time())
    reserved = (await store.view(501, day)).reserved
    (bid,) = bids_of(await bidder.bid(bid_request()))
    assert (await store.view(501, day)).reserved == reserved + 3000
    assert (await bidder.notice(bid["lurl"])).status_code == 204
    assert (await store.view(501, day)).reserved == reserved


async def test_health_readiness_and_snapshot_retries() -> None:
    server = await SnapshotServer(snapshot([campaign(601)])).start()
    server.failures = 3
    async with running_bidder(bidder_settings(server.url), wait=False) as bidder:
        assert (await bidder.client.get("/health")).status_code == 200
        assert (await bidder.client.get("/health/live")).status_code == 200
        early = await bidder.client.get("/ready")
        assert early.status_code == 503
        assert not early.json()["checks"]["snapshot"]["ok"]
        assert (await bidder.bid(bid_request())).status_code == 204  # not ready: no-bid
        await bidder.wait_ready()
        assert server.requests >= 4
        assert (await bidder.client.get("/ready")).status_code == 200
        assert (await bidder.client.get("/health/ready")).status_code == 200
        assert metric("bidder_index_campaigns") == 1
        assert metric("bidder_index_last_update_timestamp_seconds") > time.time() - 60
    await server.stop()


async def test_updates_on_the_bus_reach_the_index_without_a_consumer_group() -> None:
    server = await SnapshotServer(snapshot([campaign(603, cpm=3_000_000), campaign(604)])).start()
    bus = EventBus.from_brokers([])
    assert bus.memory is not None
    async with running_bidder(bidder_settings(server.url), bus=bus) as bidder:
        feed = bidder.bidder.feed
        assert feed.following
        assert (await bidder.client.get("/ready")).status_code == 200
        (bid,) = bids_of(await bidder.bid(bid_request()))
        assert bid["cid"] == "603"
        paused = campaign(603, version=2, status="paused", cpm=3_000_000)
        await bus.producer().publish(
            CAMPAIGN_UPDATES_TOPIC, "603", encode(CampaignUpdate(seq=1, campaign=paused))
        )
        for _ in range(100):
            if bidder.bidder.index.version(603) == 2:
                break
            await asyncio.sleep(0.01)
        (bid,) = bids_of(await bidder.bid(bid_request()))
        assert bid["cid"] == "604"
        assert feed.applied == 1
        assert bus.memory.generation(feed.group) == 0  # followed by assignment, no group
    await server.stop()


async def test_wrong_internal_key_never_loads() -> None:
    server = await SnapshotServer(snapshot([campaign(602)]), key="other").start()
    async with running_bidder(bidder_settings(server.url), wait=False) as bidder:
        await asyncio.sleep(0.8)
        assert (await bidder.client.get("/ready")).status_code == 503
    await server.stop()


async def test_store_down_means_no_bid_and_not_ready(world: Any) -> None:
    _, bidder, _ = world
    store = bidder.bidder.store
    assert isinstance(store, MemoryBudgetStore)
    errors = metric("bid_requests_total", outcome="error")
    store.available = False
    try:
        response = await bidder.bid(bid_request())
        assert response.status_code == 204
        ready = await bidder.client.get("/ready")
        assert ready.status_code == 503
        assert not ready.json()["checks"]["budget_store"]["ok"]
        assert metric("bidder_budget_store_up") == 0
        assert metric("bid_requests_total", outcome="error") == errors
    finally:
        store.available = True
    await asyncio.sleep(0.6)
    assert (await bidder.bid(bid_request())).status_code == 200
    assert metric("bidder_budget_store_up") == 1


async def test_fault_injection(world: Any) -> None:
    _, bidder, _ = world
    client = bidder.client
    assert (await client.put("/internal/faults", json={"error_rate": 1.0})).status_code == 401
    headers = {"X-Internal-Key": INTERNAL_KEY}
    bad = await client.put("/internal/faults", json={"error_rate": 2.0}, headers=headers)
    assert bad.status_code == 400
    assert (
        await client.put("/internal/faults", json={"delay": 1}, headers=headers)
    ).status_code == 400
    errors = metric("bid_requests_total", outcome="error")
    set_ = await client.put(
        "/internal/faults", json={"error_rate": 1.0, "delay_ms": 20}, headers=headers
    )
    assert set_.json() == {"error_rate": 1.0, "delay_ms": 20}
    assert (await client.get("/internal/faults", headers=headers)).json()["delay_ms"] == 20
    started = time.monotonic()
    assert (await bidder.bid(bid_request())).status_code == 500
    assert time.monotonic() - started >= 0.02
    assert metric("bid_requests_total", outcome="error") == errors + 1
    await client.put("/internal/faults", json={"error_rate": 0.0, "delay_ms": 0}, headers=headers)
    assert (await bidder.bid(bid_request())).status_code == 200


async def test_fault_injection_is_absent_in_production() -> None:
    server = await SnapshotServer(snapshot([])).start()
    settings = bidder_settings(server.url, environment="production")
    async with running_bidder(settings) as bidder:
        headers = {"X-Internal-Key": INTERNAL_KEY}
        response = await bidder.client.put(
            "/internal/faults", json={"error_rate": 1}, headers=headers
        )
        assert response.status_code == 404
    await server.stop()


@pytest.mark.parametrize("pacing", ["even", "asap"])
async def test_even_pacing_spreads_the_daily_budget_asap_does_not(pacing: str) -> None:
    from adplatform.bidding.pacing import daily_limit

    daily = 8_640_000  # even pacing: 100 micros per second of the day
    price = 200_000  # a 200 USD CPM: 200,000 micros per impression
    server = await SnapshotServer(
        snapshot([campaign(801, cpm=price * 1000, daily=daily, pacing=pacing)])
    ).start()
    settings = bidder_settings(server.url, bid_pacing_ahead_seconds=0)
    async with running_bidder(settings) as bidder:
        expected = daily_limit(daily, pacing, time.time(), 0) // price
        bids = [len(bids_of(await bidder.bid(bid_request()))) for _ in range(60)]
        view = await bidder.bidder.store.view(801, utc_day(time.time()))
    await server.stop()
    if pacing == "asap":
        assert sum(bids) == daily // price == 43
    else:
        assert expected - 1 <= sum(bids) <= expected + 1
        assert sum(bids) < 43 or time.gmtime().tm_hour == 23
    assert view.day_reserved <= daily_limit(daily, pacing, time.time(), 0)
