"""Tenancy: an advertiser key sees and changes only its own resources; the rest is 404."""

from __future__ import annotations

import pytest

from tests.integration.campaigns.support import Service, campaign_body, creative_body

pytestmark = pytest.mark.integration


async def test_missing_or_wrong_key_is_401(service: Service) -> None:
    async with service.as_key("") as anonymous:
        anonymous.headers.pop("X-API-Key")
        missing = await anonymous.get("/campaigns")
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "unauthorized"
        assert "X-API-Key" in missing.headers["www-authenticate"]
    async with service.as_key("adp_not-a-real-key") as wrong:
        assert (await wrong.get("/campaigns")).status_code == 401
        assert (await wrong.post("/campaigns", json={})).status_code == 401


async def test_advertiser_sees_only_its_own(service: Service) -> None:
    mine, theirs = await service.advertiser("Mine"), await service.advertiser("Theirs")
    my_campaign = await service.campaign(mine, creatives=[creative_body()])
    their_campaign = await service.campaign(theirs, creatives=[creative_body()])
    their_creative = (
        await service.client.get(f"/campaigns/{their_campaign['id']}/creatives")
    ).json()["items"][0]
    key = await service.key_for(mine)

    async with service.as_key(key) as client:
        listed = (await client.get("/campaigns")).json()["items"]
        assert [c["id"] for c in listed] == [my_campaign["id"]]
        assert (await client.get("/campaigns", params={"advertiser_id": theirs})).json()[
            "items"
        ] == []
        assert (await client.get(f"/campaigns/{my_campaign['id']}")).status_code == 200

        other = f"/campaigns/{their_campaign['id']}"
        attempts = [
            await client.get(other),
            await client.patch(other, json={"name": "Mine now"}),
            await client.delete(other),
            await client.post(f"{other}/status", json={"status": "paused"}),
            await client.get(f"{other}/creatives"),
            await client.post(f"{other}/creatives", json=creative_body()),
            await client.get(f"/creatives/{their_creative['id']}"),
            await client.patch(f"/creatives/{their_creative['id']}", json={"status": "paused"}),
            await client.delete(f"/creatives/{their_creative['id']}"),
            await client.get(f"/advertisers/{theirs}"),
            await client.get(f"/advertisers/{theirs}/api-keys"),
            await client.post(f"/advertisers/{theirs}/api-keys"),
            await client.post("/campaigns", json=campaign_body(theirs, "Sneaky")),
        ]
        assert [r.status_code for r in attempts] == [404] * len(attempts)
        # indistinguishable from an id that does not exist
        assert (await client.get("/campaigns/999999")).json() == attempts[0].json()

        implied = await client.post("/campaigns", json=campaign_body(None, "Implied owner"))
        assert implied.status_code == 201
        assert implied.json()["advertiser_id"] == mine
        explicit = await client.post("/campaigns", json=campaign_body(mine, "Explicit owner"))
        assert explicit.status_code == 201

        assert [a["id"] for a in (await client.get("/advertisers")).json()["items"]] == [mine]
        # admin-only operations on its own advertiser
        assert (await client.post("/advertisers", json={"name": "New"})).status_code == 403
        assert (await client.post(f"/advertisers/{mine}/api-keys")).status_code == 403
        assert (await client.patch(f"/advertisers/{mine}", json={"name": "X"})).status_code == 403
        assert (await client.get(f"/advertisers/{mine}/api-keys")).status_code == 200

    # nothing of theirs changed
    after = (await service.client.get(f"/campaigns/{their_campaign['id']}")).json()
    assert after == their_campaign
    assert (await service.client.get(f"/creatives/{their_creative['id']}")).json()[
        "status"
    ] == "active"
