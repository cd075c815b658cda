"""The in-process bus must behave like Kafka where services rely on it."""

from __future__ import annotations

import asyncio

import pytest

from adplatform.core.bus import EventBus, InMemoryBroker, InMemoryProducer, PublishError


async def test_keyed_messages_keep_order_per_partition() -> None:
    bus = EventBus.from_brokers([])
    producer = bus.producer()
    for i in range(50):
        assert producer.send("t", f"k{i % 5}", str(i).encode())
    await producer.flush()
    consumer = bus.consumer("g", ["t"])
    await consumer.start()
    batch = await consumer.poll(1000, 0.5)
    assert len(batch) == 50
    by_key: dict[bytes | None, list[int]] = {}
    for message in batch:
        by_key.setdefault(message.key, []).append(int(message.value))
    for key, values in by_key.items():
        assert values == sorted(values), key
    assert len({m.partition for m in batch if m.key == b"k1"}) == 1


async def test_poll_wakes_up_on_new_data() -> None:
    bus = EventBus.from_brokers([])
    consumer = bus.consumer("g", ["t"])
    await consumer.start()
    producer = bus.producer()

    async def later() -> None:
        await asyncio.sleep(0.05)
        await producer.publish("t", "k", b"v")

    task = asyncio.create_task(later())
    batch = await consumer.poll(10, 2.0)
    await task
    assert [m.value for m in batch] == [b"v"]


async def test_committed_offsets_and_assign_hook() -> None:
    broker = InMemoryBroker(partitions=2)
    bus = EventBus([], memory=broker)
    producer = bus.producer()
    for i in range(10):
        await producer.publish("t", None, str(i).encode())

    first = bus.consumer("g", ["t"])
    await first.start()
    got = await first.poll(4, 0.2)
    await first.commit({(m.topic, m.partition): m.offset + 1 for m in got})
    await first.close()

    second = bus.consumer("g", ["t"])
    await second.start()
    rest = await second.poll(100, 0.2)
    assert sorted(int(m.value) for m in got + rest) == list(range(10))

    async def from_zero(tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return dict.fromkeys(tps, 0)

    replay = bus.consumer("other", ["t"], on_assign=from_zero)
    await replay.start()
    assert len(await replay.poll(100, 0.2)) == 10


async def test_group_members_split_partitions_and_rebalance() -> None:
    broker = InMemoryBroker(partitions=4)
    bus = EventBus([], memory=broker)
    revoked: list[tuple[str, int]] = []

    async def on_revoke(tps: list[tuple[str, int]]) -> None:
        revoked.extend(tps)

    a = bus.consumer("g", ["t"], on_revoke=on_revoke)
    await a.start()
    await a.poll(1, 0.01)
    assert len(a.assignment()) == 4
    b = bus.consumer("g", ["t"])
    await b.start()
    await a.poll(1, 0.01)
    await b.poll(1, 0.01)
    assert len(a.assignment()) == 2
    assert len(b.assignment()) == 2
    assert set(a.assignment()).isdisjoint(b.assignment())
    assert len(revoked) == 2
    await b.close()
    await a.poll(1, 0.01)
    assert len(a.assignment()) == 4


async def test_outage_buffers_sends_and_fails_publishes() -> None:
    broker = InMemoryBroker()
    producer = InMemoryProducer(broker, buffer_messages=3)
    broker.available = False
    assert producer.send("t", "k", b"1")
    assert producer.send("t", "k", b"2")
    assert producer.send("t", "k", b"3")
    assert not producer.send("t", "k", b"4")  # buffer full: dropped, counted
    with pytest.raises(PublishError):
        await producer.publish("t", "k", b"x")
    await asyncio.sleep(0)
    assert producer.pending() == 3
    broker.available = True
    assert await producer.flush() == 0
    assert [m.value for m in broker.messages("t")] == [b"1", b"2", b"3"]


async def test_lag_counts_unread_messages() -> None:
    bus = EventBus.from_brokers([])
    producer = bus.producer()
    for _ in range(7):
        await producer.publish("t", "same", b"x")
    consumer = bus.consumer("g", ["t"])
    await consumer.start()
    await consumer.poll(3, 0.1)
    lags = await consumer.lag()
    assert sum(lags.values()) == 4


async def test_cancelling_a_waiting_poll_is_clean() -> None:
    bus = EventBus.from_brokers([])
    consumer = bus.consumer("g", ["t"])
    await consumer.start()
    task = asyncio.create_task(consumer.poll(10, 30.0))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1.0)
    await consumer.close()
    producer = bus.producer()
    await producer.publish("t", "k", b"after")
    again = bus.consumer("g2", ["t"])
    await again.start()
    assert [m.value for m in await again.poll(10, 1.0)] == [b"after"]
