"""Request bodies: strict JSON types, unknown fields, limits, and the fields errors name."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from adplatform.campaigns.paging import decode_cursor, encode_cursor
from adplatform.campaigns.preconditions import IfMatch, check_version
from adplatform.campaigns.schemas import CampaignCreate, CampaignPatch, CreativeCreate
from adplatform.core.errors import Conflict, PreconditionFailed, ValidationFailed

VALID: dict[str, Any] = {
    "advertiser_id": 1,
    "name": "Spring Sale",
    "total_budget_micros": 1_000_000_000,
    "daily_budget_micros": 100_000_000,
    "max_bid_cpm_micros": 2_500_000,
}


def _error_locations(body: dict[str, Any], model: type[BaseModel] = CampaignCreate) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    return [".".join(str(p) for p in err["loc"]) for err in caught.value.errors()]


def test_valid_campaign_normalises_targeting() -> None:
    campaign = CampaignCreate.model_validate(
        {
            **VALID,
            "targeting": {
                "countries": ["usa", "USA", "deu"],
                "device_types": [4, 1, 4],
                "hours": [9, 8, 9],
                "sizes": ["300X250"],
                "domains_block": ["www.Bad.example"],
            },
        }
    )
    assert campaign.targeting.countries == ["USA", "DEU"]
    assert campaign.targeting.device_types == [1, 4]
    assert campaign.targeting.hours == [8, 9]
    assert campaign.targeting.sizes == ["300x250"]
    assert campaign.targeting.domains_block == ["bad.example"]
    assert campaign.status == "draft"


@pytest.mark.parametrize(
    ("change", "location"),
    [
        ({"total_budget_micros": "1000"}, "total_budget_micros"),  # string, not integer
        ({"total_budget_micros": 1.5}, "total_budget_micros"),
        ({"total_budget_micros": True}, "total_budget_micros"),
        ({"total_budget_micros": -5}, "total_budget_micros"),
        ({"total_budget_micros": 0}, "total_budget_micros"),
        ({"daily_budget_micros": 10**16}, "daily_budget_micros"),  # absurd: over USD 1bn
        ({"max_bid_cpm_micros": 10**10}, "max_bid_cpm_micros"),
        ({"pacing": "fast"}, "pacing"),
        ({"status": "paused"}, "status"),
        ({"name": "x" * 201}, "name"),
        ({"name": ""}, "name"),
        ({"colour": "red"}, "colour"),
        ({"targeting": {"countries": ["US"]}}, "targeting.countries.0"),
        ({"targeting": {"device_types": [9]}}, "targeting.device_types.0"),
        ({"targeting": {"hours": [24]}}, "targeting.hours.0"),
        ({"targeting": {"timezone": "Nowhere/City"}}, "targeting.timezone"),
        ({"targeting": {"categories": ["IAB99"]}}, "targeting.categories.0"),
        ({"targeting": {"gender": "f"}}, "targeting.gender"),
        ({"targeting": {"countries": ["USA"] * 301}}, "targeting.countries"),
        ({"flight_start": "2027-01-01T00:00:00"}, "flight_start"),  # no zone
        ({"flight_end": "yesterday"}, "flight_end"),
        (
            {"frequency_cap": {"impressions": 0, "window_seconds": 3600}},
            "frequency_cap.impressions",
        ),
        (
            {"frequency_cap": {"impressions": 3, "window_seconds": 1}},
            "frequency_cap.window_seconds",
        ),
        ({"advertiser_id": 2**31}, "advertiser_id"),
    ],
)
def test_bad_campaign_fields_are_named(change: dict[str, Any], location: str) -> None:
    assert location in _error_locations({**VALID, **change})


def test_missing_required_fields_are_named() -> None:
    locations = _error_locations({"name": "x"})
    assert set(locations) >= {"total_budget_micros", "daily_budget_micros", "max_bid_cpm_micros"}


def test_patch_distinguishes_omitted_from_null() -> None:
    patch = CampaignPatch.model_validate({"flight_end": None, "daily_budget_micros": 5})
    assert patch.model_fields_set == {"flight_end", "daily_budget_micros"}
    assert "name" in _error_locations({"name": None}, CampaignPatch)
    assert "targeting" in _error_locations({"targeting": None}, CampaignPatch)
    assert "version" in _error_locations({"version": "3"}, CampaignPatch)


def test_creative_fields() -> None:
    creative = CreativeCreate.model_validate(
        {
            "width": 300,
            "height": 250,
            "image_url": "https://cdn.example.com/a.png",
            "click_url": "https://example.com/landing",
            "adomain": "Example.com",
        }
    )
    assert creative.adomain == "example.com"
    bad = {"width": 0, "height": 250, "click_url": "javascript:x", "adomain": "nope"}
    assert set(_error_locations(bad, CreativeCreate)) == {"width", "click_url", "adomain"}


def test_cursor_round_trip_and_garbage() -> None:
    assert decode_cursor(None) == 0
    assert decode_cursor(encode_cursor(12345)) == 12345
    for bad in ("!!!", "aWQ6LTE", encode_cursor(0), "eHl6OjE", "aWQ6OTk5OTk5OTk5OTk5"):
        with pytest.raises(ValidationFailed) as caught:
            decode_cursor(bad)
        assert caught.value.details[0]["field"] == "cursor"


def test_if_match_parsing_and_version_checks() -> None:
    assert IfMatch.parse(None) is None
    assert IfMatch.parse('"3"').matches(3)  # type: ignore[union-attr]
    assert IfMatch.parse('W/"3"').matches(3)  # type: ignore[union-attr]
    assert IfMatch.parse('"1", "3"').matches(3)  # type: ignore[union-attr]
    assert IfMatch.parse("*").matches(99)  # type: ignore[union-attr]
    assert not IfMatch.parse('"2"').matches(3)  # type: ignore[union-attr]
    assert not IfMatch.parse("garbage").matches(3)  # type: ignore[union-attr]
    check_version(3, IfMatch.parse('"3"'), 3)
    check_version(3, None, None)
    with pytest.raises(PreconditionFailed) as stale_header:
        check_version(3, IfMatch.parse('"2"'), None)
    assert stale_header.value.status_code == 412
    assert stale_header.value.headers == {"ETag": '"3"'}
    with pytest.raises(Conflict) as stale_body:
        check_version(3, None, 2)
    assert stale_body.value.status_code == 409
    assert stale_body.value.details == {"field": "version", "current_version": 3}
