"""Campaigns, snapshots, bid requests and a running bidder, for the bidding tests."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adplatform.bidding.main import Bidder, create_app
from adplatform.core.bus import EventBus
from adplatform.core.config import Settings
from adplatform.core.events import (
    CampaignSnapshot,
    CampaignState,
    CreativeState,
    FrequencyCap,
    Targeting,
    encode,
)
from adplatform.core.metrics import REGISTRY
from tests.infra.common import free_port

INTERNAL_KEY = "test-internal-key"
TRACKING_SECRET = "test-tracking-secret"
_next_id = [1000]


def new_id() -> int:
    _next_id[0] += 1
    return _next_id[0]


def creative(
    creative_id: int | None = None,
    *,
    w: int = 300,
    h: int = 250,
    adomain: str = "brand.example",
    category: str | None = None,
    click_url: str = "https://brand.example/landing",
    status: str = "active",
) -> CreativeState:
    return CreativeState(
        id=creative_id or new_id(),
        w=w,
        h=h,
        click_url=click_url,
        adomain=adomain,
        image_url="https://cdn.brand.example/banner.png",
        iab_category=category,
        status=status,
    )


def campaign(
    campaign_id: int | None = None,
    *,
    advertiser_id: int = 1,
    version: int = 1,
    status: str = "active",
    total: int = 100_000_000,
    daily: int = 0,
    cpm: int = 2_000_000,
    pacing: str = "asap",
    targeting: Targeting | None = None,
    creatives: list[CreativeState] | None = None,
    cap: FrequencyCap | None = None,
    flight_start: datetime | None = None,
    flight_end: datetime | None = None,
    **targeting_fields: Any,
) -> CampaignState:
    if targeting is None:
        targeting = Targeting(**targeting_fields)
    return CampaignState(
        id=campaign_id or new_id(),
        advertiser_id=advertiser_id,
        version=version,
        name="test campaign",
        status=status,
        total_budget_micros=total,
        daily_budget_micros=daily,
        max_bid_cpm_micros=cpm,
        pacing=pacing,
        flight_start=flight_start,
        flight_end=flight_end,
        frequency_cap=cap,
        targeting=targeting,
        creatives=creatives if creatives is not None else [creative()],
    )


def snapshot(campaigns: list[CampaignState], position: int = 0) -> CampaignSnapshot:
    return CampaignSnapshot(position=position, generated_at=datetime.now(UTC), campaigns=campaigns)


def bid_request(
    *,
    imps: list[dict[str, Any]] | None = None,
    country: str | None = "USA",
    **fields: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "imp": imps or [{"id": "1", "banner": {"w": 300, "h": 250}}],
        "site": {"domain": "news.example.com", "cat": ["IAB1"]},
        "device": {"devicetype": 2, "os": "Windows"},
        "user": {"id": uuid.uuid4().hex},
    }
    if country is not None:
        body["device"]["geo"] = {"country": country}
    if "app" in fields:
        del body["site"]  # a request is from a site or an app, not both
    body.update(fields)
    return body


class SnapshotServer:
    """A stand-in campaign-service: `GET /internal/snapshot` with the internal key."""

    def __init__(self, snapshot: CampaignSnapshot, key: str = INTERNAL_KEY) -> None:
        self.snapshot = snapshot
        self.key = key
        self.failures = 0
        """Answer this many requests with 503 first (retry tests)."""
        self.requests = 0
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def _handle(self, request: Request) -> Response:
        self.requests += 1
        if request.headers.get("x-internal-key") != self.key:
            return Response(status_code=401)
        if self.failures > 0:
            self.failures -= 1
            return Response(status_code=503)
        return Response(encode(self.snapshot), media_type="application/json")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> SnapshotServer:
        app = Starlette(routes=[Route("/internal/snapshot", self._handle)])
        for _ in range(5):
            self.port = free_port()
            config = uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                loop="none",
                lifespan="off",
                log_level="warning",
                log_config=None,
            )
            self._server = uvicorn.Server(config)
            self._task = asyncio.create_task(self._server.serve())
            for _ in range(100):
                if self._server.started or self._task.done():
                    break
                await asyncio.sleep(0.02)
            if self._server.started:
                return self
        raise RuntimeError("snapshot server did not start")

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task


def bidder_settings(snapshot_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "metrics_enabled": False,
        "campaign_service_url": snapshot_url,
        "internal_api_key": INTERNAL_KEY,
        "tracking_secret": TRACKING_SECRET,
        "public_bidding_url": "http://bidder.test",
        "bid_timeout_ms": 1000,
        "bid_safety_margin_ms": 5,
        **overrides,
    }
    return Settings(**values)


class RunningBidder:
    """A bidder app with its lifespan running, and an HTTP client on it."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bidder.test"
        )

    @property
    def bidder(self) -> Bidder:
        bidder: Bidder = self.app.state.bidder
        return bidder

    async def wait_ready(self, timeout: float = 20.0) -> None:
        await asyncio.wait_for(self.bidder.feed.loaded.wait(), timeout)

    async def bid(self, body: dict[str, Any] | bytes) -> httpx.Response:
        content = body if isinstance(body, bytes) else msgspec.json.encode(body)
        return await self.client.post(
            "/openrtb2/bid", content=content, headers={"content-type": "application/json"}
        )

    async def notice(self, url: str) -> httpx.Response:
        return await self.client.get(url)


@contextlib.asynccontextmanager
async def running_bidder(
    settings: Settings, *, bus: EventBus | None = None, wait: bool = True
) -> AsyncIterator[RunningBidder]:
    app = create_app(settings, bus=bus or EventBus.from_brokers([]))
    async with app.router.lifespan_context(app):
        running = RunningBidder(app)
        try:
            if wait:
                await running.wait_ready()
            yield running
        finally:
            await running.client.aclose()


def bids_of(response: httpx.Response) -> list[dict[str, Any]]:
    if response.status_code != 200:
        return []
    return [bid for seat in response.json()["seatbid"] for bid in seat["bid"]]


def metric(name: str, **labels: str) -> float:
    """A sample of this process's registry (0 when the series does not exist yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0
