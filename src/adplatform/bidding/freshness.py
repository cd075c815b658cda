"""Keeping the index fresh: the snapshot at start, then `campaign-updates` with no gap.

Order matters. The end offsets of `campaign-updates` are recorded *before* the snapshot
is fetched, and the consumer starts exactly there: an update written after the
snapshot was read is necessarily behind those offsets, so it is seen; one written
before may be seen twice, which is harmless because states are whole and the index
applies only newer versions. Every replica must see every update, so each process
consumes in its own consumer group (never committed, so it leaves nothing behind).
The snapshot is retried with backoff until it loads; readiness waits for it.
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
from adplatform.core.bus import EventBus, TopicPartition
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
"""The lag metric's group label: stable, though the real group is per process."""


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
        self.group = process_group()
        self.applied = 0
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
        self.loaded.set()
        log.info(
            "snapshot_loaded",
            campaigns=len(self.index),
            position=self.index.position,
            offsets={f"{t}:{p}": o for (t, p), o in positions.items()},
        )

        async def start_at(assigned: list[TopicPartition]) -> dict[TopicPartition, int]:
            # A partition that did not exist when the offsets were recorded holds only
            # newer updates: read it from the beginning.
            return {tp: positions.get(tp, 0) for tp in assigned}

        consumer = self.bus.consumer(self.group, [self.topic], on_assign=start_at)
        await consumer.start()
        last_lag = 0.0
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
                if time.monotonic() - last_lag > 10:
                    last_lag = time.monotonic()
                    try:
                        await consumer.report_lag(LAG_GROUP_LABEL)
                    except Exception as exc:  # a lag read is best effort
                        log.debug("lag_unavailable", error=str(exc))
        finally:
            await consumer.close()

    def _observe(self) -> None:
        metrics.INDEX_CAMPAIGNS.set(len(self.index))
        metrics.INDEX_LAST_UPDATE.set(self.index.last_update)
