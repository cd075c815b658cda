"""The outbox relay: publishes outbox rows to `campaign-updates`, in id order.

One relay runs in every replica, but only the one holding a PostgreSQL session-level
advisory lock publishes (the others just retry for the lock), so rows go out in one
stream in id order. Batched `SKIP LOCKED` consumers would be faster but could publish
two writes of the same campaign in the wrong order from two replicas; one leader
cannot. If the leader dies its connection drops, the lock is released, and another
replica takes over within a poll interval.

A row is marked sent only after the broker acknowledged it *and every row before it
in the batch*, so with Kafka down nothing is lost or reordered: the batch is retried
with exponential backoff and goes out when the broker is back. Delivery is
at-least-once (a crash between publish and mark repeats a batch); consumers apply
"newest `version` wins", which makes repeats harmless.

After an in-process commit the relay wakes at once (`notify()`); writes from other
replicas are picked up by polling every `poll_interval`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, cast

import msgspec
from prometheus_client import Counter, Gauge
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adplatform.campaigns.models import OutboxRow
from adplatform.core.bus import EventProducer, PublishError
from adplatform.core.db import is_sqlite
from adplatform.core.events import CAMPAIGN_UPDATES_TOPIC, CampaignState, CampaignUpdate, encode
from adplatform.core.logging import get_logger
from adplatform.core.metrics import REGISTRY

log = get_logger(__name__)

RELAY_LOCK_KEY: Final = 0x0AD0_0B02

OUTBOX_PENDING = Gauge(
    "outbox_pending_rows",
    "Campaign outbox rows not yet published to campaign-updates.",
    registry=REGISTRY,
)
OUTBOX_OLDEST_AGE = Gauge(
    "outbox_oldest_pending_age_seconds",
    "Age of the oldest unpublished campaign outbox row (0 when none is pending).",
    registry=REGISTRY,
)
OUTBOX_RELAYED = Counter(
    "outbox_relayed_total",
    "Campaign outbox rows published and marked sent.",
    registry=REGISTRY,
)
OUTBOX_RELAY_FAILURES = Counter(
    "outbox_relay_failures_total",
    "Relay rounds that failed (broker or database unavailable) and were retried.",
    registry=REGISTRY,
)
OUTBOX_LEADER = Gauge(
    "outbox_relay_leader",
    "1 while this replica holds the relay lock and publishes the outbox.",
    registry=REGISTRY,
)

_state_decoder = msgspec.json.Decoder(CampaignState)


@dataclass(frozen=True, slots=True)
class RelayConfig:
    batch_size: int = 500
    poll_interval: float = 0.5
    min_backoff: float = 0.2
    max_backoff: float = 10.0
    metrics_interval: float = 2.0
    retention: timedelta = timedelta(days=1)
    """How long sent rows are kept (for inspection) before they are pruned."""
    prune_interval: float = 300.0
    delivery_timeout_ms: int = 30_000
    """How long the broker may take to acknowledge a batch before it is retried."""
    linger: float = 0.005
    """After a wake-up, wait this long so the commits of concurrent writers go out in
    one round (a round per write would cost more CPU than the write itself)."""


def message_for(row_id: int, deleted: bool, state: bytes) -> bytes:
    """The `campaign-updates` message of one outbox row."""
    return encode(
        CampaignUpdate(seq=row_id, campaign=_state_decoder.decode(state), deleted=deleted)
    )


class OutboxRelay:
    def __init__(
        self, engine: AsyncEngine, producer: EventProducer, config: RelayConfig | None = None
    ) -> None:
        self.engine = engine
        self.producer = producer
        self.config = config or RelayConfig()
        self.sqlite = is_sqlite(engine)
        self._wake = _Signal()
        self._stop = _Signal(sticky=True)
        self._stopping = False
        self._leader: AsyncConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._last_prune = 0.0
        self.published = 0

    def notify(self) -> None:
        """A write committed: relay now rather than at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        self._stopping = False
        self._stop.clear()
        self._tasks = [
            asyncio.create_task(self._run(), name="outbox-relay"),
            asyncio.create_task(self._report_metrics(), name="outbox-metrics"),
        ]

    async def stop(self, timeout: float = 10.0) -> None:
        """Let the loops finish the round they are in (a database call cut off by a
        cancellation can leave its connection unusable), then cancel stragglers."""
        self._stopping = True
        self._stop.set()
        self._wake.set()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self._drop_leadership()

    # ---------------------------------------------------------------- leadership

    async def _connection(self) -> AsyncConnection | None:
        """The connection to relay on, or None if another replica is the leader."""
        if self._leader is not None:
            return self._leader
        connection = await self.engine.connect()
        if self.sqlite:
            self._leader = connection
            return connection
        try:
            acquired = await connection.scalar(
                text("SELECT pg_try_advisory_lock(:key)").bindparams(key=RELAY_LOCK_KEY)
            )
            await connection.commit()
        except BaseException:
            await connection.invalidate()
            raise
        if not acquired:
            await connection.close()
            return None
        self._leader = connection
        OUTBOX_LEADER.set(1)
        log.info("outbox_relay_leader")
        return connection

    async def _drop_leadership(self) -> None:
        connection, self._leader = self._leader, None
        if connection is None:
            return
        OUTBOX_LEADER.set(0)
        # Closing the DBAPI connection (not returning it to the pool) releases the
        # session-level lock even if the connection is in a bad state.
        with contextlib.suppress(Exception):
            await connection.invalidate()
        with contextlib.suppress(Exception):
            await connection.close()

    # --------------------------------------------------------------------- relay

    async def relay_once(self) -> int:
        """Publish one batch of unsent rows; returns how many were published."""
        self._wake.clear()
        connection = await self._connection()
        if connection is None:
            return 0
        async with connection.begin():
            rows = (
                await connection.execute(
                    select(OutboxRow.id, OutboxRow.campaign_id, OutboxRow.deleted, OutboxRow.state)
                    .where(OutboxRow.sent_at.is_(None))
                    .order_by(OutboxRow.id)
                    .limit(self.config.batch_size)
                )
            ).all()
        if not rows:
            await self._prune_if_due(connection)
            return 0
        results = await asyncio.gather(
            *(
                self.producer.publish(
                    CAMPAIGN_UPDATES_TOPIC,
                    str(row.campaign_id),
                    message_for(row.id, row.deleted, row.state),
                )
                for row in rows
            ),
            return_exceptions=True,
        )
        delivered = 0
        for result in results:
            if isinstance(result, BaseException):
                break
            delivered += 1
        if delivered:
            async with connection.begin():
                await connection.execute(
                    update(OutboxRow)
                    .where(OutboxRow.id.in_([row.id for row in rows[:delivered]]))
                    .values(sent_at=datetime.now(UTC))
                )
            OUTBOX_RELAYED.inc(delivered)
            self.published += delivered
        if delivered < len(rows):
            error = results[delivered]
            raise PublishError(f"{len(rows) - delivered} outbox rows not acknowledged: {error}")
        return delivered

    async def _run(self) -> None:
        backoff = self.config.min_backoff
        while not self._stopping:
            try:
                published = await self.relay_once()
            except Exception as exc:
                OUTBOX_RELAY_FAILURES.inc()
                log.warning(
                    "outbox_relay_failed",
                    error=f"{type(exc).__name__}: {exc}"[:500],
                    retry_in_seconds=round(backoff, 2),
                )
                if not isinstance(exc, PublishError):
                    await self._drop_leadership()  # the database connection may be gone
                await self._stop.wait(backoff)
                backoff = min(backoff * 2, self.config.max_backoff)
                continue
            backoff = self.config.min_backoff
            if published >= self.config.batch_size:
                continue  # more are waiting
            if await self._wake.wait(self.config.poll_interval) and self.config.linger:
                await self._stop.wait(self.config.linger)

    async def _prune_if_due(self, connection: AsyncConnection) -> None:
        now = time.monotonic()
        if now - self._last_prune < self.config.prune_interval:
            return
        self._last_prune = now
        cutoff = datetime.now(UTC) - self.config.retention
        newest = select(func.max(OutboxRow.id)).scalar_subquery()
        async with connection.begin():
            result = await connection.execute(
                delete(OutboxRow).where(
                    OutboxRow.sent_at.is_not(None),
                    OutboxRow.sent_at < cutoff,
                    OutboxRow.id < newest,
                )
            )
        if result.rowcount:
            log.info("outbox_pruned", rows=result.rowcount)

    # ------------------------------------------------------------------- metrics

    async def pending(self) -> tuple[int, float]:
        """Unsent rows and the age in seconds of the oldest one."""
        async with self.engine.connect() as connection:
            row = (
                await connection.execute(
                    select(func.count(), func.min(OutboxRow.created_at)).where(
                        OutboxRow.sent_at.is_(None)
                    )
                )
            ).one()
        count, oldest = int(row[0] or 0), cast("datetime | str | None", row[1])
        if oldest is None:
            return count, 0.0
        if isinstance(oldest, str):  # in case a backend returns the raw SQLite text
            oldest = datetime.fromisoformat(oldest)
        if oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        return count, max((datetime.now(UTC) - oldest).total_seconds(), 0.0)

    async def _report_metrics(self) -> None:
        while not self._stopping:
            try:
                count, age = await self.pending()
                OUTBOX_PENDING.set(count)
                OUTBOX_OLDEST_AGE.set(age)
            except Exception as exc:
                log.debug("outbox_metrics_failed", error=str(exc))
            await self._stop.wait(self.config.metrics_interval)


class _Signal:
    """A wake-up flag with a timed wait.

    Python 3.11's `asyncio.wait_for(event.wait(), t)` can hang a task that is
    cancelled while the event fires; awaiting one plain future with a timer cannot.
    A `set()` while nobody waits is remembered, so no wake-up is ever lost.
    """

    def __init__(self, *, sticky: bool = False) -> None:
        self.sticky = sticky
        """A sticky signal stays set once set (a stop request)."""
        self._flag = False
        self._waiters: list[asyncio.Future[None]] = []

    def set(self) -> None:
        self._flag = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._flag = False

    async def wait(self, timeout: float) -> bool:
        """Return True when set (consuming the flag), False after `timeout` seconds."""
        if not self._flag:
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            timer = loop.call_later(timeout, _resolve, waiter)
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiters.remove(waiter)
        was_set = self._flag
        if not self.sticky:
            self._flag = False
        return was_set


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
