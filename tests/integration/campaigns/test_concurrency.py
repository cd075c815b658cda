"""Optimistic concurrency: If-Match (412), body version (409), and no lost updates."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from sqlalchemy import select

from adplatform.campaigns.models import OutboxRow
from adplatform.core.events import CampaignState
from tests.integration.campaigns.support import Service, creative_body

pytestmark = pytest.mark.integration


async def test_stale_if_match_is_412_and_stale_version_is_409(service: Service) -> None:
    advertiser_id = await service.advertiser()
    campaign = await service.campaign(advertiser_id)
    url = f"/campaigns/{campaign['id']}"

    fresh = await service.client.patch(url, json={"pacing": "asap"}, headers={"If-Match": '"1"'})
    assert fresh.status_code == 200
    assert fresh.headers["etag"] == '"2"'

    stale_header = await service.client.patch(
        url, json={"pacing": "even"}, headers={"If-Match": '"1"'}
    )
    assert stale_header.status_code == 412
    assert stale_header.json()["error"]["code"] == "precondition_failed"
    assert stale_header.headers["etag"] == '"2"'

    stale_body = await service.client.patch(url, json={"pacing": "even", "version": 1})
    assert stale_body.status_code == 409
    assert stale_body.json()["error"]["code"] == "version_conflict"
    assert stale_body.json()["error"]["details"] == {"field": "version", "current_version": 2}

    stale_status = await service.client.post(
        f"{url}/status", json={"status": "archived"}, headers={"If-Match": '"1"'}
    )
    assert stale_status.status_code == 412
    stale_delete = await service.client.delete(url, headers={"If-Match": 'W/"1"'})
    assert stale_delete.status_code == 412

    current = (await service.client.get(url)).json()
    assert current["pacing"] == "asap"
    assert current["status"] == "draft"
    assert current["version"] == 2


async def test_concurrent_writers_with_the_same_etag_one_wins(service: Service) -> None:
    advertiser_id = await service.advertiser()
    campaign = await service.campaign(advertiser_id)
    url = f"/campaigns/{campaign['id']}"
    responses = await asyncio.gather(
        *(
            service.client.patch(
                url, json={"daily_budget_micros": 100_000_000 + i}, headers={"If-Match": '"1"'}
            )
            for i in range(8)
        )
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] + [412] * 7
    winner = next(r for r in responses if r.status_code == 200).json()
    assert (await service.client.get(url)).json()["daily_budget_micros"] == winner[
        "daily_budget_micros"
    ]


async def test_unconditional_concurrent_writes_lose_nothing(service: Service) -> None:
    advertiser_id = await service.advertiser()
    campaign = await service.campaign(advertiser_id)
    creative = (
        await service.client.post(f"/campaigns/{campaign['id']}/creatives", json=creative_body())
    ).json()
    writes = [
        service.client.patch(
            f"/campaigns/{campaign['id']}", json={"max_bid_cpm_micros": 1_000_000 + i}
        )
        for i in range(10)
    ] + [
        service.client.patch(f"/creatives/{creative['id']}", json={"name": f"v{i}"})
        for i in range(10)
    ]
    responses = await asyncio.gather(*writes)
    assert [r.status_code for r in responses] == [200] * 20
    final = (await service.client.get(f"/campaigns/{campaign['id']}")).json()
    assert final["version"] == 2 + 20  # created, creative added, then 20 writes
    assert (await service.client.get(f"/creatives/{creative['id']}")).json()["version"] == 11

    async with service.app.state.store.sessions() as session:
        rows = (await session.scalars(select(OutboxRow).order_by(OutboxRow.id))).all()
    versions = [row.campaign_version for row in rows]
    assert versions == list(range(1, 23))  # outbox id order == version order
    last = msgspec.json.decode(rows[-1].state, type=CampaignState)
    assert last.max_bid_cpm_micros == final["max_bid_cpm_micros"]
