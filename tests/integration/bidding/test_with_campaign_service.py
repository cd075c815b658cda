"""The bidder against the real campaign-service (PostgreSQL, outbox relay, Kafka):
the snapshot loads over HTTP, and a campaign paused through the API stops winning
bids within a second, end to end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import SecretStr

from adplatform.core.bus import EventBus, ensure_topics
from adplatform.core.config import Settings
from adplatform.core.events import AD_EVENTS_TOPIC, CAMPAIGN_UPDATES_TOPIC
from adplatform.migrations import upgrade
from tests.infra.common import free_port
from tests.infra.kafka import KafkaBroker
from tests.infra.redis import RedisServer
from tests.unit.bidding.factories import (
    INTERNAL_KEY,
    bid_request,
    bidder_settings,
    bids_of,
    running_bidder,
)

campaigns_main = pytest.importorskip("adplatform.campaigns.main")
outbox = pytest.importorskip("adplatform.campaigns.outbox")

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ADMIN_KEY = "bidding-test-admin-key"


@pytest.fixture
async def campaign_service(postgres_url: str, kafka_broker: KafkaBroker) -> AsyncIterator[str]:
    """campaign-service served over HTTP on a free port (the bidder fetches a URL)."""
    await asyncio.to_thread(upgrade, postgres_url)
    await asyncio.to_thread(
        ensure_topics, [kafka_broker.bootstrap], {CAMPAIGN_UPDATES_TOPIC: 6, AD_EVENTS_TOPIC: 6}
    )
    settings = Settings(
        database_url=postgres_url,
        admin_api_key=SecretStr(ADMIN_KEY),
        internal_api_key=SecretStr(INTERNAL_KEY),
        kafka_brokers=[kafka_broker.bootstrap],
        metrics_enabled=False,
    )
    app = campaigns_main.create_app(
        settings,
        bus=EventBus.from_brokers([kafka_broker.bootstrap]),
        relay_config=outbox.RelayConfig(poll_interval=0.1),
    )
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(300):
        if server.started or task.done():
            break
        await asyncio.sleep(0.05)
    assert server.started, "campaign-service did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


def campaign_body(advertiser_id: int, name: str) -> dict[str, Any]:
    return {
        "advertiser_id": advertiser_id,
        "name": name,
        "status": "active",
        "total_budget_micros": 5_000_000_000,
        "daily_budget_micros": 250_000_000,
        "max_bid_cpm_micros": 4_250_000,
        "pacing": "asap",
        "flight_start": "2026-01-01T00:00:00Z",
        "flight_end": "2035-01-01T00:00:00Z",
        "targeting": {"countries": ["USA"], "sizes": ["300x600"]},
        "creatives": [
            {
                "width": 300,
                "height": 600,
                "image_url": "https://cdn.acme.example/tall.png",
                "click_url": "https://www.acme.example/landing",
                "adomain": "acme.example",
                "iab_category": "IAB17",
            }
        ],
    }


async def test_snapshot_and_updates_from_the_real_campaign_service(
    campaign_service: str, redis_clean: RedisServer, kafka_broker: KafkaBroker
) -> None:
    api = httpx.AsyncClient(base_url=campaign_service, headers={"X-API-Key": ADMIN_KEY}, timeout=10)
    async with api:
        created = await api.post("/advertisers", json={"name": "Acme", "domain": "acme.example"})
        assert created.status_code == 201, created.text
        advertiser_id = created.json()["id"]
        response = await api.post("/campaigns", json=campaign_body(advertiser_id, "Tall banner"))
        assert response.status_code == 201, response.text
        campaign_id = response.json()["id"]

        settings = bidder_settings(
            campaign_service,
            redis_host="127.0.0.1",
            redis_port=redis_clean.port,
            kafka_brokers=[kafka_broker.bootstrap],
        )
        size = [{"id": "1", "banner": {"w": 300, "h": 600}}]
        bus = EventBus.from_brokers([kafka_broker.bootstrap])
        async with running_bidder(settings, bus=bus) as bidder:
            (bid,) = bids_of(await bidder.bid(bid_request(imps=size)))
            assert bid["cid"] == str(campaign_id)
            assert bid["price"] == 4.25
            assert bid["adomain"] == ["acme.example"]
            assert bids_of(await bidder.bid(bid_request(imps=size, country="CAN"))) == []

            paused_at = time.monotonic()
            paused = await api.post(f"/campaigns/{campaign_id}/status", json={"status": "paused"})
            assert paused.status_code == 200, paused.text
            stopped_after = None
            while time.monotonic() - paused_at < 5:
                if not bids_of(await bidder.bid(bid_request(imps=size))):
                    stopped_after = time.monotonic() - paused_at
                    break
                await asyncio.sleep(0.01)
            print(f"\npaused through the API: no more bids {stopped_after} s later")
            assert stopped_after is not None
            assert stopped_after < 1.0

            resumed = await api.post(f"/campaigns/{campaign_id}/status", json={"status": "active"})
            assert resumed.status_code == 200, resumed.text
            for _ in range(100):
                if bids_of(await bidder.bid(bid_request(imps=size))):
                    break
                await asyncio.sleep(0.05)
            assert bids_of(await bidder.bid(bid_request(imps=size)))
