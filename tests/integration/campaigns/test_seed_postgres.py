"""Load data on PostgreSQL: bulk seeding, and the snapshot and API see all of it."""

from __future__ import annotations

import pytest

from adplatform.campaigns.seed import seed_database
from tests.integration.campaigns.support import INTERNAL_KEY, running_service

pytestmark = pytest.mark.integration


async def test_bulk_seed_is_served_and_in_the_snapshot(campaign_db: str) -> None:
    result = await seed_database(campaign_db, campaigns=2500, show_progress=False)
    assert result.campaigns == 2500
    async with running_service(campaign_db) as service:
        snapshot = await service.client.get(
            "/internal/snapshot", headers={"X-Internal-Key": INTERNAL_KEY}
        )
        campaigns = snapshot.json()["campaigns"]
        assert len(campaigns) == result.active_campaigns
        assert snapshot.json()["position"] == 2500  # one outbox row per campaign
        listed = await service.client.get("/campaigns", params={"status": "active", "limit": 200})
        assert len(listed.json()["items"]) == 200
        async with service.as_key(result.api_keys[0]) as advertiser:
            own = (await advertiser.get("/campaigns", params={"limit": 200})).json()["items"]
        assert len(own) == 2500 // result.advertisers
        assert {c["advertiser_id"] for c in own} == {1}
