"""Event types and topic names: the one definition producers and consumers share.

Two topics cross service boundaries:

- `campaign-updates` (key: campaign id), written by campaign-service's outbox relay.
  Each message carries the campaign's *whole* biddable state and its `version`, so a
  consumer applies "newest version wins" and needs neither ordering across campaigns
  nor deltas. `CampaignSnapshot` is the same state for all active campaigns at once,
  which the bidder loads at start before following the topic.
- `ad-events` (key: campaign id), written by the bidder: bids, wins, billing notices,
  impressions and clicks, read by analytics-service.

Money is integer micros (1 USD = 1,000,000). `bid_micros` and `spend_micros` are the
price of *one* impression (an OpenRTB CPM price divided by 1000), so sums add up.
Times are UTC.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Final

import msgspec

AD_EVENTS_TOPIC: Final = "ad-events"
CAMPAIGN_UPDATES_TOPIC: Final = "campaign-updates"
TOPICS: Final = (AD_EVENTS_TOPIC, CAMPAIGN_UPDATES_TOPIC)


# --------------------------------------------------------------------------- ad events


class AdEventType(StrEnum):
    BID = "bid"
    WIN = "win"
    BILLING = "billing"
    IMPRESSION = "impression"
    CLICK = "click"


class AdEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One thing that happened to one impression of one campaign."""

    id: str
    """Deterministic (see `ad_event_id`): the same notice delivered twice has one id."""
    type: AdEventType
    ts_ms: int
    """When it happened, milliseconds since the Unix epoch (UTC)."""
    campaign_id: int
    advertiser_id: int
    creative_id: int
    auction_id: str
    imp_id: str
    bid_micros: int = 0
    """The price bid for this impression (bid events; copied onto the later events)."""
    spend_micros: int = 0
    """Money this event settled in the budget store; only the first of win/billing
    settles, so summing this field over all events gives exactly the spend."""


def ad_event_id(auction_id: str, imp_id: str, event_type: AdEventType | str) -> str:
    """Where the real world repeats itself (a notice fired twice), ids repeat too."""
    raw = f"{auction_id}\x1f{imp_id}\x1f{event_type}".encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def cpm_to_impression_micros(cpm_usd: float) -> int:
    """OpenRTB CPM price (USD per 1000) to the integer micros one impression costs."""
    return round(cpm_usd * 1000)


def impression_micros_to_cpm(micros: int) -> float:
    return micros / 1000


# ------------------------------------------------------------------- campaign updates


class FrequencyCap(msgspec.Struct, frozen=True, kw_only=True):
    impressions: int
    window_seconds: int


class Targeting(msgspec.Struct, frozen=True, kw_only=True):
    """Empty list = no restriction on that dimension."""

    countries: list[str] = []
    """ISO-3166-1 alpha-3, as OpenRTB's `geo.country`."""
    device_types: list[int] = []
    """OpenRTB 2.6 device type codes (1 mobile/tablet, 2 PC, 3 TV, 4 phone, ...)."""
    os: list[str] = []
    """Lower-case operating system names (`ios`, `android`, `windows`, ...)."""
    categories: list[str] = []
    """IAB content categories the site or app must have one of (`IAB1`, `IAB1-2`)."""
    domains_allow: list[str] = []
    domains_block: list[str] = []
    sizes: list[str] = []
    """Banner sizes `WxH`; empty means the creatives' sizes decide."""
    hours: list[int] = []
    """Hours of day 0-23 in `timezone` when the campaign may bid."""
    timezone: str = "UTC"


class CreativeState(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    w: int
    h: int
    click_url: str
    adomain: str
    markup: str | None = None
    image_url: str | None = None
    iab_category: str | None = None
    status: str = "active"


class CampaignState(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the bidder needs to know about one campaign."""

    id: int
    advertiser_id: int
    version: int
    """Grows with every write; a consumer ignores a state not newer than the one it has."""
    name: str
    status: str
    total_budget_micros: int
    daily_budget_micros: int
    max_bid_cpm_micros: int
    pacing: str
    flight_start: datetime | None = None
    flight_end: datetime | None = None
    frequency_cap: FrequencyCap | None = None
    targeting: Targeting = Targeting()
    creatives: list[CreativeState] = []


class CampaignUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """One outbox row as published to `campaign-updates`."""

    seq: int
    """The outbox row's id: grows with every write across all campaigns."""
    campaign: CampaignState
    deleted: bool = False


class CampaignSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """All active campaigns, read in one transaction, and the outbox position then."""

    position: int
    """The largest outbox `seq` committed when the snapshot was read."""
    generated_at: datetime
    campaigns: list[CampaignState]


# ---------------------------------------------------------------------------- codecs

_encoder = msgspec.json.Encoder()
_ad_event_decoder = msgspec.json.Decoder(AdEvent)
_campaign_update_decoder = msgspec.json.Decoder(CampaignUpdate)
_snapshot_decoder = msgspec.json.Decoder(CampaignSnapshot)


def encode(event: msgspec.Struct) -> bytes:
    return _encoder.encode(event)


def decode_ad_event(data: bytes) -> AdEvent:
    return _ad_event_decoder.decode(data)


def decode_campaign_update(data: bytes) -> CampaignUpdate:
    return _campaign_update_decoder.decode(data)


def decode_snapshot(data: bytes) -> CampaignSnapshot:
    return _snapshot_decoder.decode(data)
