"""The campaign-updates follower's bus mode on real Kafka: manual assignment at given
offsets (no consumer group), a poll that returns as soon as a message is there, and
`caught_up()` only once every partition has been fetched and read to its end."""

from __future__ import annotations

import asyncio
import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from adplatform.core.bus import EventBus, EventConsumer, ensure_topics
from tests.infra.kafka import KafkaBroker

pytestmark = [pytest.mark.integration]


def _produce(bootstrap: str, topic: str, values: range) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for i in values:
        producer.produce(topic, str(i).encode(), f"key-{i}".encode())
    assert producer.flush(10) == 0


def _groups(bootstrap: str) -> set[str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    listed = admin.list_consumer_groups(request_timeout=10).result()
    return {group.group_id for group in listed.valid}


async def _read(consumer: EventConsumer, count: int, timeout: float = 20.0) -> list[int]:
    values: list[int] = []
    deadline = time.monotonic() + timeout
    while len(values) < count and time.monotonic() < deadline:
        values += [int(m.value) for m in await consumer.poll(1000, 0.2)]
    return values


async def test_followers_each_read_every_partition_from_the_recorded_offsets(
    kafka_broker: KafkaBroker, topic_suffix: str
) -> None:
    bootstrap = kafka_broker.bootstrap
    topic = f"follow-{topic_suffix}"
    ensure_topics([bootstrap], {topic: 3})
    _produce(bootstrap, topic, range(30))
    bus = EventBus.from_brokers([bootstrap])
    start = await bus.end_offsets(topic)
    assert sum(start.values()) == 30
    _produce(bootstrap, topic, range(30, 45))
    name = f"follower-{topic_suffix}"
    followers = [bus.assigned_consumer(start, name=name) for _ in range(2)]
    try:
        for follower in followers:
            await follower.start()
            assert sorted(follower.assignment()) == sorted(start)
            assert not await follower.caught_up()  # nothing fetched yet
        for follower in followers:
            # every follower sees all 15 newer messages, none of the 30 older ones
            assert sorted(await _read(follower, 15)) == list(range(30, 45))
        for follower in followers:
            for _ in range(50):
                if await follower.caught_up():
                    break
                await follower.poll(10, 0.1)
            assert await follower.caught_up()
            assert sum((await follower.lag()).values()) == 0
        with pytest.raises(RuntimeError, match="no group"):
            await followers[0].commit({(topic, 0): 1})
        assert name not in _groups(bootstrap)  # no group was ever joined
        # a poll returns as soon as a message is there, not when its timeout ends
        loop = asyncio.get_running_loop()
        waiting = asyncio.create_task(followers[0].poll(1000, 10.0))
        await asyncio.sleep(0.3)
        sent = time.monotonic()
        await loop.run_in_executor(None, _produce, bootstrap, topic, range(45, 46))
        batch = await waiting
        waited = time.monotonic() - sent
        print(f"\nfollower poll returned {waited * 1000:.0f} ms after the message was acknowledged")
        assert [int(m.value) for m in batch] == [45]
        assert waited < 5.0
    finally:
        for follower in followers:
            await follower.close()


async def test_follower_takes_added_partitions_and_is_not_caught_up_without_kafka(
    kafka_broker: KafkaBroker, topic_suffix: str
) -> None:
    bootstrap = kafka_broker.bootstrap
    topic = f"follow-more-{topic_suffix}"
    ensure_topics([bootstrap], {topic: 2})
    bus = EventBus.from_brokers([bootstrap])
    follower = bus.assigned_consumer({(topic, 0): 0})
    await follower.start()
    try:
        follower.add_partitions({(topic, 1): 0})
        assert sorted(follower.assignment()) == [(topic, 0), (topic, 1)]
        _produce(bootstrap, topic, range(20))
        assert sorted(await _read(follower, 20)) == list(range(20))
    finally:
        await follower.close()

    nowhere = EventBus.from_brokers(["127.0.0.1:1"]).assigned_consumer({(topic, 0): 0})
    await nowhere.start()
    try:
        for _ in range(5):
            assert await nowhere.poll(10, 0.1) == []
        assert not await nowhere.caught_up()  # never fetched: not ready to follow
    finally:
        await nowhere.close()
