"""The service as `adplatform dev` runs it: lifespan, consumer task, readiness."""

from __future__ import annotations

import asyncio

import httpx
from pydantic import SecretStr

from adplatform.analytics import main
from adplatform.core.bus import EventBus
from adplatform.core.config import Settings
from adplatform.core.events import AD_EVENTS_TOPIC, encode
from tests.unit.analytics.support import eventually, expected_campaigns, generate_events


def test_service_contract() -> None:
    assert main.SERVICE == "analytics"
    assert main.REQUIRED_SETTINGS == ("database_url", "kafka_brokers", "admin_api_key")


async def test_events_published_on_the_bus_become_queryable(sqlite_url: str) -> None:
    settings = Settings(
        database_url=sqlite_url, admin_api_key=SecretStr("k"), metrics_enabled=False
    )
    bus = EventBus.from_brokers([])
    app = main.create_app(settings, bus=bus)
    events = generate_events(300, campaigns=3, seed=41, start_ms=1_790_000_000_000)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://a") as http,
    ):

        async def ready() -> bool:
            return (await http.get("/health/ready")).status_code == 200

        await eventually(ready, timeout=10)
        producer = bus.producer()
        for e in events:
            producer.send(AD_EVENTS_TOPIC, str(e.campaign_id), encode(e))
        await producer.flush()
        want = expected_campaigns(events)[3]
        async with asyncio.timeout(10):
            while True:
                body = (
                    await http.get("/analytics/campaigns/3/totals", headers={"X-API-Key": "k"})
                ).json()
                if body.get("totals", {}).get("bids") == want[0]:
                    break
                await asyncio.sleep(0.05)
        assert body["totals"]["spend_micros"] == want[5]
        assert body["totals"]["clicks"] == want[3]
        health = (await http.get("/health/ready")).json()
        assert health["checks"]["consumer"]["ok"]
        assert health["checks"]["database"]["ok"]
    assert app.state.consumer.committed_events >= len({e.id for e in events if e.campaign_id == 3})
