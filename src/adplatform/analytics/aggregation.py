"""From a polled batch of `ad-events` messages to what one transaction must write.

`prepare_batch` decodes the messages, drops ids repeated inside the batch or known to
be committed already (`RecentIds`; the store's processed-ids table remains the
authority) and lays the events out as one tuple per event, the row shape PostgreSQL's
binary COPY takes. It also works out, per partition, the offset range the batch
covers, for the store's compare-and-set.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field
from typing import Final

import msgspec

from adplatform.core.bus import Message, TopicPartition
from adplatform.core.events import AdEventType, decode_ad_event
from adplatform.core.logging import get_logger

log = get_logger(__name__)

TYPE_CODES: Final = {
    AdEventType.BID: 0,
    AdEventType.WIN: 1,
    AdEventType.BILLING: 2,
    AdEventType.IMPRESSION: 3,
    AdEventType.CLICK: 4,
}
"""Small integers for the event type, as the bulk statement receives them."""
BID, WIN, BILLING, IMPRESSION, CLICK = range(5)

_HEX_DIGITS: Final = "0123456789abcdef"
LAG_SAMPLES_PER_BATCH: Final = 64
"""Events per batch observed in the freshness histogram (observing all would cost more
than aggregating them at 100,000 events/s)."""

MAX_ID: Final = 2**63 - 1
MAX_MICROS: Final = 10**12
"""A million dollars for one impression: anything above is a broken producer (and
would overflow 64-bit sums)."""
MAX_TS_MS: Final = 2**47
"""About the year 6400."""

Row = tuple[str, int, int, int, int, int, int]
"""event key, campaign id, advertiser id, minute (epoch s), type code, bid, spend."""


def event_key(event_id: str) -> str:
    """The event id as 128 bits in hex: `ad_event_id` values as they are, any other id
    hashed, so the dedup table always holds fixed-width keys."""
    if len(event_id) == 32 and not event_id.strip(_HEX_DIGITS):
        return event_id
    return hashlib.blake2b(event_id.encode(), digest_size=16).hexdigest()


def minute_of(ts_ms: int) -> int:
    """Epoch seconds of the UTC minute that contains `ts_ms`."""
    return (ts_ms // 60_000) * 60


class RecentIds:
    """Ids this process has committed lately, so most duplicates never reach the
    database. Only ever holds committed ids, so skipping one is always right; an id
    it has forgotten is still caught by the processed-ids table."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._ids: set[str] = set()
        self._batches: deque[list[str]] = deque()

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def discard(self, keys: list[str]) -> None:
        """Forget ids whose commit failed (they may well come again)."""
        self._ids.difference_update(keys)

    def add(self, keys: list[str]) -> None:
        if not keys:
            return
        self._ids.update(keys)
        self._batches.append(keys)
        while len(self._ids) > self.capacity and len(self._batches) > 1:
            self._ids.difference_update(self._batches.popleft())


@dataclass(slots=True)
class PreparedBatch:
    """One batch's new-looking events as rows, plus the partitions' offset ranges."""

    rows: list[Row] = field(default_factory=list)
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    """Per partition: one past the last offset in the batch."""
    start_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    """Per partition: the stored offset the batch was prepared against."""
    messages: int = 0
    duplicates_in_batch: int = 0
    """Repeated inside the batch, or known committed (`RecentIds`)."""
    invalid: int = 0
    lag_sample_ts_ms: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def ids(self) -> list[str]:
        return [row[0] for row in self.rows]


def prepare_batch(
    messages: list[Message],
    positions: dict[TopicPartition, int],
    known: RecentIds | set[str] | None = None,
) -> PreparedBatch:
    """Decode `messages`, keeping only those at or past this consumer's `positions`.

    A message of a partition this consumer does not own (revoked while the batch was in
    flight) or below the stored position (already committed) is skipped: the stored
    offsets, not what the broker happened to return, decide what a batch covers.
    """
    batch = PreparedBatch()
    seen: set[str] = set()
    known_ids = known if known is not None else ()
    next_offsets = batch.next_offsets
    rows = batch.rows
    append = rows.append
    codes = TYPE_CODES
    hex_digits = _HEX_DIGITS
    step = max(1, len(messages) // LAG_SAMPLES_PER_BATCH)
    current_tp: TopicPartition | None = None
    position = -1
    running: dict[TopicPartition, int] = {}
    """Per partition, the next offset this batch expects (messages of several
    partitions may interleave)."""
    for index, message in enumerate(messages):
        tp = (message.topic, message.partition)
        if tp != current_tp:
            if current_tp is not None:
                running[current_tp] = position
            current_tp = tp
            if tp in running:
                position = running[tp]
            else:
                start = positions.get(tp)
                position = -1 if start is None else start
                if start is not None:
                    batch.start_offsets[tp] = start
        if position < 0 or message.offset < position:
            continue
        next_offsets[tp] = message.offset + 1
        position = message.offset + 1
        batch.messages += 1
        try:
            event = decode_ad_event(message.value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            batch.invalid += 1
            log.warning(
                "invalid_ad_event",
                partition=message.partition,
                offset=message.offset,
                error=str(exc)[:200],
            )
            continue
        ts_ms = event.ts_ms
        if not (
            0 < event.campaign_id <= MAX_ID
            and 0 < event.advertiser_id <= MAX_ID
            and 0 <= event.bid_micros <= MAX_MICROS
            and 0 <= event.spend_micros <= MAX_MICROS
            and 0 <= ts_ms <= MAX_TS_MS
        ):
            # Out of range: it would fail the whole batch in the database, every retry.
            batch.invalid += 1
            log.warning(
                "invalid_ad_event",
                partition=message.partition,
                offset=message.offset,
                error="a field is out of range",
            )
            continue
        key = event.id
        if len(key) != 32 or key.strip(hex_digits):  # not already 128 bits in hex
            key = event_key(key)
        if key in seen or key in known_ids:
            batch.duplicates_in_batch += 1
            continue
        seen.add(key)
        append(
            (
                key,
                event.campaign_id,
                event.advertiser_id,
                (ts_ms // 60_000) * 60,
                codes[event.type],
                event.bid_micros,
                event.spend_micros,
            )
        )
        if index % step == 0:
            batch.lag_sample_ts_ms.append(ts_ms)
    return batch


Counters = list[int]
"""advertiser_id, bids, wins, impressions, clicks, bid_micros, spend_micros."""


def aggregate(
    batch: PreparedBatch, keep: set[str] | None = None
) -> dict[tuple[int, int], Counters]:
    """Sum the batch per (campaign, minute); only ids in `keep` when given.

    This is the portable path (SQLite); PostgreSQL sums in SQL, in the same statement
    that records the ids, so the two must agree (a test compares them).
    """
    result: dict[tuple[int, int], Counters] = {}
    for key, campaign, advertiser, bucket, kind, bid, spend in batch.rows:
        if keep is not None and key not in keep:
            continue
        group = (campaign, bucket)
        counters = result.get(group)
        if counters is None:
            counters = [advertiser, 0, 0, 0, 0, 0, 0]
            result[group] = counters
        elif advertiser > counters[0]:
            counters[0] = advertiser  # as SQL's max(), should two ever differ
        if kind == BID:
            counters[1] += 1
            counters[5] += bid
        elif kind == WIN:
            counters[2] += 1
        elif kind == IMPRESSION:
            counters[3] += 1
        elif kind == CLICK:
            counters[4] += 1
        counters[6] += spend
    return result
