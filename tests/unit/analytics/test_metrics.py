"""The metric names and labels the monitoring rules alert on."""

from __future__ import annotations

import asyncio

from prometheus_client import generate_latest
from sqlalchemy.ext.asyncio import AsyncEngine

from adplatform.analytics.consumer import AnalyticsConsumer
from adplatform.analytics.store import SqlStore
from adplatform.core.bus import EventBus
from adplatform.core.db import session_factory
from adplatform.core.events import AD_EVENTS_TOPIC, encode
from adplatform.core.metrics import REGISTRY
from tests.unit.analytics.support import eventually, generate_events


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    value = REGISTRY.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


async def test_consuming_feeds_every_analytics_metric(engine: AsyncEngine) -> None:
    bus = EventBus.from_brokers([])
    events = generate_events(400, seed=81, duplicate_rate=0.2)
    producer = bus.producer()
    for e in events:
        producer.send(AD_EVENTS_TOPIC, str(e.campaign_id), encode(e))
    producer.send(AD_EVENTS_TOPIC, "1", b"garbage")
    await producer.flush()
    before = {
        "consumed": sample("events_consumed_total", {"topic": AD_EVENTS_TOPIC}),
        "duplicates": sample("analytics_duplicate_events_total"),
        "invalid": sample("analytics_invalid_events_total"),
        "lag_count": sample("analytics_event_lag_seconds_count"),
        "batches": sample("analytics_batch_duration_seconds_count"),
    }
    consumer = AnalyticsConsumer(bus, SqlStore(engine, session_factory(engine)), batch_size=100)
    task = asyncio.create_task(consumer.run())

    async def all_consumed() -> bool:
        consumed = sample("events_consumed_total", {"topic": AD_EVENTS_TOPIC})
        return consumed - before["consumed"] >= len(events) + 1

    await eventually(all_consumed, timeout=10)
    await consumer._report_lag(consumer._consumer)  # type: ignore[arg-type]
    await consumer.stop()
    await task
    duplicates = len(events) - len({e.id for e in events})
    assert sample("analytics_duplicate_events_total") - before["duplicates"] == duplicates
    assert sample("analytics_invalid_events_total") - before["invalid"] == 1
    assert sample("analytics_event_lag_seconds_count") > before["lag_count"]
    assert sample("analytics_batch_duration_seconds_count") > before["batches"]
    assert sample("analytics_last_commit_timestamp_seconds") > 1_700_000_000
    text = generate_latest(REGISTRY).decode()
    assert 'event_consumer_lag_messages{group="analytics",partition="0",topic="ad-events"}' in text
    for line in text.splitlines():
        if line.startswith("analytics_"):
            assert "campaign" not in line
            assert "advertiser" not in line
