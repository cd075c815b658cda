"""Rows to what leaves the service: API dicts and the bidder's `CampaignState`.

One conversion for the outbox, the snapshot and the seeder, so a campaign looks the
same to the bidder whichever way it arrives. Works on ORM objects and on Core rows
alike (both have the columns as attributes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, Protocol

import msgspec

from adplatform.core.events import CampaignState, CreativeState, FrequencyCap, Targeting

TARGETING_DEFAULTS: Final[dict[str, Any]] = msgspec.to_builtins(Targeting())

CAMPAIGN_COLUMNS: Final = (
    "id",
    "advertiser_id",
    "name",
    "status",
    "total_budget_micros",
    "daily_budget_micros",
    "max_bid_cpm_micros",
    "pacing",
    "flight_start",
    "flight_end",
    "frequency_cap_impressions",
    "frequency_cap_window_seconds",
    "targeting",
    "version",
    "created_at",
    "updated_at",
)
CREATIVE_COLUMNS: Final = (
    "id",
    "campaign_id",
    "advertiser_id",
    "name",
    "width",
    "height",
    "markup",
    "image_url",
    "click_url",
    "adomain",
    "iab_category",
    "status",
    "version",
    "created_at",
    "updated_at",
)


class CampaignLike(Protocol):
    id: int
    advertiser_id: int
    name: str
    status: str
    version: int


def full_targeting(stored: Mapping[str, Any] | None) -> dict[str, Any]:
    """Stored targeting with every dimension present (older rows may lack new ones)."""
    return {**TARGETING_DEFAULTS, **(stored or {})}


def campaign_dict(row: Any) -> dict[str, Any]:
    impressions = row.frequency_cap_impressions
    return {
        "id": row.id,
        "advertiser_id": row.advertiser_id,
        "name": row.name,
        "status": row.status,
        "total_budget_micros": row.total_budget_micros,
        "daily_budget_micros": row.daily_budget_micros,
        "max_bid_cpm_micros": row.max_bid_cpm_micros,
        "pacing": row.pacing,
        "flight_start": row.flight_start,
        "flight_end": row.flight_end,
        "frequency_cap": (
            None
            if impressions is None
            else {"impressions": impressions, "window_seconds": row.frequency_cap_window_seconds}
        ),
        "targeting": full_targeting(row.targeting),
        "version": row.version,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def campaign_dict_from_record(record: Any) -> dict[str, Any]:
    """`campaign_dict` for a mapping-style row (an asyncpg record): item access is
    C-level there, which matters when a list page converts 200 rows."""
    impressions = record["frequency_cap_impressions"]
    return {
        "id": record["id"],
        "advertiser_id": record["advertiser_id"],
        "name": record["name"],
        "status": record["status"],
        "total_budget_micros": record["total_budget_micros"],
        "daily_budget_micros": record["daily_budget_micros"],
        "max_bid_cpm_micros": record["max_bid_cpm_micros"],
        "pacing": record["pacing"],
        "flight_start": record["flight_start"],
        "flight_end": record["flight_end"],
        "frequency_cap": (
            None
            if impressions is None
            else {
                "impressions": impressions,
                "window_seconds": record["frequency_cap_window_seconds"],
            }
        ),
        "targeting": full_targeting(record["targeting"]),
        "version": record["version"],
        "created_at": record["created_at"],
        "updated_at": record["updated_at"],
    }


def creative_dict_from_record(record: Any) -> dict[str, Any]:
    return {name: record[name] for name in CREATIVE_COLUMNS}


def creative_dict(row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in CREATIVE_COLUMNS}


def advertiser_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "domain": row.domain,
        "version": row.version,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def api_key_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "advertiser_id": row.advertiser_id,
        "prefix": row.display_prefix,
        "created_at": row.created_at,
        "revoked_at": row.revoked_at,
    }


def creative_state(row: Any) -> CreativeState:
    return CreativeState(
        id=row.id,
        w=row.width,
        h=row.height,
        click_url=row.click_url,
        adomain=row.adomain,
        markup=row.markup,
        image_url=row.image_url,
        iab_category=row.iab_category,
        status=row.status,
    )


def campaign_state(row: Any, creatives: Iterable[Any]) -> CampaignState:
    """The bidder's view: only the campaign's *active* creatives are included, so a
    bidder never has to know which creative statuses may serve."""
    impressions = row.frequency_cap_impressions
    return CampaignState(
        id=row.id,
        advertiser_id=row.advertiser_id,
        version=row.version,
        name=row.name,
        status=row.status,
        total_budget_micros=row.total_budget_micros,
        daily_budget_micros=row.daily_budget_micros,
        max_bid_cpm_micros=row.max_bid_cpm_micros,
        pacing=row.pacing,
        flight_start=row.flight_start,
        flight_end=row.flight_end,
        frequency_cap=(
            None
            if impressions is None
            else FrequencyCap(
                impressions=impressions, window_seconds=row.frequency_cap_window_seconds
            )
        ),
        targeting=msgspec.convert(full_targeting(row.targeting), Targeting),
        creatives=[creative_state(c) for c in creatives if c.status == "active"],
    )
