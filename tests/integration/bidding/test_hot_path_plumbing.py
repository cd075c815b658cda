"""The bid path's cheaper plumbing on real servers: the ad-event producer without
per-message delivery reports (what `events_published_total` counts then), and the
reservation script's own Redis connection (NOSCRIPT, restarts, timeouts)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from prometheus_client import REGISTRY

from adplatform.bidding.budget import Reservation, ReserveResult, StoreUnavailable, reservation_id
from adplatform.bidding.budget_redis import RedisBudgetStore
from adplatform.core.bus import KafkaConsumer, KafkaProducer, PublishError, ensure_topics
from tests.infra.kafka import KafkaBroker
from tests.infra.redis import RedisServer

pytestmark = [pytest.mark.integration]


def _sample(name: str, topic: str) -> float:
    return REGISTRY.get_sample_value(name, {"topic": topic}) or 0.0


async def _consume_all(bootstrap: str, topic: str, expected: int) -> int:
    consumer = KafkaConsumer([bootstrap], f"g-{uuid.uuid4().hex[:8]}", [topic])
    await consumer.start()
    seen = 0
    deadline = time.monotonic() + 30
    try:
        while seen < expected and time.monotonic() < deadline:
            seen += len(await consumer.poll(1000, 0.5))
    finally:
        await consumer.close()
    return seen


async def test_bulk_counted_producer_counts_exactly_what_the_broker_acknowledged(
    kafka_broker: KafkaBroker, topic_suffix: str
) -> None:
    topic = f"bulk-{topic_suffix}"
    ensure_topics([kafka_broker.bootstrap], {topic: 3})
    producer = KafkaProducer([kafka_broker.bootstrap], linger_ms=20, per_message_reports=False)
    before = _sample("events_published_total", topic)
    for i in range(500):
        assert producer.send(topic, f"k{i % 7}", b"event %d" % i)
    await producer.publish(topic, "k", b"acknowledged")  # still waits for the broker
    assert _sample("events_published_total", topic) - before <= 501
    await producer.close()
    assert _sample("events_published_total", topic) - before == 501
    assert _sample("events_publish_failures_total", topic) == 0
    assert await _consume_all(kafka_broker.bootstrap, topic, 501) == 501


async def test_bulk_counted_producer_counts_failures_not_successes() -> None:
    topic = f"unreachable-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(["127.0.0.1:1"], delivery_timeout_ms=500, per_message_reports=False)
    for i in range(5):
        assert producer.send(topic, "k", b"lost %d" % i)
    with pytest.raises(PublishError):
        await producer.publish(topic, "k", b"also lost")
    await producer.close(timeout=3)
    assert _sample("events_publish_failures_total", topic) == 6
    assert _sample("events_published_total", topic) == 0


def _reservations(auction: str, count: int, campaign_id: int = 4242) -> list[Reservation]:
    expires = int(time.time() * 1000) + 60_000
    return [
        Reservation(
            campaign_id=campaign_id,
            rid=reservation_id(auction, str(i)),
            price=1000,
            total_budget=2500,
            daily_limit=-1,
            day=int(time.time() // 86400),
            expires_ms=expires,
        )
        for i in range(count)
    ]


async def test_script_connection_reloads_scripts_and_survives_restarts(
    redis_server: RedisServer,
) -> None:
    redis_server.command("FLUSHALL")
    store = RedisBudgetStore.connect("127.0.0.1", redis_server.port)
    assert store.pipe is not None  # single node: the reservation script's own connection
    try:
        now = int(time.time() * 1000)
        results, _ = await store.reserve_many(_reservations("a1", 3), now)
        # 2500 micros of budget: two reservations of 1000 fit, the third does not
        assert results == [ReserveResult.RESERVED, ReserveResult.RESERVED, ReserveResult.NO_BUDGET]

        redis_server.command("SCRIPT", "FLUSH")  # NOSCRIPT: loaded again, same answer
        results, _ = await store.reserve_many(_reservations("a1", 3), now)
        assert results[:2] == [ReserveResult.DUPLICATE, ReserveResult.DUPLICATE]

        redis_server.stop()
        with pytest.raises(StoreUnavailable):
            await store.reserve_many(_reservations("a2", 1), now)
        redis_server.restart()
        results, _ = await store.reserve_many(_reservations("a3", 1, campaign_id=4243), now)
        assert results == [ReserveResult.RESERVED]
    finally:
        await store.close()


async def test_script_connection_gives_up_on_a_server_that_does_not_answer(
    redis_server: RedisServer,
) -> None:
    store = RedisBudgetStore.connect("127.0.0.1", redis_server.port, timeout=0.3)
    assert store.pipe is not None
    try:
        await store.reserve_many(_reservations("t1", 1, campaign_id=4244), 0)
        # The server holds every client's commands for a second: the call must fail
        # after its timeout, not hang, and the next one gets a fresh connection.
        assert redis_server.command("CLIENT", "PAUSE", "1000", "ALL") == "OK"
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.reserve_many(_reservations("t2", 1, campaign_id=4244), 0)
        assert time.monotonic() - started < 0.9
        await asyncio.sleep(1.0)
        results, _ = await store.reserve_many(_reservations("t3", 1, campaign_id=4245), 0)
        assert results == [ReserveResult.RESERVED]
    finally:
        await store.close()
