"""The `ad-events` consumer: poll a batch, commit it with its offsets, repeat.

Exactly once, across crashes and rebalances:

- on assignment the consumer asks the store for each partition's offset and starts
  there (the `on_assign` hook), so a crash between two commits re-reads exactly the
  uncommitted messages;
- `positions` is the offset this consumer believes is stored; a commit moves it with a
  compare-and-set, so a consumer that lost a partition (rebalance, stalled past the
  session timeout) cannot commit a range another consumer already committed. On a
  conflict it re-reads every position and seeks, discarding what it had prefetched;
- event ids are deduplicated by the store, which catches notices fired twice.

The database is the only record of what was counted. After each committed batch (and
on each assignment) the same offsets are also committed to the Kafka group, without
waiting and only as advice, so that tools reading a group's lag from Kafka (KEDA's
Kafka trigger, `kafka-consumer-groups`) see real lag; the consumer never reads them
back: assignment starts at the database's offsets whatever Kafka says.

The next poll runs in its worker thread, and the next batch is decoded, while the
current batch commits, so the service's CPU work and the database's overlap. The
rebalance hooks take the same lock as a commit, so they never see a half-applied batch.
Any other error (database or broker down) tears the Kafka consumer down and builds a
new one after a back-off: its assignment hook reloads the stored offsets, so nothing
is lost or counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Final

from adplatform.analytics import metrics
from adplatform.analytics.aggregation import PreparedBatch, RecentIds, prepare_batch
from adplatform.analytics.store import AggregateStore, OffsetConflict
from adplatform.core.bus import EventBus, EventConsumer, Message, TopicPartition
from adplatform.core.events import AD_EVENTS_TOPIC
from adplatform.core.logging import get_logger
from adplatform.core.metrics import EVENTS_CONSUMED

log = get_logger(__name__)

LAG_REPORT_SECONDS: Final = 5.0
MAX_BACKOFF_SECONDS: Final = 10.0


class AnalyticsConsumer:
    def __init__(
        self,
        bus: EventBus,
        store: AggregateStore,
        *,
        group: str = "analytics",
        topic: str = AD_EVENTS_TOPIC,
        batch_size: int = 20_000,
        poll_timeout: float = 0.1,
        kafka_config: dict[str, Any] | None = None,
        recent_ids: int = 200_000,
    ) -> None:
        self.bus = bus
        self.store = store
        self.group = group
        self.topic = topic
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.kafka_config = kafka_config or {}
        self.positions: dict[TopicPartition, int] = {}
        """Per owned partition: the next offset as stored in the database."""
        self.started = asyncio.Event()
        """Set at the first partition assignment: the consumer has joined its group."""
        self.committed_events = 0
        self.healthy = False
        """The current Kafka consumer has had its assignment (false while rebuilding)."""
        self.recent = RecentIds(recent_ids)
        """Ids committed (or being committed) lately: duplicates skipped early."""
        self._lock = asyncio.Lock()
        self._stopping = False
        self._stop_requested = asyncio.Event()
        self._consumer: EventConsumer | None = None
        self._consumed = EVENTS_CONSUMED.labels(topic)
        self._unmirrored: set[TopicPartition] = set()
        """Partitions assigned since their stored offset was last told to Kafka."""

    # ------------------------------------------------------------------ rebalance hooks

    async def _on_assign(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        stored: dict[TopicPartition, int] = {}
        if partitions:  # a group with more members than partitions assigns nothing
            async with self._lock:
                stored = await self.store.load_offsets(self.group, partitions)
                self.positions.update(stored)
                self._unmirrored.update(stored)
        self.healthy = True
        self.started.set()
        log.info("analytics_partitions_assigned", group=self.group, offsets=_named(stored))
        return stored

    async def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        async with self._lock:
            for tp in partitions:
                self.positions.pop(tp, None)
                self._unmirrored.discard(tp)

    # --------------------------------------------------------------------------- loop

    async def run(self) -> None:
        """Consume until `stop()`; errors rebuild the consumer after a back-off."""
        backoff = 0.5
        while not self._stopping:
            try:
                await self._run_consumer()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.healthy = False
                # After a database error (a failover, say) what was committed is
                # re-read from the database, not trusted from memory.
                self.recent = RecentIds(self.recent.capacity)
                metrics.CONSUMER_RESTARTS.inc()
                log.error("analytics_consumer_failed", error=f"{type(exc).__name__}: {exc}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_requested.wait(), backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    async def stop(self) -> None:
        self._stopping = True
        self._stop_requested.set()

    def _poll(self, consumer: EventConsumer) -> asyncio.Task[list[Message]]:
        return asyncio.create_task(consumer.poll(self.batch_size, self.poll_timeout))

    async def _run_consumer(self) -> None:
        self.positions.clear()
        consumer = self.bus.consumer(
            self.group,
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            extra_config=self.kafka_config or None,
        )
        self._consumer = consumer
        self._unmirrored.clear()
        await consumer.start()  # subscribes; the assignment (readiness) comes with a poll
        next_report = time.monotonic() + LAG_REPORT_SECONDS
        pending = self._poll(consumer)
        inflight: asyncio.Task[bool] | None = None
        inflight_offsets: dict[TopicPartition, int] = {}
        try:
            while not self._stopping:
                messages = await pending
                pending = self._poll(consumer)
                if self._unmirrored:
                    self._mirror_assigned(consumer)
                batch = None
                if messages:
                    # Decode this batch while the previous one commits, as if that
                    # commit succeeds; if it does not, this batch is dropped below. In
                    # a worker thread: decoding on the loop would hold up the commit's
                    # own round trips, and the database would wait for the decode.
                    batch = await asyncio.to_thread(
                        prepare_batch,
                        messages,
                        {**self.positions, **inflight_offsets},
                        self.recent,
                    )
                    self.recent.add(batch.ids)
                if inflight is not None:
                    conflict = await inflight
                    inflight, inflight_offsets = None, {}
                    if conflict:
                        if batch is not None:
                            self.recent.discard(batch.ids)
                        await self._rewind(consumer, pending)
                        pending = self._poll(consumer)
                        continue
                if batch is not None and batch.next_offsets:
                    inflight = asyncio.create_task(self._commit(batch))
                    inflight_offsets = batch.next_offsets
                if time.monotonic() >= next_report:
                    next_report = time.monotonic() + LAG_REPORT_SECONDS
                    await self._report_lag(consumer)
        finally:
            if inflight is not None:
                with contextlib.suppress(Exception):
                    await inflight
            with contextlib.suppress(Exception):
                await pending
            self._consumer = None
            self.positions.clear()
            await consumer.close()

    async def _commit(self, batch: PreparedBatch) -> bool:
        """Commit one prepared batch; True if another consumer had committed it first
        (or the partitions moved since it was prepared): then nothing was written."""
        started = time.perf_counter()
        async with self._lock:
            expected = {tp: batch.start_offsets[tp] for tp in batch.next_offsets}
            moved = [tp for tp, offset in expected.items() if self.positions.get(tp) != offset]
            try:
                if moved:
                    raise OffsetConflict(f"partitions moved since the batch was read: {moved}")
                result = await self.store.commit(self.group, batch, expected)
            except OffsetConflict as exc:
                self.recent.discard(batch.ids)
                metrics.OFFSET_CONFLICTS.inc()
                log.warning("analytics_offset_conflict", group=self.group, error=str(exc))
                return True
            except BaseException:
                self.recent.discard(batch.ids)
                raise
            self.positions.update(batch.next_offsets)
            if self._consumer is not None:  # now that the database has them
                self._consumer.commit_advisory(batch.next_offsets)
        self._observe(batch, result.duplicates, time.perf_counter() - started)
        self.committed_events += result.fresh
        return False

    def _observe(self, batch: PreparedBatch, duplicates: int, elapsed: float) -> None:
        now = time.time()
        metrics.BATCH_DURATION.observe(elapsed)
        metrics.LAST_COMMIT.set(now)
        if duplicates:
            metrics.DUPLICATE_EVENTS.inc(duplicates)
        if batch.invalid:
            metrics.INVALID_EVENTS.inc(batch.invalid)
        self._consumed.inc(batch.messages)
        for ts_ms in batch.lag_sample_ts_ms:
            metrics.EVENT_LAG.observe(max(0.0, now - ts_ms / 1000))

    def _mirror_assigned(self, consumer: EventConsumer) -> None:
        """Tell Kafka the stored offsets of newly assigned partitions, idle ones too
        (KEDA counts a partition without a committed offset as entirely unread). Done
        from the loop once the poll that ran the assignment has returned, with the
        latest committed positions."""
        offsets = {tp: self.positions[tp] for tp in self._unmirrored if tp in self.positions}
        self._unmirrored.clear()
        consumer.commit_advisory(offsets)

    async def _rewind(self, consumer: EventConsumer, pending: asyncio.Task[list[Message]]) -> None:
        """After a conflict: drop what was prefetched and read from the stored offsets."""
        with contextlib.suppress(Exception):
            await pending
        async with self._lock:
            owned = list(self.positions)
            stored = await self.store.load_offsets(self.group, owned)
            self.positions.update(stored)
            for tp, offset in stored.items():
                consumer.seek(tp, offset)
        log.info("analytics_rewound", group=self.group, offsets=_named(stored))

    async def _report_lag(self, consumer: EventConsumer) -> None:
        try:
            await consumer.report_lag(self.group)
        except Exception as exc:  # lag is for dashboards; never stop consuming over it
            log.warning("analytics_lag_report_failed", error=str(exc))


def _named(offsets: dict[TopicPartition, int]) -> dict[str, int]:
    """Offsets keyed `topic[partition]`, as JSON logs can carry them."""
    return {f"{topic}[{partition}]": offset for (topic, partition), offset in offsets.items()}
