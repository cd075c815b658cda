"""End to end: campaign-service + bidder + exchange simulator + real Kafka, Redis and
PostgreSQL + analytics-service. The spend analytics reports must equal, to the micro,
the spend the bidder settled in Redis.

The bidder always writes to `ad-events`, so this test has a Kafka broker of its own:
nothing else's events can be on that topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import SecretStr
from sqlalchemy import text
from starlette.applications import Starlette

from adplatform.core.bus import EventBus, ensure_topics
from adplatform.core.config import Environment, Settings
from adplatform.core.db import create_engine
from adplatform.core.events import AD_EVENTS_TOPIC, CAMPAIGN_UPDATES_TOPIC
from adplatform.core.server import load_service
from tests.infra.common import free_port, port_open
from tests.infra.kafka import KafkaBroker
from tests.infra.redis import RedisServer
from tests.unit.analytics.support import eventually

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ADMIN = "e2e-admin-key"


@pytest.fixture(scope="module")
def own_kafka() -> Iterator[KafkaBroker]:
    broker = KafkaBroker().start()
    yield broker
    broker.cleanup()


@contextlib.asynccontextmanager
async def serving(app: Starlette, port: int) -> AsyncIterator[None]:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())

    async def listening() -> bool:
        if task.done():
            task.result()  # startup failed: raise its error
        return port_open(port)

    await eventually(listening, timeout=30)
    try:
        yield
    finally:
        server.should_exit = True
        await task


async def settled_in_redis(redis: RedisServer, campaign_ids: list[int]) -> dict[int, int]:
    from adplatform.bidding.budget_redis import RedisBudgetStore

    store = RedisBudgetStore.connect("127.0.0.1", redis.port, cluster=False)
    day = int(time.time()) // 86_400
    try:
        return {cid: (await store.view(cid, day)).spent for cid in campaign_ids}
    finally:
        await store.close()


async def analytics_spend(client: httpx.AsyncClient, campaign_ids: list[int]) -> dict[int, int]:
    result = {}
    for cid in campaign_ids:
        response = await client.get(
            f"/analytics/campaigns/{cid}/totals", headers={"X-API-Key": ADMIN}
        )
        assert response.status_code == 200, response.text
        result[cid] = response.json()["budget"]["spent_micros"]
    return result


async def test_reported_spend_equals_the_spend_settled_in_redis(
    own_kafka: KafkaBroker, redis_clean: RedisServer, postgres_url: str
) -> None:
    from adplatform.bidding.simulator import simulate
    from adplatform.campaigns.seed import seed_database

    await seed_database(postgres_url, campaigns=30, show_progress=False)
    engine = create_engine(postgres_url)
    async with engine.connect() as connection:
        campaign_ids = [r[0] for r in await connection.execute(text("SELECT id FROM campaigns"))]
    await engine.dispose()
    assert len(campaign_ids) == 30

    ensure_topics([own_kafka.bootstrap], {AD_EVENTS_TOPIC: 6, CAMPAIGN_UPDATES_TOPIC: 6})
    ports = {name: free_port() for name in ("campaigns", "bidding", "analytics")}
    settings = Settings(
        environment=Environment.TEST,
        database_url=postgres_url,
        kafka_brokers=[own_kafka.bootstrap],
        redis_host="127.0.0.1",
        redis_port=redis_clean.port,
        admin_api_key=SecretStr(ADMIN),
        internal_api_key=SecretStr("e2e-internal-key"),
        tracking_secret=SecretStr("e2e-tracking-secret-0123456789abcdef"),
        campaign_service_url=f"http://127.0.0.1:{ports['campaigns']}",
        public_bidding_url=f"http://127.0.0.1:{ports['bidding']}",
        metrics_enabled=False,
    )
    apps: dict[str, Any] = {
        name: load_service(name).create_app(
            settings.model_copy(update={"http_port": port}),
            bus=EventBus.from_brokers(settings.kafka_brokers),
        )
        for name, port in ports.items()
    }
    bidder_url = f"http://127.0.0.1:{ports['bidding']}"
    async with (
        serving(apps["campaigns"], ports["campaigns"]),
        serving(apps["analytics"], ports["analytics"]),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['analytics']}") as analytics,
    ):
        async with serving(apps["bidding"], ports["bidding"]), httpx.AsyncClient() as http:

            async def bidder_ready() -> bool:
                return (await http.get(f"{bidder_url}/health/ready")).status_code == 200

            await eventually(bidder_ready, timeout=60, interval=0.2)
            stats = await simulate(
                bidder_url, rate=150, duration=12, concurrency=16, show_progress=False, seed=7
            )
        # The bidder has shut down: its producer flushed every event to Kafka.
        assert stats.bids > 100, stats.describe()
        assert stats.wins > 20, stats.describe()
        assert stats.errors == 0, stats.describe()

        redis_spend = await settled_in_redis(redis_clean, campaign_ids)
        total = sum(redis_spend.values())
        assert total > 0

        end = await EventBus.from_brokers(settings.kafka_brokers).end_offsets(AD_EVENTS_TOPIC)

        async def caught_up() -> bool:
            return sum((await analytics_spend(analytics, campaign_ids)).values()) >= total and (
                apps["analytics"].state.consumer.positions
                and sum(apps["analytics"].state.consumer.positions.values()) >= sum(end.values())
            )

        await eventually(caught_up, timeout=60, interval=0.5)
        reported = await analytics_spend(analytics, campaign_ids)
    assert reported == redis_spend
    assert sum(reported.values()) == total
    assert sum(1 for v in reported.values() if v) >= 3  # spend spread over campaigns
