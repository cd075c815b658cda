"""PostgreSQL going away is a 503 with the error body (never a 500), and the service
recovers by itself when it is back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from adplatform.migrations import upgrade
from tests.infra.postgres import PostgresServer
from tests.integration.campaigns.support import running_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    # Its own server, durable (not the fixtures' fsync=off mode): this test crashes it.
    server = PostgresServer(fast=False).start()
    yield server
    server.cleanup()


async def test_database_outage_is_503_and_recovers(own_postgres: PostgresServer) -> None:
    url = own_postgres.create_database("outage")
    await asyncio.to_thread(upgrade, url)
    async with running_service(url) as service:
        advertiser_id = await service.advertiser()
        campaign = await service.campaign(advertiser_id)
        path = f"/campaigns/{campaign['id']}"

        await asyncio.to_thread(own_postgres.kill)  # a crash: clients are not asked to leave
        try:
            for response in (
                await service.client.get(path),
                await service.client.get("/campaigns"),
                await service.client.patch(path, json={"pacing": "asap"}),
                await service.client.post("/advertisers", json={"name": "During outage"}),
            ):
                assert response.status_code == 503, response.text
                assert response.json()["error"]["code"] == "unavailable"
                assert response.headers["retry-after"] == "1"
            ready = await service.client.get("/health/ready")
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"]["ok"] is False
            assert (await service.client.get("/health/live")).status_code == 200
        finally:
            await asyncio.to_thread(own_postgres.start)

        for _ in range(50):
            if (await service.client.get("/health/ready")).status_code == 200:
                break
            await asyncio.sleep(0.2)
        assert (await service.client.get(path)).status_code == 200
        patched = await service.client.patch(path, json={"pacing": "asap"})
        assert patched.status_code == 200
        assert patched.json()["version"] == 2  # the write during the outage never happened
