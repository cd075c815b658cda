"""bidding-service entry point: `adplatform serve bidding`, and part of `adplatform dev`.

Production needs Redis (budgets and frequency caps), Kafka (campaign updates in, ad
events out), the tracking secret and the internal key for the snapshot. With
`REDIS_HOST` unset the in-process budget store is used (dev mode only: it is one
process's memory, so replicas would not share budgets).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import secrets
import time
from collections.abc import AsyncIterator
from typing import Final
from urllib.parse import urlsplit

from starlette.applications import Starlette

from adplatform.bidding import metrics
from adplatform.bidding.auction import Auction, StoreHealth
from adplatform.bidding.budget import BudgetStore, MemoryBudgetStore, ReservationBatcher
from adplatform.bidding.freshness import CampaignFeed
from adplatform.bidding.index import TargetingIndex
from adplatform.bidding.notices import Notices
from adplatform.bidding.routes import BidderApp, BidEndpoint, fault_routes, tracking_routes
from adplatform.bidding.tracking import Tracker
from adplatform.core.app import create_service_app
from adplatform.core.bus import EventBus
from adplatform.core.config import MissingSettingError, Settings
from adplatform.core.logging import get_logger

log = get_logger(__name__)

SERVICE: Final = "bidding"
REQUIRED_SETTINGS: Final = ("redis_host", "kafka_brokers", "tracking_secret", "internal_api_key")

SWEEP_INTERVAL: Final = 5.0
EVENT_LINGER_MS: Final = 50
"""Ad events wait up to this long to go out in bigger batches: at bid rates the
producer's per-batch work (its threads share the bidder's core) is what costs, and
analytics does not need them sooner."""
HEALTH_INTERVAL: Final = 1.0
GC_YOUNG_THRESHOLD: Final = 50_000
"""Allocations between young-generation collections in production. A bid request
allocates a few hundred short-lived objects; at the default 700 the collector ran
every couple of requests and re-scanned the in-flight ones each time (~4% of the
bidder's CPU). Objects that die young are freed by reference counting anyway, so a
rarer collection scans about as many live objects as a frequent one: one scan of
the in-flight set (well under a millisecond) every few hundred requests."""


def build_store(settings: Settings) -> BudgetStore:
    if not settings.redis_host:
        return MemoryBudgetStore()
    from adplatform.bidding.budget_redis import RedisBudgetStore

    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    return RedisBudgetStore.connect(
        settings.redis_host,
        settings.redis_port,
        cluster=settings.redis_cluster,
        password=password,
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout_ms=settings.redis_wait_timeout_ms,
    )


def _tracking_secret(settings: Settings) -> bytes:
    if settings.tracking_secret is not None and settings.tracking_secret.get_secret_value():
        return settings.tracking_secret.get_secret_value().encode()
    log.warning("tracking_secret_generated", reason="TRACKING_SECRET unset; URLs are per process")
    return secrets.token_bytes(32)


def _count_expired(count: int) -> None:
    metrics.BID_RESERVATIONS_EXPIRED.inc(count)


class Bidder:
    """The bidder's parts, wired once per app."""

    def __init__(self, settings: Settings, bus: EventBus, store: BudgetStore) -> None:
        self.settings = settings
        self.bus = bus
        self.store = store
        self.index = TargetingIndex()
        self.health = StoreHealth()
        self.batcher = ReservationBatcher(store)
        self.batcher.on_released = _count_expired
        self.tracker = Tracker(
            _tracking_secret(settings),
            settings.public_bidding_url,
            settings.tracking_url_ttl_seconds,
        )
        self.auction = Auction(
            index=self.index,
            batcher=self.batcher,
            health=self.health,
            tracker=self.tracker,
            timeout_ms=settings.bid_timeout_ms,
            safety_margin_ms=settings.bid_safety_margin_ms,
            reservation_timeout_s=settings.bid_reservation_timeout_seconds,
            pacing_ahead_s=settings.bid_pacing_ahead_seconds,
            currency_rates=settings.bid_currency_rates,
        )
        self.notices = Notices(tracker=self.tracker, store=store, index=self.index)
        self.feed = CampaignFeed(
            self.index,
            bus,
            campaign_service_url=settings.campaign_service_url,
            internal_api_key=(
                settings.internal_api_key.get_secret_value() if settings.internal_api_key else None
            ),
        )
        self.endpoint = BidEndpoint(self.auction, ready=self.feed.loaded)
        self.sweep_interval = SWEEP_INTERVAL

    async def sweep_forever(self) -> None:
        """Release expired reservations of campaigns that went quiet.

        A campaign that keeps bidding is swept by its own reservation calls (every
        script releases its campaign's expired reservations first); this catches the
        ones that stopped, once all their reservations have expired.
        """
        timeout = self.settings.bid_reservation_timeout_seconds
        while True:
            await asyncio.sleep(self.sweep_interval)
            mono = time.monotonic()
            recent = self.auction.recent
            horizon = timeout + self.sweep_interval
            quiet = [c for c, t in recent.items() if mono - t > horizon]
            if not quiet:
                continue
            try:
                released = await self.store.release_expired(quiet, int(time.time() * 1000))
            except Exception as exc:
                log.warning("sweep_failed", error=str(exc)[:300])
                continue
            for campaign_id in quiet:
                if recent.get(campaign_id, mono) <= mono - horizon:
                    del recent[campaign_id]
            if released:
                metrics.BID_RESERVATIONS_EXPIRED.inc(released)

    async def watch_store(self) -> None:
        """Keep `bidder_budget_store_up` and the bid path's view of the store current."""
        while True:
            try:
                await asyncio.wait_for(self.store.ping(), 2.0)
            except Exception as exc:
                self.health.failed(exc)
            else:
                self.health.ok()
            await asyncio.sleep(HEALTH_INTERVAL)

    async def snapshot_ready(self) -> bool:
        if not self.feed.loaded.is_set():
            raise RuntimeError(
                "campaign snapshot not loaded, or campaign-updates not caught up, yet"
            )
        return True

    async def store_ready(self) -> bool:
        await self.store.ping()
        return True


def check_public_url(settings: Settings) -> None:
    """Staging and production must hand out tracking URLs an exchange can reach: with
    the loopback default no win notice would arrive, so no spend would be settled."""
    host = urlsplit(settings.public_bidding_url).hostname or ""
    if settings.is_production_like and (host in ("localhost", "") or _is_loopback(host)):
        raise MissingSettingError(
            f"{SERVICE} needs PUBLIC_BIDDING_URL: the public base of its tracking URLs "
            f"(now {settings.public_bidding_url!r}, which no exchange or browser can reach)"
        )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(settings: Settings, *, bus: EventBus | None = None) -> Starlette:
    check_public_url(settings)
    bus = bus if bus is not None else EventBus.from_brokers(settings.kafka_brokers)
    bidder = Bidder(settings, bus, build_store(settings))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Fire-and-forget: no Python callback per delivered event (failures are still
        # reported one by one; `events_published_total` is counted in bulk).
        producer = bus.producer(linger_ms=EVENT_LINGER_MS, per_message_reports=False)
        # Only in the service's own process (production): `adplatform dev` shares its
        # process, and its collector, with the other services.
        previous_gc = gc.get_threshold()
        if bus.is_kafka:
            gc.set_threshold(GC_YOUNG_THRESHOLD, *previous_gc[1:])
        bidder.auction.producer = producer
        bidder.notices.producer = producer
        feed = asyncio.create_task(bidder.feed.run(), name="bidder-feed")
        tasks = [
            asyncio.create_task(bidder.sweep_forever(), name="bidder-sweeper"),
            asyncio.create_task(bidder.watch_store(), name="bidder-store-health"),
        ]
        try:
            yield
        finally:
            bidder.feed.stop()
            if bidder.feed.following:  # let it leave its poll, then close the follower
                await asyncio.wait({feed}, timeout=5.0)
            for task in (feed, *tasks):
                task.cancel()
            await asyncio.gather(feed, *tasks, return_exceptions=True)
            await bidder.batcher.drain()
            await producer.close()
            await bidder.store.close()
            gc.set_threshold(*previous_gc)

    app = create_service_app(
        SERVICE,
        settings,
        app_class=BidderApp,
        routes=[
            *tracking_routes(bidder.notices),
            *fault_routes(bidder.endpoint, settings),
        ],
        lifespan=lifespan,
        probe_aliases=True,
    )
    app.bid_endpoint = bidder.endpoint
    app.state.bidder = bidder
    app.state.readiness.add("snapshot", bidder.snapshot_ready)
    app.state.readiness.add("budget_store", bidder.store_ready)
    return app
