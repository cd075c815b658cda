"""The campaign API against real PostgreSQL: CRUD, keys, lifecycle and the outbox rows."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from adplatform.campaigns.models import Campaign, Creative, OutboxRow
from adplatform.core.events import CampaignState
from tests.integration.campaigns.support import Service, campaign_body, creative_body

pytestmark = pytest.mark.integration


async def _outbox(service: Service) -> list[OutboxRow]:
    async with service.app.state.store.sessions() as session:
        return list((await session.scalars(select(OutboxRow).order_by(OutboxRow.id))).all())


async def test_advertiser_crud_and_keys(service: Service) -> None:
    created = await service.client.post(
        "/advertisers", json={"name": "Northwind", "domain": "www.Northwind.example"}
    )
    assert created.status_code == 201
    assert created.headers["etag"] == '"1"'
    assert created.headers["location"] == f"/advertisers/{created.json()['id']}"
    advertiser = created.json()
    assert advertiser["domain"] == "northwind.example"

    got = await service.client.get(f"/advertisers/{advertiser['id']}")
    assert got.json() == advertiser

    patched = await service.client.patch(
        f"/advertisers/{advertiser['id']}", json={"name": "Northwind Traders"}
    )
    assert patched.status_code == 200
    assert patched.json()["version"] == 2
    assert patched.headers["etag"] == '"2"'

    issued = await service.client.post(f"/advertisers/{advertiser['id']}/api-keys")
    assert issued.status_code == 201
    key = issued.json()
    assert key["key"].startswith(key["prefix"])
    assert issued.headers["cache-control"] == "no-store"

    listed = await service.client.get(f"/advertisers/{advertiser['id']}/api-keys")
    assert [k["prefix"] for k in listed.json()["items"]] == [key["prefix"]]
    assert "key" not in listed.json()["items"][0]  # the plaintext is never shown again

    async with service.as_key(key["key"]) as advertiser_client:
        assert (await advertiser_client.get(f"/advertisers/{advertiser['id']}")).status_code == 200
        revoked = await service.client.delete(
            f"/advertisers/{advertiser['id']}/api-keys/{key['id']}"
        )
        assert revoked.status_code == 200
        assert revoked.json()["revoked_at"] is not None
        after = await advertiser_client.get(f"/advertisers/{advertiser['id']}")
        assert after.status_code == 401


async def test_duplicate_advertiser_name_is_409(service: Service) -> None:
    await service.advertiser("Acme")
    duplicate = await service.client.post("/advertisers", json={"name": "Acme"})
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["code"] == "duplicate_name"
    assert duplicate.json()["error"]["details"] == {"field": "name"}


async def test_campaign_crud_with_creatives_and_outbox(service: Service) -> None:
    advertiser_id = await service.advertiser()
    body = campaign_body(advertiser_id, status="active", creatives=[creative_body()])
    created = await service.client.post("/campaigns", json=body)
    assert created.status_code == 201, created.text
    campaign = created.json()
    assert campaign["status"] == "active"
    assert campaign["targeting"]["countries"] == ["USA", "CAN"]
    assert campaign["frequency_cap"] == {"impressions": 5, "window_seconds": 86400}
    assert campaign["flight_start"] == "2026-01-01T00:00:00Z"
    assert created.headers["etag"] == '"1"'

    got = await service.client.get(f"/campaigns/{campaign['id']}")
    assert got.status_code == 200
    assert got.json() == campaign

    creatives = (await service.client.get(f"/campaigns/{campaign['id']}/creatives")).json()
    assert len(creatives["items"]) == 1
    creative = creatives["items"][0]
    assert creative["campaign_id"] == campaign["id"]
    assert creative["advertiser_id"] == advertiser_id

    patched = await service.client.patch(
        f"/campaigns/{campaign['id']}",
        json={"daily_budget_micros": 300_000_000, "targeting": {"hours": [9, 10]}},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["daily_budget_micros"] == 300_000_000
    assert patched.json()["targeting"]["hours"] == [9, 10]
    assert patched.json()["targeting"]["countries"] == ["USA", "CAN"]  # untouched sub-field
    assert patched.json()["version"] == 2

    second = await service.client.post(
        f"/campaigns/{campaign['id']}/creatives",
        json=creative_body(width=728, height=90, image_url=None, markup="<b>hi</b>"),
    )
    assert second.status_code == 201, second.text
    assert second.headers["location"] == f"/creatives/{second.json()['id']}"
    paused = await service.client.patch(f"/creatives/{creative['id']}", json={"status": "paused"})
    assert paused.status_code == 200
    assert paused.json()["version"] == 2

    # every write left one outbox row with the campaign's whole state after it
    rows = await _outbox(service)
    assert [row.campaign_version for row in rows] == [1, 2, 3, 4]
    import msgspec

    final = msgspec.json.decode(rows[-1].state, type=CampaignState)
    assert final.version == 4
    assert [c.id for c in final.creatives] == [second.json()["id"]]  # only active ones
    assert final.targeting.hours == [9, 10]

    archived = await service.client.delete(f"/campaigns/{campaign['id']}")
    assert archived.status_code == 200
    assert archived.json()["status"] == "archived"
    rows = await _outbox(service)
    assert rows[-1].deleted is True
    again = await service.client.delete(f"/campaigns/{campaign['id']}")
    assert again.status_code == 200  # archiving twice is a no-op
    assert len(await _outbox(service)) == len(rows)
    read_only = await service.client.patch(f"/campaigns/{campaign['id']}", json={"name": "New"})
    assert read_only.status_code == 409
    assert read_only.json()["error"]["code"] == "read_only"


async def test_status_lifecycle_over_http(service: Service) -> None:
    advertiser_id = await service.advertiser()
    campaign = await service.campaign(advertiser_id)
    url = f"/campaigns/{campaign['id']}/status"

    not_ready = await service.client.post(url, json={"status": "active"})
    assert not_ready.status_code == 409
    assert not_ready.json()["error"]["code"] == "campaign_not_ready"

    await service.client.post(f"/campaigns/{campaign['id']}/creatives", json=creative_body())
    for status in ("active", "paused", "active", "completed"):
        moved = await service.client.post(url, json={"status": status})
        assert moved.status_code == 200, moved.text
        assert moved.json()["status"] == status
    illegal = await service.client.post(url, json={"status": "active"})
    assert illegal.status_code == 409
    assert illegal.json()["error"]["code"] == "illegal_transition"
    assert illegal.json()["error"]["details"]["allowed"] == ["archived"]
    via_patch = await service.client.patch(
        f"/campaigns/{campaign['id']}", json={"status": "archived"}
    )
    assert via_patch.status_code == 200
    assert via_patch.json()["status"] == "archived"


async def test_identical_patch_changes_nothing(service: Service) -> None:
    advertiser_id = await service.advertiser()
    campaign = await service.campaign(advertiser_id)
    before = len(await _outbox(service))
    same = await service.client.patch(
        f"/campaigns/{campaign['id']}",
        json={"name": campaign["name"], "daily_budget_micros": campaign["daily_budget_micros"]},
    )
    assert same.status_code == 200
    assert same.json()["version"] == campaign["version"]
    assert len(await _outbox(service)) == before


async def test_duplicate_campaign_name_per_advertiser(service: Service) -> None:
    first, second = await service.advertiser("A"), await service.advertiser("B")
    await service.campaign(first, "Launch")
    duplicate = await service.client.post("/campaigns", json=campaign_body(first, "Launch"))
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["details"] == {"field": "name"}
    other = await service.client.post("/campaigns", json=campaign_body(second, "Launch"))
    assert other.status_code == 201  # unique per advertiser, not globally
    renamed = await service.campaign(first, "Other")
    clash = await service.client.patch(f"/campaigns/{renamed['id']}", json={"name": "Launch"})
    assert clash.status_code == 409


async def test_campaign_needs_an_existing_advertiser(service: Service) -> None:
    missing = await service.client.post("/campaigns", json=campaign_body(999))
    assert missing.status_code == 404
    no_owner = await service.client.post("/campaigns", json=campaign_body(None))
    assert no_owner.status_code == 422
    assert no_owner.json()["error"]["details"][0]["field"] == "advertiser_id"


async def test_creative_rules(service: Service) -> None:
    advertiser_id = await service.advertiser()
    campaign = await service.campaign(advertiser_id)
    both = await service.client.post(
        f"/campaigns/{campaign['id']}/creatives", json=creative_body(markup="<b>x</b>")
    )
    assert both.status_code == 422
    assert both.json()["error"]["details"][0]["field"] == "markup"
    created = (
        await service.client.post(f"/campaigns/{campaign['id']}/creatives", json=creative_body())
    ).json()
    switched = await service.client.patch(
        f"/creatives/{created['id']}", json={"image_url": None, "markup": "<i>ad</i>"}
    )
    assert switched.status_code == 200, switched.text
    assert switched.json()["markup"] == "<i>ad</i>"
    gone = await service.client.delete(f"/creatives/{created['id']}")
    assert gone.json()["status"] == "archived"
    frozen = await service.client.patch(f"/creatives/{created['id']}", json={"status": "active"})
    assert frozen.status_code == 409


async def test_database_rows_match_the_api(service: Service) -> None:
    advertiser_id = await service.advertiser()
    await service.campaign(
        advertiser_id, creatives=[creative_body(), creative_body(width=320, height=50)]
    )
    async with service.app.state.store.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Campaign)) == 1
        assert await session.scalar(select(func.count()).select_from(Creative)) == 2
        money = await session.scalar(select(Campaign.total_budget_micros))
    assert money == 5_000_000_000
    assert isinstance(money, int)


async def test_request_metrics_use_route_templates(service: Service) -> None:
    from adplatform.core.metrics import REGISTRY

    advertiser_id = await service.advertiser()
    campaign = await service.campaign(advertiser_id)
    labels = {"service": "campaigns", "method": "GET", "route": "/campaigns/{campaign_id}"}
    before = REGISTRY.get_sample_value("http_requests_total", {**labels, "status": "200"}) or 0
    for _ in range(3):
        await service.client.get(f"/campaigns/{campaign['id']}")
    after = REGISTRY.get_sample_value("http_requests_total", {**labels, "status": "200"})
    assert after == before + 3  # labelled by template, never by raw path or <unmatched>
    assert (
        REGISTRY.get_sample_value(
            "http_requests_total",
            {**labels, "route": f"/campaigns/{campaign['id']}", "status": "200"},
        )
        is None
    )
