"""analytics-service entry point (`adplatform serve analytics`, and inside `adplatform dev`).

The lifespan runs two background tasks: the `ad-events` consumer and the hourly
retention job. Ready means the database answers and the consumer has joined its group.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Final

from fastapi import FastAPI

from adplatform import __version__
from adplatform.analytics.consumer import AnalyticsConsumer
from adplatform.analytics.dashboard import dashboard_routes
from adplatform.analytics.queries import AnalyticsQueries
from adplatform.analytics.retention import prune_processed_ids, roll_up_minutes
from adplatform.analytics.routes import router
from adplatform.analytics.store import AggregateStore, PostgresStore, SqlStore
from adplatform.core.app import create_service_app
from adplatform.core.auth import Authenticator
from adplatform.core.bus import EventBus
from adplatform.core.config import Settings
from adplatform.core.db import check_database, create_engine, is_sqlite, session_factory
from adplatform.core.logging import get_logger

SERVICE: Final = "analytics"
REQUIRED_SETTINGS: Final = ("database_url", "kafka_brokers", "admin_api_key")
RETENTION_INTERVAL_SECONDS: Final = 3600.0
RETENTION_FIRST_RUN_SECONDS: Final = 60.0
GC_YOUNG_THRESHOLD: Final = 100_000

log = get_logger(__name__)


async def _retention_loop(app: FastAPI, settings: Settings) -> None:
    """Roll up and prune once an hour; replicas may overlap safely (see `retention`)."""
    await asyncio.sleep(RETENTION_FIRST_RUN_SECONDS)
    while True:
        try:
            await roll_up_minutes(
                app.state.engine, older_than_days=settings.analytics_minute_retention_days
            )
            await prune_processed_ids(
                app.state.engine, older_than_hours=settings.analytics_dedup_retention_hours
            )
        except Exception as exc:  # retried next hour; the data stays exact either way
            log.error("analytics_retention_failed", error=f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(RETENTION_INTERVAL_SECONDS)


def _tune_gc() -> tuple[int, int, int]:
    """Fewer young-generation collections for the consumer's allocation rate.

    Each event allocates a handful of short-lived objects (message, decoded event, row);
    with the default threshold the collector runs every 700 allocations and costs about
    a third of the consumer's CPU. Only done when consuming Kafka, i.e. in the service's
    own process (`adplatform dev` shares its process with the bidder, whose latency
    prefers the default). Returns the previous thresholds, restored at shutdown.
    """
    previous = gc.get_threshold()
    gc.freeze()  # what start-up allocated is never garbage: keep it out of every scan
    gc.set_threshold(GC_YOUNG_THRESHOLD, 50, 100)
    return previous


def create_app(settings: Settings, *, bus: EventBus | None = None) -> FastAPI:
    engine = create_engine(settings.database_url, pool_size=settings.database_pool_size)
    sessions = session_factory(engine)
    event_bus = bus or EventBus.from_brokers(settings.kafka_brokers)
    store: AggregateStore = (
        SqlStore(engine, sessions)
        if is_sqlite(engine)
        else PostgresStore(settings.database_url or "")
    )
    consumer = AnalyticsConsumer(
        event_bus,
        store,
        group=settings.analytics_consumer_group,
        topic=settings.analytics_topic,
        batch_size=settings.analytics_batch_size,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tuned = _tune_gc() if event_bus.is_kafka else None
        tasks = [
            asyncio.create_task(consumer.run(), name="analytics-consumer"),
            asyncio.create_task(_retention_loop(app, settings), name="analytics-retention"),
        ]
        try:
            yield
        finally:
            await consumer.stop()
            # Let an in-flight batch commit; cancelled anyway after 10 s (or if the
            # shutdown itself is being cancelled), which loses nothing: it is redone.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(tasks[0]), 10)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await store.close()
            await engine.dispose()
            if tuned is not None:
                gc.unfreeze()
                gc.set_threshold(*tuned)

    app = create_service_app(
        SERVICE,
        settings,
        app_class=FastAPI,
        routes=dashboard_routes(settings),
        lifespan=lifespan,
        title="adplatform analytics",
        version=__version__,
        docs_url="/analytics/docs",
        openapi_url="/analytics/openapi.json",
        redoc_url=None,
    )
    app.include_router(router)
    app.state.engine = engine
    app.state.consumer = consumer
    app.state.queries = AnalyticsQueries(engine)
    app.state.authenticator = Authenticator(settings.admin_api_key, sessions)

    async def consumer_started() -> bool:
        return consumer.started.is_set() and consumer.healthy

    app.state.readiness.add("database", lambda: check_database(engine))
    app.state.readiness.add("consumer", consumer_started)
    return app
