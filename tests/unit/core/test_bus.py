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


async def test_appends_wake_only_the_consumers_of_their_topic() -> None:
    """The bidder sends an event per bid to ad-events; its campaign-updates consumer
    must not be woken (and re-poll every partition) for each of them."""
    broker = InMemoryBroker()
    producer = InMemoryProducer(broker)
    updates = asyncio.create_task(broker.wait_for_data(5.0, ["campaign-updates"]))
    events = asyncio.create_task(broker.wait_for_data(5.0, ["ad-events"]))
    anything = asyncio.create_task(broker.wait_for_data(5.0))
    await asyncio.sleep(0)
    producer.send("ad-events", "1", b"bid")
    await asyncio.sleep(0.02)
    assert events.done()
    assert anything.done()
    assert not updates.done()
    await producer.publish("campaign-updates", "1", b"paused")
    await asyncio.wait_for(updates, 1.0)


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


async def test_assigned_consumer_reads_every_partition_from_the_given_offsets() -> None:
    broker = InMemoryBroker(partitions=3)
    bus = EventBus([], memory=broker)
    producer = bus.producer()
    for i in range(9):
        await producer.publish("t", f"k{i}", str(i).encode())
    start = await bus.end_offsets("t")
    for i in range(9, 15):
        await producer.publish("t", f"k{i}", str(i).encode())
    # two followers, each sees everything after `start`: no group splits the partitions
    followers = [bus.assigned_consumer(start, name="same-name") for _ in range(2)]
    for follower in followers:
        await follower.start()
        assert sorted(follower.assignment()) == [("t", 0), ("t", 1), ("t", 2)]
        assert not await follower.caught_up()
        got = await follower.poll(100, 0.2)
        assert sorted(int(m.value) for m in got) == list(range(9, 15))
        assert await follower.caught_up()
        assert sum((await follower.lag()).values()) == 0
    assert broker.generation("same-name") == 0  # nobody joined a group
    with pytest.raises(RuntimeError, match="no group"):
        await followers[0].commit({("t", 0): 1})
    await producer.publish("t", "late", b"15")
    assert not await followers[0].caught_up()
    assert [m.value for m in await followers[0].poll(10, 0.2)] == [b"15"]
    for follower in followers:
        await follower.close()


async def test_assigned_consumer_wakes_up_and_takes_more_partitions() -> None:
    broker = InMemoryBroker(partitions=2)
    bus = EventBus([], memory=broker)
    broker.create_topic("other", partitions=1)
    follower = bus.assigned_consumer({("t", 0): 0})
    await follower.start()
    assert await follower.caught_up()  # an empty partition read to its end
    producer = bus.producer()

    async def later() -> None:
        await asyncio.sleep(0.05)
        await producer.publish("other", "k", b"v")

    follower.add_partitions({("other", 0): 0})
    task = asyncio.create_task(later())
    batch = await follower.poll(10, 2.0)
    await task
    assert [(m.topic, m.value) for m in batch] == [("other", b"v")]
    with pytest.raises(ValueError, match="no partition 5"):
        follower.add_partitions({("t", 5): 0})
    with pytest.raises(ValueError, match=">= 0"):
        bus.assigned_consumer({("t", 0): -1})
    group_member = bus.consumer("g", ["t"])
    with pytest.raises(NotImplementedError):
        group_member.add_partitions({("t", 1): 0})
    await follower.close()
