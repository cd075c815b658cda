"""Targeting correctness, one dimension at a time, and index maintenance."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest

from adplatform.bidding.auction import _sizes, request_context
from adplatform.bidding.index import TargetingIndex, local_hour
from adplatform.bidding.openrtb import Banner, Format, Imp, decode_bid_request
from adplatform.core.events import CampaignState, CampaignUpdate, FrequencyCap
from tests.unit.bidding.factories import bid_request, campaign, creative, snapshot


def index_of(*campaigns: CampaignState) -> TargetingIndex:
    index = TargetingIndex()
    index.load(snapshot(list(campaigns)))
    return index


def winner(index: TargetingIndex, body: dict[str, Any], imp: int = 0) -> int | None:
    """The campaign id the index picks for one imp of a request, or None."""
    request = decode_bid_request(msgspec.json.encode(body))
    ctx = request_context(request, time.time(), time.monotonic())
    item = request.imp[imp]
    entry = index.best(_sizes(item), ctx, (item.bidfloor or 0.0) * 1_000_000)
    return None if entry is None else entry.campaign.id


def test_highest_price_wins_and_ties_go_to_the_lower_id() -> None:
    index = index_of(
        campaign(11, cpm=1_000_000), campaign(12, cpm=3_000_000), campaign(13, cpm=3_000_000)
    )
    assert winner(index, bid_request()) == 12
    found = index.candidates(
        [(300, 250)],
        request_context(
            decode_bid_request(msgspec.json.encode(bid_request())), time.time(), time.monotonic()
        ),
        0.0,
        limit=3,
    )
    assert [e.campaign.id for e in found] == [12, 13, 11]


def test_banner_size_from_w_h_or_format() -> None:
    index = index_of(campaign(21, creatives=[creative(w=728, h=90)]))
    assert winner(index, bid_request()) is None
    by_format = bid_request(
        imps=[{"id": "1", "banner": {"format": [{"w": 320, "h": 50}, {"w": 728, "h": 90}]}}]
    )
    assert winner(index, by_format) == 21
    no_size = bid_request(imps=[{"id": "1", "banner": {}}])
    assert winner(index, no_size) is None


def test_targeting_sizes_restrict_the_creatives() -> None:
    index = index_of(
        campaign(22, sizes=["728x90"], creatives=[creative(w=300, h=250), creative(w=728, h=90)])
    )
    assert winner(index, bid_request()) is None
    assert winner(index, bid_request(imps=[{"id": "1", "banner": {"w": 728, "h": 90}}])) == 22


def test_floor_excludes_cheaper_campaigns() -> None:
    index = index_of(campaign(31, cpm=1_500_000), campaign(32, cpm=800_000))
    assert (
        winner(
            index, bid_request(imps=[{"id": "1", "banner": {"w": 300, "h": 250}, "bidfloor": 1.0}])
        )
        == 31
    )
    assert (
        winner(
            index, bid_request(imps=[{"id": "1", "banner": {"w": 300, "h": 250}, "bidfloor": 1.5}])
        )
        == 31
    )
    assert (
        winner(
            index, bid_request(imps=[{"id": "1", "banner": {"w": 300, "h": 250}, "bidfloor": 1.51}])
        )
        is None
    )


def test_country() -> None:
    index = index_of(
        campaign(41, cpm=5_000_000, countries=["DEU", "fra"]), campaign(42, cpm=1_000_000)
    )
    assert winner(index, bid_request(country="DEU")) == 41
    assert winner(index, bid_request(country="fra")) == 41
    assert winner(index, bid_request(country="USA")) == 42
    assert winner(index, bid_request(country=None)) == 42  # unknown country: only untargeted
    from_user = bid_request(country=None, user={"id": "u", "geo": {"country": "DEU"}})
    assert winner(index, from_user) == 41


def test_device_type_with_the_mobile_umbrella() -> None:
    index = index_of(campaign(51, device_types=[4]), campaign(52, cpm=1_000_000, device_types=[1]))
    phone = bid_request(device={"devicetype": 4, "geo": {"country": "USA"}})
    tablet = bid_request(device={"devicetype": 5, "geo": {"country": "USA"}})
    pc = bid_request(device={"devicetype": 2, "geo": {"country": "USA"}})
    assert winner(index, phone) == 51
    assert winner(index, tablet) == 52  # 1 = mobile/tablet covers 4 and 5
    assert winner(index, pc) is None


def test_os_names_are_normalized() -> None:
    index = index_of(campaign(61, os=["ios"]))
    assert winner(index, bid_request(device={"os": "iOS", "geo": {"country": "USA"}})) == 61
    assert winner(index, bid_request(device={"os": "iPhone OS", "geo": {"country": "USA"}})) == 61
    assert winner(index, bid_request(device={"os": "Android", "geo": {"country": "USA"}})) is None
    assert winner(index, bid_request(device={"geo": {"country": "USA"}})) is None


def test_categories_match_subcategories_of_the_page() -> None:
    index = index_of(
        campaign(71, categories=["IAB2"]), campaign(72, cpm=1_000_000, categories=["IAB3-1"])
    )
    assert winner(index, bid_request(site={"domain": "a.example", "cat": ["IAB2-4"]})) == 71
    assert winner(index, bid_request(site={"domain": "a.example", "cat": ["IAB3"]})) is None
    assert winner(index, bid_request(site={"domain": "a.example", "pagecat": ["IAB3-1"]})) == 72
    assert winner(index, bid_request(app={"bundle": "com.x", "cat": ["IAB2"]})) == 71


def test_domain_allow_and_block_lists_cover_subdomains() -> None:
    index = index_of(
        campaign(81, cpm=5_000_000, domains_allow=["example.com"]),
        campaign(82, cpm=2_000_000, domains_block=["bad.example"]),
    )
    assert winner(index, bid_request(site={"domain": "news.example.com"})) == 81
    assert winner(index, bid_request(site={"domain": "www.EXAMPLE.com"})) == 81
    assert winner(index, bid_request(site={"domain": "other.example"})) == 82
    assert winner(index, bid_request(site={"domain": "x.bad.example"})) is None
    assert winner(index, bid_request(site={"page": "https://bad.example/a?b"})) is None
    assert winner(index, bid_request(app={"bundle": "com.bad.app"})) == 82
    index = index_of(campaign(83, domains_allow=["com.good.app"]))
    assert winner(index, bid_request(app={"bundle": "com.good.app"})) == 83


def test_bcat_blocks_creative_categories_and_their_children() -> None:
    index = index_of(
        campaign(91, cpm=5_000_000, creatives=[creative(category="IAB7-3")]),
        campaign(92, cpm=2_000_000, creatives=[creative(category="IAB1")]),
    )
    assert winner(index, bid_request()) == 91
    assert winner(index, bid_request(bcat=["IAB7"])) == 92
    assert winner(index, bid_request(bcat=["IAB7-3"])) == 92
    assert winner(index, bid_request(bcat=["IAB7-4"])) == 91
    assert winner(index, bid_request(bcat=["IAB7", "IAB1"])) is None


def test_badv_blocks_advertiser_domains() -> None:
    index = index_of(
        campaign(101, cpm=5_000_000, creatives=[creative(adomain="shop.brand.example")]),
        campaign(102, cpm=2_000_000, creatives=[creative(adomain="other.example")]),
    )
    assert winner(index, bid_request(badv=["brand.example"])) == 102
    assert winner(index, bid_request(badv=["shop.brand.example", "other.example"])) is None


def test_hours_of_day_in_the_campaign_timezone() -> None:
    now = time.time()
    tokyo_hour = datetime.fromtimestamp(now, ZoneInfo("Asia/Tokyo")).hour
    assert local_hour("Asia/Tokyo", now) == tokyo_hour
    index = index_of(
        campaign(111, cpm=5_000_000, hours=[tokyo_hour], timezone="Asia/Tokyo"),
        campaign(112, cpm=2_000_000, hours=[(tokyo_hour + 12) % 24], timezone="Asia/Tokyo"),
    )
    assert winner(index, bid_request()) == 111


def test_flight_dates() -> None:
    now = datetime.now(UTC)
    index = index_of(
        campaign(121, cpm=5_000_000, flight_start=now + timedelta(hours=1)),
        campaign(122, cpm=4_000_000, flight_end=now - timedelta(minutes=1)),
        campaign(
            123,
            cpm=3_000_000,
            flight_start=now - timedelta(days=1),
            flight_end=now + timedelta(days=1),
        ),
    )
    assert winner(index, bid_request()) == 123


def test_status_of_campaigns_and_creatives() -> None:
    index = index_of(
        campaign(131, cpm=5_000_000, status="paused"),
        campaign(132, cpm=4_000_000, creatives=[creative(status="paused")]),
        campaign(133, cpm=3_000_000, total=0),
        campaign(134, cpm=2_000_000),
    )
    assert len(index) == 1
    assert winner(index, bid_request()) == 134


def test_seat_allow_and_block_lists() -> None:
    index = index_of(campaign(141, advertiser_id=7, cpm=5_000_000), campaign(142, advertiser_id=8))
    assert winner(index, bid_request(wseat=["8"])) == 142
    assert winner(index, bid_request(bseat=["7"])) == 142
    assert winner(index, bid_request(wseat=["9"])) is None


def test_frequency_capped_campaigns_need_a_user() -> None:
    index = index_of(campaign(151, cap=FrequencyCap(impressions=2, window_seconds=60)))
    anonymous = bid_request()
    del anonymous["user"]
    assert winner(index, anonymous) is None
    assert winner(index, bid_request()) == 151
    with_ifa = {**anonymous, "device": {"ifa": "abc", "geo": {"country": "USA"}}}
    assert winner(index, with_ifa) == 151


def test_updates_apply_only_newer_versions_and_replace_entries() -> None:
    index = index_of(campaign(161, version=3, cpm=1_000_000), campaign(162, cpm=2_000_000))
    assert winner(index, bid_request()) == 162
    raised = campaign(161, version=4, cpm=9_000_000)
    assert index.apply(CampaignUpdate(seq=1, campaign=raised))
    assert winner(index, bid_request()) == 161
    stale = campaign(161, version=2, cpm=1_000_000)
    assert not index.apply(CampaignUpdate(seq=2, campaign=stale))
    assert winner(index, bid_request()) == 161
    paused = campaign(161, version=5, status="paused")
    assert index.apply(CampaignUpdate(seq=3, campaign=paused))
    assert winner(index, bid_request()) == 162
    assert index.get(161) is None
    assert index.version(161) == 5
    assert not index.apply(CampaignUpdate(seq=4, campaign=campaign(161, version=5)))
    assert index.apply(CampaignUpdate(seq=5, campaign=campaign(162, version=2), deleted=True))
    assert winner(index, bid_request()) is None
    assert len(index) == 0


def test_removed_campaign_held_by_a_request_is_skipped() -> None:
    index = index_of(campaign(171))
    held = index.get(171)
    assert held is not None
    index.apply(CampaignUpdate(seq=1, campaign=campaign(171, version=2, status="paused")))
    ctx = request_context(
        decode_bid_request(msgspec.json.encode(bid_request())), time.time(), time.monotonic()
    )
    assert not held.eligible(ctx)


def test_snapshot_keeps_newer_versions_seen_in_updates() -> None:
    index = TargetingIndex()
    index.apply(CampaignUpdate(seq=9, campaign=campaign(181, version=7, status="paused")))
    index.load(snapshot([campaign(181, version=6)]))
    assert index.get(181) is None  # the snapshot's version 6 is older than the update's 7
    assert index.version(181) == 7


@pytest.mark.parametrize("count", [50, 500])
def test_many_buckets_stay_sorted_after_updates(count: int) -> None:
    index = index_of(*(campaign(1000 + i, cpm=(i % 37 + 1) * 100_000) for i in range(count)))
    for i in range(0, count, 3):
        index.apply(
            CampaignUpdate(
                seq=i, campaign=campaign(1000 + i, version=2, cpm=(i % 11 + 1) * 150_000)
            )
        )
    for bucket in index._buckets.values():
        keys = [e.sort_key for e in bucket]
        assert keys == sorted(keys)
    best = max(index.campaigns(), key=lambda c: (c.price_cpm_micros, -c.id))
    assert winner(index, bid_request()) == best.id


@pytest.mark.parametrize(
    "page",
    [
        "https://bad.example?utm=1",  # a query straight after the host (no path)
        "https://x.bad.example#top",
        "https://bad.example./a",  # the fully qualified form, with its final dot
        "https://user:pw@bad.example/a",  # userinfo before the host
        "//bad.example/a",  # scheme-relative
        "HTTPS://WWW.BAD.EXAMPLE.:8443/",
    ],
)
def test_a_page_url_in_any_valid_form_is_matched_by_its_host(page: str) -> None:
    index = index_of(
        campaign(84, cpm=5_000_000, domains_block=["bad.example"]),
        campaign(85, cpm=2_000_000, domains_allow=["bad.example"]),
    )
    assert winner(index, bid_request(site={"page": page})) == 85


def test_sizes_of_a_long_format_list_take_linear_time() -> None:
    # A 245 KB body (under the 256 KB limit) holds 15,000 distinct formats; removing
    # duplicates by list membership took 2.4 s of the event loop for one request.
    # The decoder now refuses more than 512 formats (a 400); `_sizes` stays linear for
    # an imp built without it.
    formats = [{"w": w, "h": h} for w in range(1, 200) for h in range(1, 80)][:15_000]
    formats += formats[:10]
    body = bid_request(imps=[{"id": "1", "banner": {"w": 500, "h": 700, "format": formats}}])
    with pytest.raises(ValueError, match="length <= 512"):
        decode_bid_request(msgspec.json.encode(body))
    banner = Banner(w=500, h=700, format=[Format(w=f["w"], h=f["h"]) for f in formats])
    imp = Imp(id="1", banner=banner)  # built directly: constructors check no bounds
    started = time.perf_counter()
    sizes = _sizes(imp)
    assert time.perf_counter() - started < 0.2
    assert len(sizes) == 15_001
    assert sizes[:3] == [(500, 700), (1, 1), (1, 2)]  # banner w/h first, then format order
