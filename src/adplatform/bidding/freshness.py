"""Keeping the index fresh: the snapshot at start, then `campaign-updates` with no gap.

Order matters. The end offsets of `campaign-updates` are recorded *before* the snapshot
is fetched, and the follower starts exactly there: an update written after the
snapshot was read is necessarily behind those offsets, so it is seen; one written
before may be seen twice, which is harmless because states are whole and the index
applies only newer versions. The snapshot is retried with backoff until it loads.

Every replica must see every update, so the follower is not a consumer-group member:
it is assigned all partitions at the recorded offsets (`EventBus.assigned_consumer`),
so there is no group to join before the first fetch, no rebalance to pause it later,
and nothing is left behind in Kafka. Readiness waits for the snapshot *and* for the
follower to have fetched every partition and read it to its end: once a replica is
ready, an update published from then on is applied as soon as Kafka delivers it. A
partition added to the topic later is picked up by a periodic check, from offset 0.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import httpx
import msgspec

from adplatform.bidding import metrics
from adplatform.bidding.index import TargetingIndex
from adplatform.core.auth import INTERNAL_KEY_HEADER
from adplatform.core.bus import EventBus, EventConsumer, TopicPartition
from adplatform.core.events import (
    CAMPAIGN_UPDATES_TOPIC,
    CampaignSnapshot,
    decode_campaign_update,
    decode_snapshot,
)
from adplatform.core.logging import get_logger
from adplatform.core.metrics import EVENTS_CONSUMED

log = get_logger(__name__)

T = TypeVar("T")

SNAPSHOT_PATH: Final = "/internal/snapshot"
LAG_GROUP_LABEL: Final = "bidding-index"
"""The lag metric's group label: stable, though each process follows on its own."""
PARTITION_CHECK_SECONDS: Final = 30.0
"""How often the follower looks for partitions added to the topic (2 s while the topic
has none yet)."""
WAITING_LOG_SECONDS: Final = 10.0


def process_group() -> str:
    return f"bidding-index-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class CampaignFeed:
    """Loads the snapshot, then applies `campaign-updates` to the index."""

    def __init__(
        self,
        index: TargetingIndex,
        bus: EventBus,
        *,
        campaign_service_url: str,
        internal_api_key: str | None,
        topic: str = CAMPAIGN_UPDATES_TOPIC,
        max_backoff: float = 5.0,
    ) -> None:
        self.index = index
        self.bus = bus
        self.url = campaign_service_url.rstrip("/") + SNAPSHOT_PATH
        self.internal_api_key = internal_api_key
        self.topic = topic
        self.max_backoff = max_backoff
        self.loaded = asyncio.Event()
        """Set once the snapshot is loaded and the follower has caught up: readiness."""
        self.group = process_group()
        """The follower's name in logs (no consumer group is joined under it)."""
        self.applied = 0
        self.following = False
        """The follower is started: stop it with `stop()`, not by cancelling."""
        self._stopping = False

    def stop(self) -> None:
        """Ask `run` to return after its current poll (cancelling a consumer in the
        middle of a poll is not safe with every adapter)."""
        self._stopping = True

    async def _retry(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        delay = 0.2
        while True:
            try:
                return await attempt()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("bidder_start_retry", step=what, error=str(exc)[:300], retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff)

    async def fetch_snapshot(self) -> CampaignSnapshot:
        headers = {}
        if self.internal_api_key:
            headers[INTERNAL_KEY_HEADER] = self.internal_api_key
        async with httpx.AsyncClient(timeout=30.0) as client:
            response = await client.get(self.url, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"snapshot: HTTP {response.status_code} from {self.url}")
        return decode_snapshot(response.content)

    async def run(self) -> None:
        positions = await self._retry(
            "record campaign-updates offsets", lambda: self.bus.end_offsets(self.topic)
        )
        snapshot = await self._retry("load snapshot", self.fetch_snapshot)
        self.index.load(snapshot)
        del snapshot
        # The index is long-lived: keep the garbage collector from re-scanning its
        # hundreds of thousands of objects on every collection of the hot path.
        gc.collect()
        gc.freeze()
        self._observe()
        loaded_at = time.monotonic()
        log.info(
            "snapshot_loaded",
            campaigns=len(self.index),
            position=self.index.position,
            offsets={f"{t}:{p}": o for (t, p), o in positions.items()},
        )
        consumer = self.bus.assigned_consumer(positions, name=self.group)
        await consumer.start()
        self.following = True
        known = set(positions)
        last_lag = last_check = last_waiting_log = time.monotonic()
        try:
            while not self._stopping:
                messages = await consumer.poll(1000, 0.1)
                for message in messages:
                    try:
                        update = decode_campaign_update(message.value)
                    except msgspec.MsgspecError as exc:
                        log.error("bad_campaign_update", offset=message.offset, error=str(exc))
                        continue
                    if self.index.apply(update):
                        self.applied += 1
                if messages:
                    EVENTS_CONSUMED.labels(self.topic).inc(len(messages))
                    self._observe()
                now = time.monotonic()
                if not self.loaded.is_set():
                    if await consumer.caught_up():
                        self.loaded.set()
                        log.info("bidder_index_ready", caught_up_after_s=round(now - loaded_at, 3))
                    elif now - last_waiting_log > WAITING_LOG_SECONDS:
                        last_waiting_log = now
                        log.warning("waiting_for_campaign_updates", topic=self.topic)
                if now - last_check > (PARTITION_CHECK_SECONDS if known else 2.0):
                    last_check = now
                    await self._follow_new_partitions(consumer, known)
                if now - last_lag > 10:
                    last_lag = now
                    try:
                        await consumer.report_lag(LAG_GROUP_LABEL)
                    except Exception as exc:  # a lag read is best effort
                        log.debug("lag_unavailable", error=str(exc))
        finally:
            await consumer.close()

    async def _follow_new_partitions(
        self, consumer: EventConsumer, known: set[TopicPartition]
    ) -> None:
        """A partition that did not exist when the offsets were recorded holds only
        newer updates: read it from the beginning."""
        try:
            current = await self.bus.end_offsets(self.topic)
        except Exception as exc:  # Kafka away: the next check retries
            log.debug("partition_check_failed", error=str(exc)[:300])
            return
        new = {tp: 0 for tp in current if tp not in known}
        if new:
            consumer.add_partitions(new)
            known.update(new)
            log.info("campaign_updates_partitions_added", partitions=sorted(new))

    def _observe(self) -> None:
        metrics.INDEX_CAMPAIGNS.set(len(self.index))
        metrics.INDEX_LAST_UPDATE.set(self.index.last_update)
