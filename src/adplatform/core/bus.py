"""The event bus: one interface, a Kafka adapter and an in-process adapter.

Producers have two ways to send, because the platform has two kinds of writers:

- `send()` never blocks and never raises: the bidder's hot path hands an event to a
  bounded buffer and moves on. If the buffer is full the event is dropped, counted in
  `events_dropped_total` and logged. A broker outage shorter than the delivery timeout
  loses nothing: the buffer holds the events and they go out when it is back.
- `publish()` waits for the broker's acknowledgement: the outbox relay marks a row
  sent only once Kafka has it.

Consumers poll batches and do their own offset management when they need exactly-once
(analytics stores offsets in its database): the `on_assign` hook returns the offset
to start each newly assigned partition at, and `commit_advisory` mirrors the stored
offsets into the group without waiting, for tools that read lag from Kafka.

A reader that must see *every* partition from a known position (each bidder replica
follows all of `campaign-updates`) takes `EventBus.assigned_consumer(offsets)` instead:
manual assignment at exactly those offsets, no consumer group (no join, no rebalance,
nothing committed), `poll` returning as soon as a message is there, and `caught_up()`
saying when it has fetched every partition and read it to the end.

The in-process adapter keeps the same semantics (partitions by key, offsets, consumer
groups, bounded buffer) so `adplatform dev` and unit tests run the same service code.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from adplatform.core.logging import get_logger
from adplatform.core.metrics import (
    CONSUMER_LAG,
    EVENTS_DROPPED,
    EVENTS_PUBLISH_FAILURES,
    EVENTS_PUBLISHED,
)

log = get_logger(__name__)

TopicPartition = tuple[str, int]
AssignHook = Callable[[list[TopicPartition]], Awaitable[dict[TopicPartition, int]]]
"""Called with newly assigned partitions; returns where to start reading each one
(partitions it leaves out start at the group's committed offset, else `start`)."""
RevokeHook = Callable[[list[TopicPartition]], Awaitable[None]]

DEFAULT_PARTITIONS: Final = 6
DEFAULT_BUFFER_MESSAGES: Final = 500_000


class PublishError(RuntimeError):
    """The broker did not acknowledge a message within the delivery timeout."""


class Message(NamedTuple):
    """One consumed record, immutable. A named tuple rather than a frozen dataclass:
    a consumer builds hundreds of thousands a second, and a tuple is several times
    cheaper to make (the analytics consumer's throughput depends on it)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int


class EventProducer(ABC):
    @abstractmethod
    def send(self, topic: str, key: str | bytes | None, value: bytes) -> bool:
        """Queue a message without blocking; False if the buffer was full (dropped)."""

    @abstractmethod
    async def publish(self, topic: str, key: str | bytes | None, value: bytes) -> None:
        """Send and wait until the broker acknowledges it; raises `PublishError`."""

    async def publish_many(self, messages: Sequence[tuple[str, str | bytes | None, bytes]]) -> None:
        """Publish in order and wait for all; the first failure raises `PublishError`."""
        await asyncio.gather(*(self.publish(t, k, v) for t, k, v in messages))

    @abstractmethod
    async def flush(self, timeout: float = 10.0) -> int:
        """Wait for queued messages; returns how many are still undelivered."""

    @abstractmethod
    def pending(self) -> int:
        """Messages queued and not yet acknowledged."""

    @abstractmethod
    async def check(self) -> None:
        """Raise unless the broker is reachable (for readiness)."""

    @abstractmethod
    async def close(self, timeout: float = 10.0) -> None: ...


class EventConsumer(ABC):
    @abstractmethod
    async def start(self) -> None:
        """Join the group and subscribe."""

    @abstractmethod
    async def poll(self, max_messages: int = 1000, timeout: float = 0.5) -> list[Message]:
        """Up to `max_messages` messages; an empty list after `timeout` seconds."""

    @abstractmethod
    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Store the group's position (the next offset to read) for these partitions."""

    def commit_advisory(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Tell the group these positions without waiting for it; never raises.

        For a consumer whose offsets of record live elsewhere (analytics keeps them in
        its database and starts from there on assignment): the group's committed
        offsets then follow, for tools that read a group's lag from Kafka (KEDA's
        Kafka trigger, kafka-consumer-groups). A lost or rejected commit (a rebalance
        under way) is logged and superseded by the next one."""
        return  # an adapter without a group view has nothing to tell

    @abstractmethod
    def assignment(self) -> list[TopicPartition]: ...

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Read an assigned partition from `offset` on (a consumer that stores its own
        offsets rewinds to them after a failed commit)."""
        raise NotImplementedError(f"{type(self).__name__} cannot seek")

    @abstractmethod
    async def lag(self) -> dict[TopicPartition, int]:
        """Messages between this consumer's position and each assigned partition's end."""

    async def caught_up(self) -> bool:
        """True once every assigned partition has been read to its end.

        Assigned consumers answer from their own positions and what their fetches
        reported (a partition not fetched from yet is not caught up); the default is
        `lag()`'s view, which is only as precise as the adapter's positions.
        """
        return all(value <= 0 for value in (await self.lag()).values())

    def add_partitions(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Also read these partitions, from these offsets (assigned consumers only: a
        group consumer gets its partitions from the group)."""
        raise NotImplementedError(f"{type(self).__name__} has its partitions from a group")

    @abstractmethod
    async def close(self) -> None: ...

    _lag_closed = False
    """Set on close: the lag series it reported are then taken over by the next reporter."""

    async def report_lag(self, group: str) -> dict[TopicPartition, int]:
        lags = await self.lag()
        for (topic, partition), value in lags.items():
            CONSUMER_LAG.labels(group, topic, str(partition)).set(value)
            _lag_owners[(group, topic, partition)] = self
        # A partition a rebalance (or a rebuilt consumer) moved away would keep its last
        # value for good: counted twice in the group's lag, and "unconsumed data" to the
        # alerts on an idle platform. Drop the series this consumer, or a closed one,
        # reported and that this consumer does not own now.
        for key, owner in list(_lag_owners.items()):
            if key[0] == group and key[1:] not in lags and (owner is self or owner._lag_closed):
                CONSUMER_LAG.remove(group, key[1], str(key[2]))
                del _lag_owners[key]
        return lags


_lag_owners: dict[tuple[str, str, int], EventConsumer] = {}
"""The consumer of this process that last reported each (group, topic, partition) lag."""


def _key_bytes(key: str | bytes | None) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    return key.encode()


# ----------------------------------------------------------------------- in-process


@dataclass
class _Partition:
    messages: list[Message] = field(default_factory=list)


@dataclass
class _Group:
    members: list[InMemoryConsumer] = field(default_factory=list)
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    generation: int = 0


class InMemoryBroker:
    """A Kafka-shaped log in memory: topics of partitions, keyed partitioning, groups."""

    def __init__(self, partitions: int = DEFAULT_PARTITIONS) -> None:
        self.default_partitions = partitions
        self._topics: dict[str, list[_Partition]] = {}
        self._groups: dict[str, _Group] = {}
        self._waiters: dict[asyncio.Future[None], frozenset[str] | None] = {}
        """Consumers sleeping in `poll`, with the topics they read (None: any)."""
        self.available = True
        """Tests flip this to simulate an outage: sends queue, publishes fail."""

    def create_topic(self, topic: str, partitions: int | None = None) -> None:
        if topic not in self._topics:
            count = partitions or self.default_partitions
            self._topics[topic] = [_Partition() for _ in range(count)]

    def partitions_of(self, topic: str) -> int:
        self.create_topic(topic)
        return len(self._topics[topic])

    def append(self, topic: str, key: bytes | None, value: bytes) -> Message:
        self.create_topic(topic)
        partitions = self._topics[topic]
        if key is None:
            index = sum(len(p.messages) for p in partitions) % len(partitions)
        else:
            index = zlib.crc32(key) % len(partitions)
        part = partitions[index]
        message = Message(topic, index, len(part.messages), key, value, int(time.time() * 1000))
        part.messages.append(message)
        return message

    def wake(self, topics: Collection[str] | None = None) -> None:
        """Wake the consumers waiting in `poll` that read any of `topics` (new data),
        or all of them (None: a group change). Only those: the bidder appends an event
        per bid, and its campaign-updates consumer has nothing to do with them."""
        woken = [
            waiter
            for waiter, wanted in self._waiters.items()
            if topics is None or wanted is None or not wanted.isdisjoint(topics)
        ]
        for waiter in woken:
            del self._waiters[waiter]
            if not waiter.done():
                waiter.set_result(None)

    async def notify(self, topics: Collection[str] | None = None) -> None:
        self.wake(topics)

    async def wait_for_data(self, timeout: float, topics: Iterable[str] | None = None) -> None:
        """Sleep until `wake()` for one of `topics` (None: any) or `timeout`; a plain
        future, so cancelling is clean."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[waiter] = None if topics is None else frozenset(topics)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, timeout)
        finally:
            self._waiters.pop(waiter, None)

    def read(self, tp: TopicPartition, offset: int, limit: int) -> list[Message]:
        topic, partition = tp
        self.create_topic(topic)
        return self._topics[topic][partition].messages[offset : offset + limit]

    def end_offset(self, tp: TopicPartition) -> int:
        topic, partition = tp
        self.create_topic(topic)
        return len(self._topics[topic][partition].messages)

    def messages(self, topic: str) -> list[Message]:
        """Every message of a topic, partition by partition (for tests and tools)."""
        self.create_topic(topic)
        return [m for p in self._topics[topic] for m in p.messages]

    # group membership: partitions are dealt round-robin over the members
    def _group(self, group_id: str) -> _Group:
        return self._groups.setdefault(group_id, _Group())

    def join(self, group_id: str, member: InMemoryConsumer) -> None:
        group = self._group(group_id)
        group.members.append(member)
        group.generation += 1
        self.wake()

    def leave(self, group_id: str, member: InMemoryConsumer) -> None:
        group = self._group(group_id)
        if member in group.members:
            group.members.remove(member)
            group.generation += 1
            self.wake()

    def generation(self, group_id: str) -> int:
        return self._group(group_id).generation

    def assignment_for(self, group_id: str, member: InMemoryConsumer) -> list[TopicPartition]:
        group = self._group(group_id)
        all_tps = [
            (topic, p) for topic in sorted(member.topics) for p in range(self.partitions_of(topic))
        ]
        index = group.members.index(member)
        return all_tps[index :: len(group.members)]

    def committed(self, group_id: str, tp: TopicPartition) -> int | None:
        return self._group(group_id).committed.get(tp)

    def commit(self, group_id: str, offsets: dict[TopicPartition, int]) -> None:
        self._group(group_id).committed.update(offsets)


class InMemoryProducer(EventProducer):
    """Producer on an `InMemoryBroker`; a bounded buffer absorbs `available=False`."""

    def __init__(self, broker: InMemoryBroker, buffer_messages: int = DEFAULT_BUFFER_MESSAGES):
        self.broker = broker
        self.buffer_messages = buffer_messages
        self._buffer: list[tuple[str, bytes | None, bytes]] = []
        self._drain_scheduled = False

    def send(self, topic: str, key: str | bytes | None, value: bytes) -> bool:
        if len(self._buffer) >= self.buffer_messages:
            EVENTS_DROPPED.labels(topic).inc()
            log.warning("event_dropped", topic=topic, reason="producer buffer full")
            return False
        self._buffer.append((topic, _key_bytes(key), value))
        if not self._drain_scheduled:
            self._drain_scheduled = True
            asyncio.get_running_loop().call_soon(self._drain_soon)
        return True

    def _drain_soon(self) -> None:
        self._drain_scheduled = False
        topics = self._drain()
        if topics:
            self.broker.wake(topics)

    def _drain(self) -> dict[str, int]:
        """Move the buffer to the broker; how many messages went to each topic."""
        if not self.broker.available or not self._buffer:
            return {}
        counts: dict[str, int] = {}
        for topic, key, value in self._buffer:
            self.broker.append(topic, key, value)
            counts[topic] = counts.get(topic, 0) + 1
        self._buffer.clear()
        for topic, count in counts.items():
            EVENTS_PUBLISHED.labels(topic).inc(count)
        return counts

    async def publish(self, topic: str, key: str | bytes | None, value: bytes) -> None:
        if not self.broker.available:
            EVENTS_PUBLISH_FAILURES.labels(topic).inc()
            raise PublishError(f"in-process broker unavailable; {topic} message not delivered")
        topics = [*self._drain(), topic]
        self.broker.append(topic, _key_bytes(key), value)
        EVENTS_PUBLISHED.labels(topic).inc()
        await self.broker.notify(topics)

    async def flush(self, timeout: float = 10.0) -> int:
        topics = self._drain()
        if topics:
            await self.broker.notify(topics)
        return len(self._buffer)

    def pending(self) -> int:
        return len(self._buffer)

    async def check(self) -> None:
        if not self.broker.available:
            raise PublishError("in-process broker unavailable")

    async def close(self, timeout: float = 10.0) -> None:
        await self.flush(timeout)


class InMemoryConsumer(EventConsumer):
    """A group member, or with `assign` a reader of exactly those partitions from
    exactly those offsets (no group: `commit` is refused)."""

    def __init__(
        self,
        broker: InMemoryBroker,
        group_id: str,
        topics: Iterable[str],
        *,
        on_assign: AssignHook | None = None,
        on_revoke: RevokeHook | None = None,
        start: str = "earliest",
        assign: Mapping[TopicPartition, int] | None = None,
    ) -> None:
        self.broker = broker
        self.group_id = group_id
        self.topics = list(topics)
        self.on_assign = on_assign
        self.on_revoke = on_revoke
        self.start_at = start
        self._positions: dict[TopicPartition, int] = {}
        self._generation = -1
        self._started = False
        self._fixed = _checked_offsets(assign) if assign is not None else None
        if self._fixed is not None:
            self.topics = sorted({topic for topic, _ in self._fixed} | set(self.topics))

    async def start(self) -> None:
        for topic in self.topics:
            self.broker.create_topic(topic)
        if self._fixed is not None:
            self.add_partitions(self._fixed)
        else:
            self.broker.join(self.group_id, self)
        self._started = True

    def add_partitions(self, offsets: Mapping[TopicPartition, int]) -> None:
        if self._fixed is None:
            raise NotImplementedError("a group member has its partitions from the group")
        for (topic, partition), offset in _checked_offsets(offsets).items():
            if partition >= self.broker.partitions_of(topic):
                raise ValueError(f"{topic} has no partition {partition}")
            self._positions[(topic, partition)] = offset
            self._fixed[(topic, partition)] = offset

    async def caught_up(self) -> bool:
        return all(pos >= self.broker.end_offset(tp) for tp, pos in self._positions.items())

    async def _rebalance_if_needed(self) -> None:
        if self._fixed is not None:
            return
        generation = self.broker.generation(self.group_id)
        if generation == self._generation:
            return
        self._generation = generation
        new = self.broker.assignment_for(self.group_id, self)
        revoked = [tp for tp in self._positions if tp not in new]
        if revoked and self.on_revoke:
            await self.on_revoke(revoked)
        for tp in revoked:
            del self._positions[tp]
        added = [tp for tp in new if tp not in self._positions]
        # Called on every new generation, even with nothing added, as librdkafka calls
        # its assign callback with an empty list: joining the group is an assignment.
        chosen = await self.on_assign(added) if self.on_assign else {}
        for tp in added:
            if tp in chosen:
                self._positions[tp] = chosen[tp]
                continue
            committed = self.broker.committed(self.group_id, tp)
            if committed is not None:
                self._positions[tp] = committed
            else:
                self._positions[tp] = (
                    0 if self.start_at == "earliest" else self.broker.end_offset(tp)
                )

    async def poll(self, max_messages: int = 1000, timeout: float = 0.5) -> list[Message]:
        if not self._started:
            raise RuntimeError("consumer not started")
        deadline = time.monotonic() + timeout
        while True:
            await self._rebalance_if_needed()
            batch: list[Message] = []
            for tp, position in self._positions.items():
                room = max_messages - len(batch)
                if room <= 0:
                    break
                chunk = self.broker.read(tp, position, room)
                if chunk:
                    batch.extend(chunk)
                    self._positions[tp] = position + len(chunk)
            remaining = deadline - time.monotonic()
            if batch or remaining <= 0:
                return batch
            await self.broker.wait_for_data(min(remaining, 0.05), self.topics)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self._fixed is not None:
            raise RuntimeError("an assigned consumer has no group to commit to")
        self.broker.commit(self.group_id, offsets)

    def commit_advisory(self, offsets: Mapping[TopicPartition, int]) -> None:
        if self._fixed is None and self._started and offsets:
            self.broker.commit(self.group_id, dict(offsets))

    def assignment(self) -> list[TopicPartition]:
        return list(self._positions)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._positions[tp] = offset

    async def lag(self) -> dict[TopicPartition, int]:
        return {tp: self.broker.end_offset(tp) - pos for tp, pos in self._positions.items()}

    async def close(self) -> None:
        self._lag_closed = True
        if self._started:
            if self._fixed is None:
                self.broker.leave(self.group_id, self)
            self._started = False


def _checked_offsets(offsets: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
    """Concrete start offsets (Kafka's logical -1/-2 are not supported here)."""
    for tp, offset in offsets.items():
        if offset < 0:
            raise ValueError(f"start offset of {tp[0]}:{tp[1]} must be >= 0, got {offset}")
    return dict(offsets)


# ---------------------------------------------------------------------------- Kafka


def kafka_base_config(brokers: Sequence[str]) -> dict[str, Any]:
    return {
        "bootstrap.servers": ",".join(brokers),
        "client.id": "adplatform",
        "socket.keepalive.enable": True,
        "log_level": 3,
    }


class _LogThrottle:
    """At most one log line per topic per `interval` seconds; the line says how many
    were left out. During an outage every event fails or is dropped, and a line per
    event would bury the log (the metrics still count each one)."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._next: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def due(self, topic: str) -> bool:
        now = time.monotonic()
        if now >= self._next.get(topic, 0.0):
            self._next[topic] = now + self.interval
            return True
        self._skipped[topic] = self._skipped.get(topic, 0) + 1
        return False

    def take(self, topic: str) -> dict[str, int]:
        """`{"suppressed": n}`: the lines left out since the last one logged."""
        return {"suppressed": self._skipped.pop(topic, 0)}


class KafkaProducer(EventProducer):
    """confluent-kafka producer; a daemon thread serves delivery callbacks.

    Idempotent and `acks=all`, so retries neither duplicate nor reorder a partition.
    `delivery_timeout_ms` is how long a message may wait out a broker outage in the
    buffer before it counts as failed.

    `per_message_reports=False` is for high-rate fire-and-forget producers (the
    bidder's ad events): librdkafka reports only failed deliveries
    (`delivery.report.only.error`), so no Python callback runs per delivered message
    (measured: about a third of the producer's CPU per message at bid rates, on the
    bidder's own core). What the metrics count is then:

    - `events_published_total{topic}`: messages the broker acknowledged, counted in
      bulk by the poller thread (at most 0.1 s late) as accepted minus failed minus
      still queued. The total is exact; with one topic per producer (the bidder) the
      per-topic count is exact too, and with several the queued remainder is shared out
      by topic in proportion to their unresolved messages until the queue drains.
    - `events_publish_failures_total{topic}`: per message, from the error reports.
    - `events_dropped_total{topic}`: per message, when `send()` finds the buffer full.

    `publish()` stays acknowledged in both modes; without per-message reports it waits
    for the producer's queue to drain (slower: it is not for hot paths).
    """

    def __init__(
        self,
        brokers: Sequence[str],
        *,
        buffer_messages: int = DEFAULT_BUFFER_MESSAGES,
        delivery_timeout_ms: int = 300_000,
        linger_ms: int = 5,
        per_message_reports: bool = True,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        from confluent_kafka import Producer

        config = {
            **kafka_base_config(brokers),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": linger_ms,
            "compression.type": "lz4",
            "queue.buffering.max.messages": buffer_messages,
            "queue.buffering.max.kbytes": 1_048_576,
            "message.timeout.ms": delivery_timeout_ms,
            "delivery.report.only.error": not per_message_reports,
            **(extra_config or {}),
        }
        self._producer = Producer(config)
        self._brokers = list(brokers)
        self._delivery_timeout = delivery_timeout_ms / 1000
        self._bulk = not per_message_reports
        self._accepted: dict[str, int] = {}
        self._failed: dict[str, int] = {}
        self._reported: dict[str, int] = {}
        self._counting = threading.Lock()
        """Error reports may be served by a flush in another thread than the poller."""
        self._failure_log = _LogThrottle()
        self._drop_log = _LogThrottle()
        self._closing = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="kafka-producer", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        while not self._closing.is_set():
            self._producer.poll(0.1)
            if self._bulk:
                self._count_acknowledged()

    def _count_acknowledged(self) -> None:
        """Bulk mode: count what left the queue without an error report as published.

        `send()` increments `_accepted` only after `produce()` queued the message, so a
        race can only under-count for one cycle, never count a message early.
        """
        with self._counting:
            unresolved = {
                topic: count - self._failed.get(topic, 0) - self._reported.get(topic, 0)
                for topic, count in list(self._accepted.items())  # list(): one atomic copy
            }
            waiting = sum(unresolved.values())
            done = waiting - len(self._producer)
            if waiting <= 0 or done <= 0:
                return
            for topic, count in unresolved.items():
                # The whole remainder when the queue is empty; else a proportional share.
                share = count if done >= waiting else count * done // waiting
                if share > 0:
                    self._reported[topic] = self._reported.get(topic, 0) + share
                    EVENTS_PUBLISHED.labels(topic).inc(share)

    def _count_delivery(self, err: Any, msg: Any) -> None:
        topic = msg.topic() or "unknown"
        if err is None:
            EVENTS_PUBLISHED.labels(topic).inc()
        else:
            if self._bulk:
                with self._counting:
                    self._failed[topic] = self._failed.get(topic, 0) + 1
            EVENTS_PUBLISH_FAILURES.labels(topic).inc()
            if self._failure_log.due(topic):
                log.error(
                    "event_delivery_failed",
                    topic=topic,
                    error=str(err),
                    **self._failure_log.take(topic),
                )

    def _accept(self, topic: str) -> None:
        if self._bulk:
            self._accepted[topic] = self._accepted.get(topic, 0) + 1

    def send(self, topic: str, key: str | bytes | None, value: bytes) -> bool:
        try:
            self._producer.produce(topic, value, _key_bytes(key), on_delivery=self._count_delivery)
        except BufferError:
            EVENTS_DROPPED.labels(topic).inc()
            if self._drop_log.due(topic):
                log.warning(
                    "event_dropped",
                    topic=topic,
                    reason="producer buffer full",
                    **self._drop_log.take(topic),
                )
            return False
        self._accept(topic)
        return True

    async def publish(self, topic: str, key: str | bytes | None, value: bytes) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def resolve(err: Any, msg: Any) -> None:
            if future.done():
                return
            if err is None:
                future.set_result(None)
            else:
                future.set_exception(PublishError(str(err)))

        def on_delivery(err: Any, msg: Any) -> None:
            self._count_delivery(err, msg)
            loop.call_soon_threadsafe(resolve, err, msg)

        try:
            self._producer.produce(topic, value, _key_bytes(key), on_delivery=on_delivery)
        except BufferError as exc:
            EVENTS_PUBLISH_FAILURES.labels(topic).inc()
            raise PublishError("producer buffer full") from exc
        self._accept(topic)
        if self._bulk:
            # No success report will come: an empty queue with no error report for
            # this message means the broker acknowledged it. The error report, if any,
            # is served before the queue counts as empty, so `resolve` runs first.
            remaining = await self.flush(self._delivery_timeout + 1.0)
            if not future.done():
                if remaining:
                    raise PublishError(f"{topic} message not acknowledged in time")
                future.set_result(None)
        await future

    async def flush(self, timeout: float = 10.0) -> int:
        remaining: int = await asyncio.to_thread(self._producer.flush, timeout)
        return remaining

    def pending(self) -> int:
        return len(self._producer)

    async def check(self) -> None:
        await asyncio.to_thread(self._producer.list_topics, timeout=2.0)

    async def close(self, timeout: float = 10.0) -> None:
        remaining = await self.flush(timeout)
        if remaining:
            log.error("producer_closed_with_undelivered", count=remaining)
        self._closing.set()
        await asyncio.to_thread(self._poller.join, 1.0)
        if self._bulk:
            self._count_acknowledged()


class KafkaConsumer(EventConsumer):
    """confluent-kafka consumer; blocking calls run in a worker thread.

    Offsets are never auto-committed: a service commits what it has durably processed
    (to Kafka with `commit`, or to its own database and hands them back in `on_assign`).

    With `assign` ({partition: start offset}) it is a follower instead: `start()`
    assigns exactly those partitions at those offsets (librdkafka `assign()`; the group
    id is only a name, librdkafka requires one: nothing joins, rebalances or commits),
    and `poll` returns as soon as a message is there (`consume()` would wait out the
    whole timeout for a batch that is not full: up to 0.1 s more per update at the
    bidder's rates). The consumer tracks its own next offsets, so `lag()` and
    `caught_up()` are exact.
    """

    def __init__(
        self,
        brokers: Sequence[str],
        group_id: str,
        topics: Iterable[str],
        *,
        on_assign: AssignHook | None = None,
        on_revoke: RevokeHook | None = None,
        start: str = "earliest",
        extra_config: dict[str, Any] | None = None,
        assign: Mapping[TopicPartition, int] | None = None,
    ) -> None:
        from confluent_kafka import Consumer

        self.group_id = group_id
        self.topics = list(topics)
        self._fixed = _checked_offsets(assign) if assign is not None else None
        """Assigned mode: the next offset to read of each partition."""
        if self._fixed is not None:
            self.topics = sorted({topic for topic, _ in self._fixed} | set(self.topics))
        self.on_assign = on_assign
        self.on_revoke = on_revoke
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumer = Consumer(
            {
                **kafka_base_config(brokers),
                "group.id": group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": start,
                "partition.assignment.strategy": "range",
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 1_000,
                "max.poll.interval.ms": 300_000,
                "fetch.min.bytes": 1,
                "fetch.wait.max.ms": 50,
                "on_commit": self._committed,
                **(extra_config or {}),
            }
        )
        self._assigned: list[TopicPartition] = []
        self._advice: dict[TopicPartition, int] = {}
        """Advisory offsets waiting for the worker thread (`commit_advisory`)."""
        self._start_offsets: dict[TopicPartition, int] = {}
        """Where `on_assign` started each partition: its position until a message of
        it has been consumed (librdkafka reports no position before that)."""
        self._lock = threading.Lock()

    def _run_hook(self, coro: Awaitable[Any]) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=60)  # type: ignore[arg-type]

    def _handle_assign(self, consumer: Any, partitions: list[Any]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        chosen: dict[TopicPartition, int] = {}
        if self.on_assign is not None:
            chosen = self._run_hook(self.on_assign(tps))
        for p in partitions:
            offset = chosen.get((p.topic, p.partition))
            if offset is not None:
                p.offset = offset
        consumer.assign(partitions)
        with self._lock:
            self._assigned = tps
            self._start_offsets = {tp: o for tp, o in chosen.items() if tp in tps}
        log.info("partitions_assigned", group=self.group_id, partitions=tps)

    def _handle_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        if self.on_revoke is not None:
            self._run_hook(self.on_revoke(tps))
        consumer.unassign()
        with self._lock:
            self._assigned = []
            self._start_offsets = {}
            self._advice = {}  # the next owner tells the group from now on
        log.info("partitions_revoked", group=self.group_id, partitions=tps)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._fixed is not None:
            fixed, self._fixed = self._fixed, {}
            self.add_partitions(fixed)
            return
        self._consumer.subscribe(
            self.topics, on_assign=self._handle_assign, on_revoke=self._handle_revoke
        )

    def add_partitions(self, offsets: Mapping[TopicPartition, int]) -> None:
        from confluent_kafka import TopicPartition as KafkaTopicPartition

        if self._fixed is None:
            raise NotImplementedError("a group member has its partitions from the group")
        offsets = _checked_offsets(offsets)
        if not offsets:
            return
        self._consumer.incremental_assign(
            [KafkaTopicPartition(t, p, o) for (t, p), o in offsets.items()]
        )
        with self._lock:
            self._fixed.update(offsets)
            self._assigned = list(self._fixed)
        log.info("partitions_assigned", group=self.group_id, partitions=list(offsets))

    async def caught_up(self) -> bool:
        from confluent_kafka import TopicPartition as KafkaTopicPartition

        if self._fixed is None:
            return await super().caught_up()
        with self._lock:
            positions = dict(self._fixed)
        for (topic, partition), position in positions.items():
            # The high watermark the last fetch of this partition reported (a local
            # read; unknown until a fetch came back, so a follower that cannot reach
            # the partition's leader is never caught up).
            _, high = self._consumer.get_watermark_offsets(
                KafkaTopicPartition(topic, partition), cached=True
            )
            if high < 0 or position < high:
                return False
        return True

    def _poll_first(self, max_messages: int, timeout: float) -> list[Any]:
        """Assigned mode: wait for one message, then take what is already queued."""
        first = self._consumer.poll(timeout)
        if first is None:
            return []
        if max_messages <= 1:
            return [first]
        return [first, *self._consumer.consume(max_messages - 1, 0)]

    async def poll(self, max_messages: int = 1000, timeout: float = 0.5) -> list[Message]:
        if self._fixed is not None:
            raw = await asyncio.to_thread(self._poll_first, max_messages, timeout)
            batch = _messages(raw)
            with self._lock:
                for message in batch:
                    self._fixed[(message.topic, message.partition)] = message.offset + 1
            return batch
        raw = await asyncio.to_thread(self._consume, max_messages, timeout)
        return _messages(raw)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        from confluent_kafka import TopicPartition as KafkaTopicPartition

        if self._fixed is not None:
            raise RuntimeError("an assigned consumer has no group to commit to")
        if offsets:
            tps = [KafkaTopicPartition(t, p, o) for (t, p), o in offsets.items()]
            await asyncio.to_thread(self._consumer.commit, offsets=tps, asynchronous=False)

    def commit_advisory(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Queued here, sent by the next `poll` (or `close`) from its worker thread.

        Not sent from the caller's thread: a librdkafka commit made while another
        thread is inside `consume()` running a rebalance callback waits for that
        callback, and the callback waits for the event loop (the `on_assign` and
        `on_revoke` hooks run there): a deadlock until the hook's timeout."""
        if self._fixed is not None or not offsets:
            return
        with self._lock:
            self._advice.update(offsets)

    def _send_advice(self) -> None:
        """Commit the queued advisory offsets of partitions still assigned, without
        waiting (worker thread, never inside `consume()`)."""
        from confluent_kafka import KafkaException
        from confluent_kafka import TopicPartition as KafkaTopicPartition

        with self._lock:
            owned = set(self._assigned)
            advice = {tp: o for tp, o in self._advice.items() if tp in owned}
            self._advice = {}
        if not advice:
            return
        tps = [KafkaTopicPartition(t, p, o) for (t, p), o in advice.items()]
        try:
            # The result comes back through `_committed`, served by a later poll.
            self._consumer.commit(offsets=tps, asynchronous=True)
        except (KafkaException, RuntimeError) as exc:  # no coordinator yet, closed
            log.info("advisory_commit_skipped", group=self.group_id, error=str(exc))

    def _consume(self, max_messages: int, timeout: float) -> list[Any]:
        self._send_advice()
        raw: list[Any] = self._consumer.consume(max_messages, timeout)
        return raw

    def _committed(self, err: Any, partitions: list[Any]) -> None:
        """librdkafka's report on an asynchronous commit (from the poll thread)."""
        failed = [p for p in partitions or () if p.error is not None]
        if err is not None or failed:
            log.info(
                "advisory_commit_failed",
                group=self.group_id,
                error=str(err or failed[0].error),
            )

    def assignment(self) -> list[TopicPartition]:
        with self._lock:
            return list(self._assigned)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        from confluent_kafka import TopicPartition as KafkaTopicPartition

        self._consumer.seek(KafkaTopicPartition(tp[0], tp[1], offset))
        if self._fixed is not None:
            with self._lock:
                self._fixed[tp] = offset

    async def lag(self) -> dict[TopicPartition, int]:
        from confluent_kafka import TopicPartition as KafkaTopicPartition

        def compute() -> dict[TopicPartition, int]:
            tps = [KafkaTopicPartition(t, p) for t, p in self.assignment()]
            if not tps:
                return {}
            with self._lock:
                fixed = dict(self._fixed) if self._fixed is not None else None
                started_at = dict(self._start_offsets)
            result: dict[TopicPartition, int] = {}
            for tp in tps if fixed is not None else self._consumer.position(tps):
                _, high = self._consumer.get_watermark_offsets(tp, timeout=2.0, cached=False)
                if fixed is not None:
                    position = fixed[(tp.topic, tp.partition)]
                elif tp.offset >= 0:
                    position = tp.offset
                else:  # nothing consumed from it yet: where the assignment started it
                    position = started_at.get((tp.topic, tp.partition), high)
                result[(tp.topic, tp.partition)] = max(high - position, 0)
            return result

        return await asyncio.to_thread(compute)

    async def close(self) -> None:
        self._lag_closed = True

        def close() -> None:
            if self._fixed is None:
                self._send_advice()  # librdkafka's close waits for pending commits
            self._consumer.close()

        await asyncio.to_thread(close)


def _messages(raw: list[Any]) -> list[Message]:
    """confluent-kafka messages as `Message`s (errors logged and skipped)."""
    batch: list[Message] = []
    append = batch.append
    make = tuple.__new__  # skips the named tuple's Python-level __new__: the hot path
    for m in raw:
        error = m.error()
        if error is not None:
            if error.code() != -191:  # _PARTITION_EOF is informational
                log.warning("consume_error", error=str(error))
            continue
        append(
            make(
                Message,
                (
                    m.topic() or "",
                    m.partition() or 0,
                    m.offset() or 0,
                    m.key(),  # bytes: no deserializer is configured
                    m.value() or b"",
                    m.timestamp()[1],
                ),
            )
        )
    return batch


def ensure_topics(
    brokers: Sequence[str],
    topics: dict[str, int],
    *,
    replication_factor: int = 1,
    timeout: float = 30.0,
) -> None:
    """Create missing topics (tests, benchmarks, dev clusters; Strimzi does it on k8s)."""
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient(kafka_base_config(brokers))
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [
        NewTopic(name, num_partitions=count, replication_factor=replication_factor)
        for name, count in topics.items()
        if name not in existing
    ]
    if not wanted:
        return
    for name, future in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            future.result()
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
            log.debug("topic_exists", topic=name)


# ------------------------------------------------------------------------- factory


class EventBus:
    """Makes producers and consumers for the configured backend.

    `EventBus.from_brokers([])` is in-process (dev mode shares one instance across the
    services in the process); anything else is Kafka.
    """

    def __init__(self, brokers: Sequence[str], memory: InMemoryBroker | None = None) -> None:
        self.brokers = list(brokers)
        self.memory = memory if not self.brokers else None
        if not self.brokers and self.memory is None:
            self.memory = InMemoryBroker()

    @classmethod
    def from_brokers(cls, brokers: Sequence[str]) -> EventBus:
        return cls(brokers)

    @property
    def is_kafka(self) -> bool:
        return bool(self.brokers)

    def producer(self, **kwargs: Any) -> EventProducer:
        if self.memory is not None:
            buffer_messages = kwargs.get("buffer_messages", DEFAULT_BUFFER_MESSAGES)
            return InMemoryProducer(self.memory, buffer_messages=buffer_messages)
        return KafkaProducer(self.brokers, **kwargs)

    def consumer(
        self,
        group_id: str,
        topics: Iterable[str],
        *,
        on_assign: AssignHook | None = None,
        on_revoke: RevokeHook | None = None,
        start: str = "earliest",
        extra_config: dict[str, Any] | None = None,
    ) -> EventConsumer:
        if self.memory is not None:
            return InMemoryConsumer(
                self.memory, group_id, topics, on_assign=on_assign, on_revoke=on_revoke, start=start
            )
        return KafkaConsumer(
            self.brokers,
            group_id,
            topics,
            on_assign=on_assign,
            on_revoke=on_revoke,
            start=start,
            extra_config=extra_config,
        )

    def assigned_consumer(
        self,
        offsets: Mapping[TopicPartition, int],
        *,
        name: str = "adplatform-assigned",
        extra_config: dict[str, Any] | None = None,
    ) -> EventConsumer:
        """A follower of exactly these partitions from exactly these offsets.

        For readers that must each see everything (every bidder replica follows all of
        `campaign-updates`): no consumer group, so nothing to join before the first
        fetch and no rebalance later; `caught_up()` tells when it has read every
        partition to its end. `name` labels it in logs (and is the group id librdkafka
        insists on; nothing is committed under it).
        """
        topics = sorted({topic for topic, _ in offsets})
        if self.memory is not None:
            return InMemoryConsumer(self.memory, name, topics, assign=offsets)
        return KafkaConsumer(self.brokers, name, topics, assign=offsets, extra_config=extra_config)

    async def end_offsets(self, topic: str, timeout: float = 10.0) -> dict[TopicPartition, int]:
        """Each partition's end offset now: where a reader that must see everything
        written from this moment on starts (the bidder records these before it loads
        its snapshot, so no update falls between the two). Raises if Kafka is down."""
        if self.memory is not None:
            memory = self.memory
            count = memory.partitions_of(topic)
            return {(topic, p): memory.end_offset((topic, p)) for p in range(count)}
        return await asyncio.to_thread(kafka_end_offsets, self.brokers, topic, timeout)


def kafka_end_offsets(
    brokers: Sequence[str], topic: str, timeout: float = 10.0
) -> dict[TopicPartition, int]:
    """High watermarks of every partition of `topic` ({} when the topic does not exist)."""
    from confluent_kafka import Consumer
    from confluent_kafka import TopicPartition as KafkaTopicPartition

    probe = Consumer(
        {
            **kafka_base_config(brokers),
            "group.id": "adplatform-offset-probe",
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = probe.list_topics(topic, timeout=timeout)
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            return {}
        result: dict[TopicPartition, int] = {}
        for partition in sorted(described.partitions):
            _, high = probe.get_watermark_offsets(
                KafkaTopicPartition(topic, partition), timeout=timeout, cached=False
            )
            result[(topic, partition)] = int(high)
        return result
    finally:
        probe.close()
