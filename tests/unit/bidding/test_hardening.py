"""Hostile or unusual input and partial failures on the bid path: never a 500, never
unbounded work, never budget held for a bid that was not sent, never a price under
the floor."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from adplatform.bidding import index as index_module
from adplatform.bidding.auction import Auction, StoreHealth, _price
from adplatform.bidding.budget import (
    MemoryBudgetStore,
    Reservation,
    ReservationBatcher,
    ReserveResult,
    StoreUnavailable,
)
from adplatform.bidding.index import TargetingIndex
from adplatform.bidding.main import check_public_url
from adplatform.bidding.openrtb import decode_bid_request
from adplatform.bidding.pacing import utc_day
from adplatform.bidding.tracking import Tracker
from adplatform.core.bus import EventBus, _LogThrottle
from adplatform.core.config import MissingSettingError, Settings
from tests.unit.bidding.factories import (
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


def nested(depth: int) -> dict[str, Any]:
    body = bid_request()
    body["ext"] = msgspec.json.decode(b"[" * depth + b"]" * depth)
    return body


async def test_deeply_nested_ext_is_a_400_not_a_500() -> None:
    server = await SnapshotServer(snapshot([campaign(cpm=1_000_000)])).start()
    try:
        async with running_bidder(bidder_settings(server.url)) as bidder:
            body = msgspec.json.encode(bid_request())[:-1] + b',"ext":' + b"[" * 5000
            body += b"]" * 5000 + b"}"
            response = await bidder.bid(body)
            assert response.status_code == 400, response.text
            assert response.json()["error"]["message"] == "JSON nested too deeply"
            # an ordinary depth of extensions is still fine
            assert (await bidder.bid(nested(20))).status_code == 200
    finally:
        await server.stop()


def test_oversized_fields_are_refused_while_decoding() -> None:
    huge_domain = ".".join(["a"] * 2000)  # 3,999 characters, 2,000 labels
    for body in (
        bid_request(site={"domain": huge_domain}),
        bid_request(bcat=["IAB1"] * 600),
        bid_request(badv=["x" * 2000 + ".com"]),
        bid_request(device={"os": "o" * 500}),
    ):
        with pytest.raises(ValueError, match="length"):
            decode_bid_request(msgspec.json.encode(body))


def suffix_cache_size() -> int:
    lookup: Any = index_module._suffixes  # small_key_cache hands on its LRU's cache_info
    size: int = lookup.cache_info().currsize
    return size


def test_a_host_longer_than_dns_allows_matches_nothing_and_is_not_cached() -> None:
    long_host = ".".join(["ab"] * 300)[:1000]  # within the decoder's bound, over DNS's
    page = "https://" + "p" * 300 + ".example.com/" + "x" * 5000
    before = suffix_cache_size()
    assert index_module.domain_suffixes(long_host) == frozenset()
    assert index_module.normalize_domain(long_host) is None
    assert index_module.domain_suffixes(page) == frozenset()  # its host is over 253 too
    assert suffix_cache_size() == before
    ok = "https://news.example.com/" + "y" * 5000
    assert index_module.domain_suffixes(ok) == {"news.example.com", "example.com"}


def test_deep_hosts_cannot_fill_memory_through_the_suffix_cache() -> None:
    # A publisher with a wildcard DNS name can send a new host of a hundred labels with
    # every request; its suffix set is over 100 strings. Kept in the 65,536-entry cache,
    # such hosts held about 30 KB each (2 GB in all, twice the chart's memory limit).
    hosts = [f"{n}." + "a." * 118 + "example.com" for n in range(300)]
    assert len(hosts[0]) <= 253
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for host in hosts:
            assert "a.example.com" in index_module.domain_suffixes(host)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    kept = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert kept / len(hosts) < 2_000, f"{kept / len(hosts):.0f} bytes kept per host"
    assert index_module.domain_suffixes(hosts[0]) == index_module.domain_suffixes(hosts[0])
    assert len(index_module.domain_suffixes(hosts[0])) == 120  # all but the TLD


async def test_explicit_nulls_for_defaulted_fields_are_tolerated() -> None:
    server = await SnapshotServer(snapshot([campaign(cpm=1_000_000)])).start()
    try:
        async with running_bidder(bidder_settings(server.url)) as bidder:
            imp = {"id": "1", "banner": {"w": 300, "h": 250}, "bidfloor": None}
            body = bid_request(imps=[{**imp, "bidfloorcur": None}], at=None, test=None)
            response = await bidder.bid(body)
            assert response.status_code == 200, response.text
    finally:
        await server.stop()


async def test_a_floor_equal_to_the_bid_is_met_and_converted_prices_never_fall_under_it() -> None:
    server = await SnapshotServer(snapshot([campaign(cpm=4_030_000)])).start()
    try:
        settings = bidder_settings(server.url, bid_currency_rates={"EUR": 1.08})
        async with running_bidder(settings) as bidder:
            imp = [{"id": "1", "banner": {"w": 300, "h": 250}, "bidfloor": 4.03}]
            (bid,) = bids_of(await bidder.bid(bid_request(imps=imp)))
            assert bid["price"] == 4.03
    finally:
        await server.stop()
    # Every CPM a EUR floor with any number of decimals could be compared against:
    # the price sent is never under the floor the index let it clear.
    for cpm_micros in range(19_000_000, 19_000_000 + 20_000, 7):
        price = _price(cpm_micros, 1.08)
        floor = cpm_micros / 1_000_000 / 1.08  # the highest EUR floor this CPM clears
        assert price >= round(floor, 9)
        assert price - floor < 1.1e-6  # and at most a millionth above


class SecondRoundFails(MemoryBudgetStore):
    """Refuses the first reservation for campaign `refused` (so a second round runs),
    then fails every later call."""

    def __init__(self, refused: int) -> None:
        super().__init__()
        self.refused = refused
        self.calls = 0

    async def reserve_many(
        self, reservations: Sequence[Reservation], now_ms: int
    ) -> tuple[list[ReserveResult], int]:
        self.calls += 1
        if self.calls > 1:
            raise StoreUnavailable("second round: store gone")
        results, released = await super().reserve_many(reservations, now_ms)
        return [
            ReserveResult.NO_BUDGET if item.campaign_id == self.refused else result
            for item, result in zip(reservations, results, strict=True)
        ], released


async def test_first_round_reservations_are_bid_when_the_second_round_fails() -> None:
    winner, refused, fallback = campaign(cpm=3_000_000), campaign(cpm=2_000_000), campaign()
    server = await SnapshotServer(snapshot([winner, refused, fallback])).start()
    store = SecondRoundFails(refused.id)
    try:
        from adplatform.bidding import main

        original = main.build_store
        main.build_store = lambda settings: store  # type: ignore[assignment,unused-ignore]
        try:
            async with running_bidder(bidder_settings(server.url)) as bidder:
                imps = [
                    {"id": "1", "banner": {"w": 300, "h": 250}},
                    {"id": "2", "banner": {"w": 300, "h": 250}},
                ]
                response = await bidder.bid(bid_request(imps=imps))
                assert response.status_code == 200, response.text
                (bid,) = bids_of(response)
                assert (bid["impid"], bid["cid"]) == ("1", str(winner.id))
                view = await store.view(winner.id, utc_day(time.time()))
                assert (view.reserved, view.reservations) == (3000, 1)
        finally:
            main.build_store = original
    finally:
        await server.stop()


async def test_head_requests_on_the_pixel_and_click_are_not_counted() -> None:
    server = await SnapshotServer(snapshot([campaign(cpm=1_000_000)])).start()
    bus = EventBus.from_brokers([])
    try:
        async with running_bidder(bidder_settings(server.url), bus=bus) as bidder:
            (bid,) = bids_of(await bidder.bid(bid_request()))
            adm = bid["adm"].replace("&amp;", "&")
            pixel = adm.split('<img src="')[-1].split('"')[0]
            click = adm.split('href="')[1].split('"')[0]
            shown = metric("tracking_events_total", type="impression", result="counted")
            clicked = metric("tracking_events_total", type="click", result="counted")
            assert (await bidder.client.head(pixel)).status_code == 200
            assert (await bidder.client.head(click)).status_code == 302
            assert metric("tracking_events_total", type="impression", result="counted") == shown
            assert metric("tracking_events_total", type="click", result="counted") == clicked
            assert (await bidder.client.get(pixel)).status_code == 200
            assert metric("tracking_events_total", type="impression", result="counted") == shown + 1
    finally:
        await server.stop()


@pytest.mark.parametrize(
    ("environment", "url", "refused"),
    [
        ("production", "http://127.0.0.1:8081", True),
        ("staging", "http://localhost:8080", True),
        ("production", "https://[::1]/", True),
        ("production", "https://bidding.example.com", False),
        ("test", "http://127.0.0.1:8081", False),
    ],
)
def test_production_refuses_a_loopback_tracking_base(
    environment: str, url: str, refused: bool
) -> None:
    settings = Settings(environment=environment, public_bidding_url=url)
    if refused:
        with pytest.raises(MissingSettingError, match="PUBLIC_BIDDING_URL"):
            check_public_url(settings)
    else:
        check_public_url(settings)


def test_a_safety_margin_as_long_as_the_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="BID_SAFETY_MARGIN_MS"):
        Settings(bid_timeout_ms=50, bid_safety_margin_ms=50)
    assert Settings(bid_timeout_ms=50, bid_safety_margin_ms=49).bid_safety_margin_ms == 49


async def test_log_throttle_says_how_many_lines_it_left_out() -> None:
    throttle = _LogThrottle(interval=0.05)
    assert throttle.due("ad-events")
    assert throttle.take("ad-events") == {"suppressed": 0}
    assert [throttle.due("ad-events") for _ in range(5)] == [False] * 5
    assert throttle.due("other-topic")  # per topic
    await asyncio.sleep(0.06)
    assert throttle.due("ad-events")
    assert throttle.take("ad-events") == {"suppressed": 5}


def test_long_cur_lists_are_not_kept_by_the_currency_cache() -> None:
    # `cur` may hold 512 codes of 128 characters: 4,096 such lists kept as cache keys
    # would be about 390 MB.
    auction = bounded_auction([], currency_rates={"EUR": 1.08})
    assert auction._bid_currency(("GBP", "eur")) == ("EUR", 1.08)
    assert len(auction._currencies) == 1  # the lists exchanges send are kept
    long_list = (*(f"X{n:03d}" + "Y" * 120 for n in range(500)), "EUR")
    assert auction._bid_currency(long_list) == ("EUR", 1.08)
    assert auction._bid_currency(long_list[:-1]) is None
    assert len(auction._currencies) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("format", [{"w": 300 + n, "h": 250} for n in range(513)]),
        ("btype", [1] * 513),
        ("battr", [1] * 513),
    ],
)
async def test_banner_lists_over_512_entries_are_a_400_with_a_reason(
    field: str, value: list[Any]
) -> None:
    # Like every other list of a request (README: lists are limited to 512 entries);
    # banner.format drives the index walk, one bucket look-up per size.
    server = await SnapshotServer(snapshot([campaign(cpm=1_000_000)])).start()
    try:
        async with running_bidder(bidder_settings(server.url)) as bidder:
            banner: dict[str, Any] = {"w": 300, "h": 250, field: value}
            response = await bidder.bid(bid_request(imps=[{"id": "1", "banner": banner}]))
            assert response.status_code == 400, response.text
            message = response.json()["error"]["message"]
            assert "length <= 512" in message
            assert f"$.imp[0].banner.{field}" in message
            banner[field] = value[:512]  # at the bound: answered
            response = await bidder.bid(bid_request(imps=[{"id": "1", "banner": banner}]))
            assert response.status_code == 200, response.text
    finally:
        await server.stop()


def bounded_auction(
    campaigns: list[Any], *, currency_rates: dict[str, float] | None = None
) -> Auction:
    """An auction over `campaigns`, in process (memory store, no HTTP)."""
    index = TargetingIndex()
    index.load(snapshot(campaigns))
    return Auction(
        index=index,
        batcher=ReservationBatcher(MemoryBudgetStore()),
        health=StoreHealth(),
        tracker=Tracker(b"secret", "http://bidder.test", 60),
        timeout_ms=1000,
        safety_margin_ms=10,
        reservation_timeout_s=60,
        pacing_ahead_s=900,
        currency_rates=currency_rates or {},
    )


def count_candidates(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many candidates the index examines (each has its campaign checked)."""
    checks = [0]
    original = index_module.IndexedCampaign.eligible

    def counted(self: Any, ctx: Any) -> bool:
        checks[0] += 1
        return original(self, ctx)

    monkeypatch.setattr(index_module.IndexedCampaign, "eligible", counted)
    return checks


@pytest.mark.parametrize(
    "unmatchable",
    [{"wseat": ["nobody"]}, {"bcat": ["IAB1"]}, {"site": {"cat": ["IAB2"]}}],
)
async def test_a_request_no_campaign_matches_does_bounded_index_work(
    monkeypatch: pytest.MonkeyPatch, unmatchable: dict[str, Any]
) -> None:
    # 64 imps over one bucket of 3,000 campaigns none of which the request allows: the
    # walk used to check every one of them for every imp (192,000 checks; 64 imps over
    # 10,000 campaigns held the event loop for a quarter of a second).
    auction = bounded_auction(
        [
            campaign(cpm=1_000_000 + n, categories=["IAB1"], creatives=[creative(category="IAB1")])
            for n in range(3_000)
        ]
    )
    checks = count_candidates(monkeypatch)
    imps = [{"id": str(n), "banner": {"w": 300, "h": 250}} for n in range(64)]
    body = bid_request(imps=imps, **unmatchable)
    request = decode_bid_request(msgspec.json.encode(body))
    outcome, payload = await auction.run(request, time.monotonic())
    assert (outcome, payload) == ("nobid", None)
    # MAX_EXAMINED_PER_REQUEST (4,096) plus one imp's overdraft (MAX_EXAMINED_PER_IMP)
    assert checks[0] <= 4_096 + 512, f"{checks[0]} candidates examined"


async def test_the_work_bound_leaves_ordinary_selective_requests_alone() -> None:
    # The one campaign of seat 7 sits under 300 richer ones: found within an imp's bound;
    # every imp of the request still gets its own look-up.
    others = [campaign(advertiser_id=1, cpm=5_000_000 + n) for n in range(300)]
    wanted = [campaign(advertiser_id=7, cpm=1_000_000) for _ in range(3)]
    auction = bounded_auction([*others, *wanted])
    imps = [{"id": str(n), "banner": {"w": 300, "h": 250}} for n in range(3)]
    request = decode_bid_request(msgspec.json.encode(bid_request(imps=imps, wseat=["7"])))
    outcome, payload = await auction.run(request, time.monotonic())
    assert outcome == "bid"
    assert payload is not None
    response = msgspec.json.decode(payload)
    bids = [bid for seat in response["seatbid"] for bid in seat["bid"]]
    assert sorted(bid["cid"] for bid in bids) == sorted(str(c.id) for c in wanted)
