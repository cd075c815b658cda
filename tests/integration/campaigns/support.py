"""Helpers for campaign-service integration tests: settings, bodies, a running app."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import SecretStr

from adplatform.campaigns.main import create_app
from adplatform.campaigns.outbox import RelayConfig
from adplatform.core.bus import EventBus
from adplatform.core.config import Settings

ADMIN_KEY = "test-admin-key"
INTERNAL_KEY = "test-internal-key"


def settings(database_url: str, **overrides: Any) -> Settings:
    return Settings(
        database_url=database_url,
        admin_api_key=SecretStr(ADMIN_KEY),
        internal_api_key=SecretStr(INTERNAL_KEY),
        metrics_enabled=False,
        **overrides,
    )


def is_ready(base_url: str) -> bool:
    """Whether a started service answers its readiness probe (a `wait_for` condition)."""
    return httpx.get(f"{base_url}/health/ready", timeout=2).status_code == 200


def creative_body(**overrides: Any) -> dict[str, Any]:
    return {
        "width": 300,
        "height": 250,
        "image_url": "https://cdn.acme.example/ad.png",
        "click_url": "https://www.acme.example/landing",
        "adomain": "acme.example",
        "iab_category": "IAB17",
        **overrides,
    }


def campaign_body(
    advertiser_id: int | None, name: str = "Spring Sale", **overrides: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "total_budget_micros": 5_000_000_000,
        "daily_budget_micros": 250_000_000,
        "max_bid_cpm_micros": 3_500_000,
        "pacing": "even",
        "flight_start": "2026-01-01T00:00:00Z",
        "flight_end": "2030-01-01T00:00:00Z",
        "frequency_cap": {"impressions": 5, "window_seconds": 86400},
        "targeting": {
            "countries": ["USA", "CAN"],
            "device_types": [4, 5],
            "os": ["ios", "android"],
            "categories": ["IAB17"],
            "sizes": ["300x250"],
        },
        **overrides,
    }
    if advertiser_id is not None:
        body["advertiser_id"] = advertiser_id
    return body


@dataclass
class Service:
    app: FastAPI
    client: httpx.AsyncClient
    bus: EventBus
    database_url: str

    def as_key(self, key: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://campaigns",
            headers={"X-API-Key": key},
        )

    async def advertiser(self, name: str = "Acme") -> int:
        response = await self.client.post(
            "/advertisers", json={"name": name, "domain": "acme.example"}
        )
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    async def key_for(self, advertiser_id: int) -> str:
        response = await self.client.post(f"/advertisers/{advertiser_id}/api-keys")
        assert response.status_code == 201, response.text
        return str(response.json()["key"])

    async def campaign(
        self, advertiser_id: int, name: str = "Spring Sale", **overrides: Any
    ) -> dict[str, Any]:
        response = await self.client.post(
            "/campaigns", json=campaign_body(advertiser_id, name, **overrides)
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body


@contextlib.asynccontextmanager
async def running_service(
    database_url: str, *, bus: EventBus | None = None, relay_config: RelayConfig | None = None
) -> AsyncIterator[Service]:
    event_bus = bus or EventBus.from_brokers([])
    app = create_app(settings(database_url), bus=event_bus, relay_config=relay_config)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://campaigns",
            headers={"X-API-Key": ADMIN_KEY},
        ) as client,
    ):
        yield Service(app, client, event_bus, database_url)
