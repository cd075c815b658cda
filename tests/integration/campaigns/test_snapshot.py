"""The bidder's snapshot: active campaigns only, exact outbox position, even under writes."""

from __future__ import annotations

import asyncio
import gzip
import random
from collections import defaultdict

import msgspec
import pytest
from sqlalchemy import select

from adplatform.campaigns.models import OutboxRow
from adplatform.core.events import CampaignSnapshot, CampaignState, decode_snapshot
from tests.integration.campaigns.support import INTERNAL_KEY, Service, creative_body

pytestmark = pytest.mark.integration


async def _snapshot(service: Service) -> CampaignSnapshot:
    response = await service.client.get(
        "/internal/snapshot", headers={"X-Internal-Key": INTERNAL_KEY}
    )
    assert response.status_code == 200, response.text
    return decode_snapshot(response.content)


async def test_snapshot_holds_active_campaigns_and_their_active_creatives(service: Service) -> None:
    advertiser_id = await service.advertiser()
    live = await service.campaign(
        advertiser_id,
        "Live",
        status="active",
        creatives=[creative_body(), creative_body(width=728, height=90)],
    )
    live_creatives = (await service.client.get(f"/campaigns/{live['id']}/creatives")).json()[
        "items"
    ]
    await service.client.patch(f"/creatives/{live_creatives[1]['id']}", json={"status": "paused"})
    await service.campaign(advertiser_id, "Draft")
    paused = await service.campaign(
        advertiser_id, "Paused", status="active", creatives=[creative_body()]
    )
    await service.client.post(f"/campaigns/{paused['id']}/status", json={"status": "paused"})
    gone = await service.campaign(
        advertiser_id, "Gone", status="active", creatives=[creative_body()]
    )
    await service.client.delete(f"/campaigns/{gone['id']}")

    snapshot = await _snapshot(service)
    assert [c.id for c in snapshot.campaigns] == [live["id"]]
    state = snapshot.campaigns[0]
    assert [c.id for c in state.creatives] == [live_creatives[0]["id"]]
    assert state.version == 2  # created, then one creative paused
    assert state.targeting.countries == ["USA", "CAN"]
    assert state.frequency_cap is not None
    assert state.frequency_cap.impressions == 5
    async with service.app.state.store.sessions() as session:
        newest = await session.scalar(select(OutboxRow.id).order_by(OutboxRow.id.desc()).limit(1))
    assert snapshot.position == newest


async def test_snapshot_needs_the_internal_key(service: Service) -> None:
    for headers in ({}, {"X-Internal-Key": "wrong"}, {"X-Internal-Key": ""}):
        response = await service.client.get("/internal/snapshot", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
    # the admin API key is not the internal key either
    async with service.as_key("test-admin-key") as client:
        assert (await client.get("/internal/snapshot")).status_code == 401


async def test_snapshot_can_be_gzipped(service: Service) -> None:
    advertiser_id = await service.advertiser()
    await service.campaign(advertiser_id, status="active", creatives=[creative_body()])
    response = await service.client.get(
        "/internal/snapshot",
        headers={"X-Internal-Key": INTERNAL_KEY, "Accept-Encoding": "gzip"},
    )
    assert response.headers["content-encoding"] == "gzip"
    assert len(decode_snapshot(response.content).campaigns) == 1  # httpx inflated it
    raw = await service.client.get(
        "/internal/snapshot",
        headers={"X-Internal-Key": INTERNAL_KEY, "Accept-Encoding": "identity"},
    )
    assert "content-encoding" not in raw.headers
    assert gzip.compress(raw.content)  # plain JSON body


async def test_snapshot_is_exact_at_its_position_under_concurrent_writes(service: Service) -> None:
    """Each snapshot must equal the state the outbox describes up to its position: the
    newest outbox row <= position of every campaign, active ones in, others out."""
    advertiser_id = await service.advertiser()
    ids = [
        (
            await service.campaign(
                advertiser_id, f"C{i}", status="active", creatives=[creative_body()]
            )
        )["id"]
        for i in range(6)
    ]
    rng = random.Random(7)
    stop = asyncio.Event()

    async def writer(campaign_id: int) -> None:
        while not stop.is_set():
            choice = rng.random()
            if choice < 0.5:
                await service.client.patch(
                    f"/campaigns/{campaign_id}",
                    json={"max_bid_cpm_micros": rng.randint(1, 9) * 1_000_000},
                )
            elif choice < 0.75:
                current = (await service.client.get(f"/campaigns/{campaign_id}")).json()["status"]
                target = "paused" if current == "active" else "active"
                await service.client.post(
                    f"/campaigns/{campaign_id}/status", json={"status": target}
                )
            else:
                await service.client.post(
                    f"/campaigns/{campaign_id}/creatives", json=creative_body()
                )

    writers = [asyncio.create_task(writer(i)) for i in ids]
    snapshots = []
    for _ in range(15):
        snapshots.append(await _snapshot(service))
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.gather(*writers)

    async with service.app.state.store.sessions() as session:
        rows = (await session.scalars(select(OutboxRow).order_by(OutboxRow.id))).all()
    decoded = [(row.id, msgspec.json.decode(row.state, type=CampaignState)) for row in rows]
    assert len(decoded) > 40  # the writers really ran
    positions = set()
    for snapshot in snapshots:
        positions.add(snapshot.position)
        latest: dict[int, CampaignState] = {}
        for row_id, state in decoded:
            if row_id <= snapshot.position:
                latest[state.id] = state
        expected = {cid: s for cid, s in latest.items() if s.status == "active"}
        assert {c.id: c for c in snapshot.campaigns} == expected
    assert len(positions) > 3  # snapshots were taken at many different moments

    versions: dict[int, list[int]] = defaultdict(list)
    for _, state in decoded:
        versions[state.id].append(state.version)
    for campaign_versions in versions.values():
        assert campaign_versions == sorted(set(campaign_versions))
