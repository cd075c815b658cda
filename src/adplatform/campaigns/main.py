"""campaign-service entry point: `create_app` for `adplatform serve campaigns` and `dev`."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Final

from fastapi import FastAPI
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.requests import Request
from starlette.responses import Response

from adplatform import __version__
from adplatform.campaigns.fastpath import FastReads
from adplatform.campaigns.outbox import OutboxRelay, RelayConfig
from adplatform.campaigns.routes import FastCampaignRead, router
from adplatform.campaigns.service import CampaignStore
from adplatform.core.app import create_service_app, readiness_of
from adplatform.core.auth import Authenticator
from adplatform.core.bus import EventBus
from adplatform.core.config import Settings
from adplatform.core.db import check_database, create_engine, is_sqlite
from adplatform.core.errors import error_response
from adplatform.core.logging import get_logger

SERVICE: Final = "campaigns"
REQUIRED_SETTINGS: Final = ("database_url", "admin_api_key", "internal_api_key")

log = get_logger(__name__)

DESCRIPTION = """
Advertisers, campaigns and creatives of adplatform.

* Authenticate with `X-API-Key`: the admin key manages advertisers and issues their
  keys; an advertiser key sees and changes only its own resources (anything else: 404).
* Money is integer **micros** (1 USD = 1,000,000); `max_bid_cpm_micros` is a CPM.
* Every resource has a `version` and an `ETag`. A write with a stale `If-Match` is a
  **412**; a stale `version` in the body is a **409**.
* Status: `draft → active ⇄ paused → completed`, and anything but archived `→ archived`
  (`POST /campaigns/{id}/status`, `PATCH` with `status`, or `DELETE` to archive).
* Lists are ordered by id and paged with `limit` and the opaque `next_cursor`.
"""


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("database_unavailable", path=request.url.path, error=str(exc)[:300])
    return error_response(
        503, "unavailable", "the database is unavailable; retry shortly", None, {"Retry-After": "1"}
    )


def create_app(
    settings: Settings, *, bus: EventBus | None = None, relay_config: RelayConfig | None = None
) -> FastAPI:
    """The campaign API; its lifespan runs the outbox relay."""
    engine = create_engine(settings.database_url, pool_size=settings.database_pool_size)
    fast = (
        None
        if is_sqlite(engine) or settings.database_url is None
        else FastReads(settings.database_url, max_size=settings.database_pool_size)
    )
    store = CampaignStore(engine, fast=fast)
    event_bus = bus if bus is not None else EventBus.from_brokers(settings.kafka_brokers)
    config = relay_config or RelayConfig()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        producer = (
            event_bus.producer(delivery_timeout_ms=config.delivery_timeout_ms)
            if event_bus.is_kafka
            else event_bus.producer()
        )
        relay = OutboxRelay(engine, producer, config)
        app.state.relay = relay
        store.on_outbox_commit = relay.notify
        if fast is not None:
            await fast.start()
        await relay.start()
        # Everything allocated so far (modules, schemas, routes) lives as long as the
        # process: keep it out of the collector's full passes, whose pauses would
        # otherwise show up in the latency tail.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await relay.stop()
            await producer.close()
            if fast is not None:
                await fast.close()
            await engine.dispose()

    app = create_service_app(
        SERVICE,
        settings,
        app_class=FastAPI,
        lifespan=lifespan,
        title="adplatform campaign API",
        description=DESCRIPTION,
        version=__version__,
        docs_url="/docs",
        redoc_url=None,
    )
    # Not `include_router`: FastAPI 0.163 wraps included routers in a lazy
    # `_IncludedRouter`, which core's metrics middleware cannot see into (every route
    # would be labelled `<unmatched>` and re-resolved per request). The routes need
    # nothing from the wrapper (no prefix, no router dependencies).
    app.router.routes.append(FastCampaignRead())  # before the FastAPI routes
    app.router.routes.extend(router.routes)
    app.state.engine = engine
    app.state.store = store
    app.state.authenticator = Authenticator(settings.admin_api_key, store.sessions)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(InterfaceError, _database_unavailable)
    app.add_exception_handler(ConnectionError, _database_unavailable)
    app.add_exception_handler(TimeoutError, _database_unavailable)
    if fast is not None:
        import asyncpg  # type: ignore[import-untyped]

        app.add_exception_handler(asyncpg.PostgresConnectionError, _database_unavailable)
        app.add_exception_handler(asyncpg.InterfaceError, _database_unavailable)
        app.add_exception_handler(asyncpg.CannotConnectNowError, _database_unavailable)

    async def database_ready() -> None:
        await check_database(engine)

    readiness_of(app).add("database", database_ready)
    return app
