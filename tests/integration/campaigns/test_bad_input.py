"""Bad input: always a 4xx with the error body naming the field, and nothing written."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from adplatform.campaigns.models import Advertiser, Campaign, Creative, OutboxRow
from tests.integration.campaigns.support import Service, campaign_body, creative_body

pytestmark = pytest.mark.integration


async def _counts(service: Service) -> tuple[int, ...]:
    async with service.app.state.store.sessions() as session:
        return tuple(
            [
                int(await session.scalar(select(func.count()).select_from(model)) or 0)
                for model in (Advertiser, Campaign, Creative, OutboxRow)
            ]
        )


@pytest.fixture
async def world(service: Service) -> dict[str, Any]:
    advertiser_id = await service.advertiser()
    campaign = await service.campaign(advertiser_id, "Existing", creatives=[creative_body()])
    return {"advertiser_id": advertiser_id, "campaign": campaign}


def _fields(body: dict[str, Any]) -> list[str]:
    details = body["error"]["details"]
    if isinstance(details, dict):
        return [details["field"]]
    return [d["field"] for d in details]


CAMPAIGN_CASES: list[tuple[str, dict[str, Any], int, str]] = [
    ("string money", {"total_budget_micros": "5000"}, 422, "total_budget_micros"),
    ("float money", {"daily_budget_micros": 2.5}, 422, "daily_budget_micros"),
    ("negative money", {"total_budget_micros": -1}, 422, "total_budget_micros"),
    ("absurd money", {"total_budget_micros": 10**18}, 422, "total_budget_micros"),
    ("absurd bid", {"max_bid_cpm_micros": 10**12}, 422, "max_bid_cpm_micros"),
    ("daily over total", {"daily_budget_micros": 6_000_000_000}, 422, "daily_budget_micros"),
    (
        "end before start",
        {"flight_start": "2027-02-01T00:00:00Z", "flight_end": "2027-01-01T00:00:00Z"},
        422,
        "flight_end",
    ),
    ("naive time", {"flight_start": "2027-02-01T00:00:00"}, 422, "flight_start"),
    ("unknown pacing", {"pacing": "turbo"}, 422, "pacing"),
    ("unknown status", {"status": "live"}, 422, "status"),
    ("name too long", {"name": "n" * 201}, 422, "name"),
    ("blank name", {"name": "   "}, 422, "name"),
    ("unknown field", {"budget": 5}, 422, "budget"),
    ("bad country", {"targeting": {"countries": ["USA", "XYZ"]}}, 422, "targeting.countries.1"),
    ("alpha-2 country", {"targeting": {"countries": ["US"]}}, 422, "targeting.countries.0"),
    ("bad device", {"targeting": {"device_types": [8]}}, 422, "targeting.device_types.0"),
    ("bad os", {"targeting": {"os": ["symbian"]}}, 422, "targeting.os.0"),
    ("bad category", {"targeting": {"categories": ["IAB27"]}}, 422, "targeting.categories.0"),
    ("bad size", {"targeting": {"sizes": ["big"]}}, 422, "targeting.sizes.0"),
    ("bad hour", {"targeting": {"hours": [25]}}, 422, "targeting.hours.0"),
    ("bad zone", {"targeting": {"timezone": "Atlantis/Capital"}}, 422, "targeting.timezone"),
    (
        "allow and block",
        {"targeting": {"domains_allow": ["a.example"], "domains_block": ["a.example"]}},
        422,
        "targeting.domains_block",
    ),
    ("unknown targeting", {"targeting": {"age": [18]}}, 422, "targeting.age"),
    (
        "bad inline creative",
        {"creatives": [creative_body(), creative_body(click_url="not a url")]},
        422,
        "creatives.1.click_url",
    ),
    (
        "inline creative without content",
        {"creatives": [creative_body(image_url=None)]},
        422,
        "creatives.0.markup",
    ),
    ("active without creative", {"status": "active"}, 409, "creatives"),
    ("duplicate name", {"name": "Existing"}, 409, "name"),
]


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [case[1:] for case in CAMPAIGN_CASES],
    ids=[case[0] for case in CAMPAIGN_CASES],
)
async def test_bad_campaign_is_rejected_and_nothing_written(
    service: Service, world: dict[str, Any], change: dict[str, Any], status: int, field: str
) -> None:
    before = await _counts(service)
    response = await service.client.post(
        "/campaigns", json={**campaign_body(world["advertiser_id"], "New"), **change}
    )
    assert response.status_code == status, response.text
    assert field in _fields(response.json())
    assert response.json()["error"]["message"]
    assert await _counts(service) == before


PATCH_CASES: list[tuple[str, dict[str, Any], int, str]] = [
    (
        "daily over existing total",
        {"daily_budget_micros": 5_000_000_001},
        422,
        "daily_budget_micros",
    ),
    ("total under existing daily", {"total_budget_micros": 1_000_000}, 422, "daily_budget_micros"),
    ("end before existing start", {"flight_end": "2025-06-01T00:00:00Z"}, 422, "flight_end"),
    ("null for a required field", {"name": None}, 422, "name"),
    ("wrong type", {"pacing": 3}, 422, "pacing"),
    ("unknown field", {"colour": "red"}, 422, "colour"),
    ("bad version type", {"version": "1"}, 422, "version"),
    ("illegal status", {"status": "draft"}, 409, "status"),
    (
        "targeting conflict",
        {"targeting": {"domains_allow": ["x.example"], "domains_block": ["x.example"]}},
        422,
        "targeting.domains_block",
    ),
]


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [case[1:] for case in PATCH_CASES],
    ids=[case[0] for case in PATCH_CASES],
)
async def test_bad_patch_changes_nothing(
    service: Service, world: dict[str, Any], change: dict[str, Any], status: int, field: str
) -> None:
    campaign = world["campaign"]
    await service.client.post(f"/campaigns/{campaign['id']}/status", json={"status": "active"})
    current = (await service.client.get(f"/campaigns/{campaign['id']}")).json()
    before = await _counts(service)
    response = await service.client.patch(f"/campaigns/{campaign['id']}", json=change)
    assert response.status_code == status, response.text
    assert field in _fields(response.json())
    assert (await service.client.get(f"/campaigns/{campaign['id']}")).json() == current
    assert await _counts(service) == before


async def test_malformed_and_oversized_bodies(service: Service, world: dict[str, Any]) -> None:
    before = await _counts(service)
    broken = await service.client.post(
        "/campaigns", content=b'{"name": "x", ', headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 400
    assert broken.json()["error"]["code"] == "malformed_json"
    not_object = await service.client.post("/campaigns", json=[1, 2, 3])
    assert not_object.status_code == 422
    huge = await service.client.post(
        "/campaigns",
        content=b'{"name": "' + b"x" * 2_000_000 + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert huge.status_code == 413
    assert huge.json()["error"]["code"] == "payload_too_large"
    assert await _counts(service) == before


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/campaigns", {"limit": 0}, "query.limit"),
        ("/campaigns", {"limit": 5000}, "query.limit"),
        ("/campaigns", {"status": "running"}, "query.status"),
        ("/campaigns", {"advertiser_id": "abc"}, "query.advertiser_id"),
        ("/campaigns", {"cursor": "not-a-cursor"}, "cursor"),
        ("/campaigns/99999999999", {}, "path.campaign_id"),
        ("/campaigns/0", {}, "path.campaign_id"),
        ("/creatives/abc", {}, "path.creative_id"),
        ("/advertisers/-1", {}, "path.advertiser_id"),
    ],
)
async def test_bad_query_and_path_parameters(
    service: Service, path: str, params: dict[str, Any], field: str
) -> None:
    response = await service.client.get(path, params=params)
    assert response.status_code == 422, response.text
    assert field in _fields(response.json())


async def test_bad_creatives(service: Service, world: dict[str, Any]) -> None:
    url = f"/campaigns/{world['campaign']['id']}/creatives"
    before = await _counts(service)
    cases = [
        (creative_body(width=0), "width"),
        (creative_body(height=20_000), "height"),
        (creative_body(adomain="not a domain"), "adomain"),
        (creative_body(image_url="ftp://x.example/a.png"), "image_url"),
        (creative_body(iab_category="IAB30"), "iab_category"),
        (creative_body(markup="x" * 70_000, image_url=None), "markup"),
        (creative_body(status="archived"), "status"),
        ({**creative_body(), "extra": 1}, "extra"),
    ]
    for body, field in cases:
        response = await service.client.post(url, json=body)
        assert response.status_code == 422, (field, response.text)
        assert field in _fields(response.json())
    assert await _counts(service) == before


async def test_advertiser_input(service: Service) -> None:
    for body, field in [
        ({"name": ""}, "name"),
        ({"name": "A", "domain": "nodot"}, "domain"),
        ({"name": "A", "email": "x@y.z"}, "email"),
        ({}, "name"),
    ]:
        response = await service.client.post("/advertisers", json=body)
        assert response.status_code == 422
        assert field in _fields(response.json())
    assert (await _counts(service))[0] == 0


# (id, body, headers, status, field) for PATCH /creatives/{id}; the creative is an
# image creative (no markup) of an active campaign.
CREATIVE_PATCH_CASES: list[tuple[str, Any, dict[str, str], int, str]] = [
    ("zero width", {"width": 0}, {}, 422, "width"),
    ("huge height", {"height": 20_000}, {}, 422, "height"),
    ("string width", {"width": "300"}, {}, 422, "width"),
    ("null for a required field", {"click_url": None}, {}, 422, "click_url"),
    ("null status", {"status": None}, {}, 422, "status"),
    ("bad click url", {"click_url": "not a url"}, {}, 422, "click_url"),
    ("ftp image", {"image_url": "ftp://x.example/a.png"}, {}, 422, "image_url"),
    ("bad adomain", {"adomain": "nodot"}, {}, 422, "adomain"),
    ("bad category", {"iab_category": "IAB30"}, {}, 422, "iab_category"),
    ("empty markup", {"markup": ""}, {}, 422, "markup"),
    ("markup too long", {"markup": "x" * 70_000, "image_url": None}, {}, 422, "markup"),
    ("markup and image", {"markup": "<b>ad</b>"}, {}, 422, "markup"),
    ("neither markup nor image", {"image_url": None}, {}, 422, "markup"),
    ("name too long", {"name": "n" * 201}, {}, 422, "name"),
    ("unknown status", {"status": "deleted"}, {}, 422, "status"),
    ("unknown field", {"campaign_id": 2}, {}, 422, "campaign_id"),
    ("bad version type", {"version": "1"}, {}, 422, "version"),
    ("stale version", {"width": 728, "version": 99}, {}, 409, "version"),
    ("stale If-Match", {"width": 728}, {"If-Match": '"99"'}, 412, "If-Match"),
    ("garbled If-Match", {"width": 728}, {"If-Match": "yesterday"}, 412, "If-Match"),
    ("not an object", [{"width": 728}], {}, 422, "body"),
]


@pytest.mark.parametrize(
    ("body", "headers", "status", "field"),
    [case[1:] for case in CREATIVE_PATCH_CASES],
    ids=[case[0] for case in CREATIVE_PATCH_CASES],
)
async def test_bad_creative_patch_changes_nothing(
    service: Service,
    world: dict[str, Any],
    body: Any,
    headers: dict[str, str],
    status: int,
    field: str,
) -> None:
    campaign_url = f"/campaigns/{world['campaign']['id']}"
    activated = await service.client.post(f"{campaign_url}/status", json={"status": "active"})
    assert activated.status_code == 200, activated.text
    creative = (await service.client.get(f"{campaign_url}/creatives")).json()["items"][0]
    campaign = (await service.client.get(campaign_url)).json()
    before = await _counts(service)

    response = await service.client.patch(
        f"/creatives/{creative['id']}", json=body, headers=headers
    )
    assert response.status_code == status, response.text
    assert field in _fields(response.json())
    assert response.json()["error"]["message"]
    assert (await service.client.get(f"/creatives/{creative['id']}")).json() == creative
    assert (await service.client.get(campaign_url)).json() == campaign  # version not bumped
    assert await _counts(service) == before  # no outbox row either


ADVERTISER_PATCH_CASES: list[tuple[str, Any, dict[str, str], int, str]] = [
    ("empty name", {"name": ""}, {}, 422, "name"),
    ("blank name", {"name": "   "}, {}, 422, "name"),
    ("null name", {"name": None}, {}, 422, "name"),
    ("name too long", {"name": "n" * 201}, {}, 422, "name"),
    ("control character", {"name": "Acme\u0000"}, {}, 422, "name"),
    ("wrong type", {"name": 7}, {}, 422, "name"),
    ("bad domain", {"domain": "nodot"}, {}, 422, "domain"),
    ("unknown field", {"email": "ads@acme.example"}, {}, 422, "email"),
    ("bad version type", {"version": "1"}, {}, 422, "version"),
    ("zero version", {"version": 0}, {}, 422, "version"),
    ("duplicate name", {"name": "Globex"}, {}, 409, "name"),
    ("duplicate name after trimming", {"name": "  Globex "}, {}, 409, "name"),
    ("stale version", {"name": "Acme 2", "version": 99}, {}, 409, "version"),
    ("stale If-Match", {"name": "Acme 2"}, {"If-Match": '"99"'}, 412, "If-Match"),
    ("not an object", ["Acme 2"], {}, 422, "body"),
]


@pytest.mark.parametrize(
    ("body", "headers", "status", "field"),
    [case[1:] for case in ADVERTISER_PATCH_CASES],
    ids=[case[0] for case in ADVERTISER_PATCH_CASES],
)
async def test_bad_advertiser_patch_changes_nothing(
    service: Service,
    world: dict[str, Any],
    body: Any,
    headers: dict[str, str],
    status: int,
    field: str,
) -> None:
    await service.advertiser("Globex")  # advertiser names are unique platform-wide
    url = f"/advertisers/{world['advertiser_id']}"
    current = (await service.client.get(url)).json()
    before = await _counts(service)

    response = await service.client.patch(url, json=body, headers=headers)
    assert response.status_code == status, response.text
    assert field in _fields(response.json())
    assert response.json()["error"]["message"]
    assert (await service.client.get(url)).json() == current
    assert await _counts(service) == before


async def test_advertiser_patch_with_an_advertiser_key_is_forbidden(
    service: Service, world: dict[str, Any]
) -> None:
    url = f"/advertisers/{world['advertiser_id']}"
    current = (await service.client.get(url)).json()
    key = await service.key_for(world["advertiser_id"])
    async with service.as_key(key) as advertiser:
        response = await advertiser.patch(url, json={"name": "Renamed By Itself"})
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "forbidden"
    assert (await service.client.get(url)).json() == current


async def test_advertiser_names_are_unique_platform_wide_and_case_sensitive(
    service: Service, world: dict[str, Any]
) -> None:
    other = await service.advertiser("Globex")
    taken = await service.client.post("/advertisers", json={"name": "Acme"})
    assert taken.status_code == 409, taken.text
    assert taken.json()["error"]["code"] == "duplicate_name"
    renamed = await service.client.patch(f"/advertisers/{other}", json={"name": "ACME"})
    assert renamed.status_code == 200, renamed.text  # another name: case counts
