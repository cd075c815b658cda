from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from adplatform.core.events import (
    AdEvent,
    AdEventType,
    CampaignSnapshot,
    CampaignState,
    CampaignUpdate,
    CreativeState,
    Targeting,
    ad_event_id,
    cpm_to_impression_micros,
    decode_ad_event,
    decode_campaign_update,
    decode_snapshot,
    encode,
)


def test_event_ids_repeat_exactly_where_the_world_repeats() -> None:
    first = ad_event_id("auction-1", "imp-1", AdEventType.WIN)
    assert first == ad_event_id("auction-1", "imp-1", "win")
    assert first != ad_event_id("auction-1", "imp-1", AdEventType.BILLING)
    assert first != ad_event_id("auction-1", "imp-2", AdEventType.WIN)
    # the separator keeps ("a", "bc") and ("ab", "c") apart
    assert ad_event_id("a", "bc", "win") != ad_event_id("ab", "c", "win")


@pytest.mark.parametrize(("cpm", "micros"), [(2.5, 2500), (0.001, 1), (1.2345678, 1235), (0, 0)])
def test_cpm_to_impression_micros(cpm: float, micros: int) -> None:
    assert cpm_to_impression_micros(cpm) == micros


def test_ad_event_round_trip() -> None:
    event = AdEvent(
        id=ad_event_id("a", "1", "bid"),
        type=AdEventType.BID,
        ts_ms=1_700_000_000_000,
        campaign_id=7,
        advertiser_id=3,
        creative_id=11,
        auction_id="a",
        imp_id="1",
        bid_micros=2500,
    )
    assert decode_ad_event(encode(event)) == event


def test_ad_event_rejects_unknown_type() -> None:
    raw = b'{"id":"x","type":"purchase","ts_ms":1,"campaign_id":1,"advertiser_id":1,'
    raw += b'"creative_id":1,"auction_id":"a","imp_id":"1"}'
    with pytest.raises(msgspec.ValidationError):
        decode_ad_event(raw)


def _campaign(version: int = 1) -> CampaignState:
    return CampaignState(
        id=1,
        advertiser_id=2,
        version=version,
        name="c",
        status="active",
        total_budget_micros=10_000_000,
        daily_budget_micros=1_000_000,
        max_bid_cpm_micros=2_000_000,
        pacing="even",
        flight_start=datetime(2026, 1, 1, tzinfo=UTC),
        targeting=Targeting(countries=["USA"], sizes=["300x250"]),
        creatives=[CreativeState(id=5, w=300, h=250, click_url="https://x", adomain="x.com")],
    )


def test_campaign_update_and_snapshot_round_trip() -> None:
    update = CampaignUpdate(seq=42, campaign=_campaign(3))
    assert decode_campaign_update(encode(update)) == update
    snapshot = CampaignSnapshot(
        position=42, generated_at=datetime(2026, 1, 2, tzinfo=UTC), campaigns=[_campaign()]
    )
    assert decode_snapshot(encode(snapshot)) == snapshot
