"""From a polled batch of `ad-events` messages to what one transaction must write.

`prepare_batch` decodes the messages, drops ids repeated inside the batch (the store
drops ids seen in earlier batches) and lays the events out as columns, which is what
PostgreSQL's `unnest` bulk statement wants. It also works out, per partition, the
offset range the batch covers, for the store's compare-and-set.
"""

from __future__ import annotations

import hashlib
import re
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

_UUID_HEX: Final = re.compile(r"[0-9a-f]{32}")
LAG_SAMPLES_PER_BATCH: Final = 64
"""Events per batch observed in the freshness histogram (observing all would cost more
than aggregating them at 100,000 events/s)."""


def event_key(event_id: str) -> str:
    """The event id as 128 bits in hex: `ad_event_id` values as they are, any other id
    hashed, so the dedup table always holds fixed-width keys."""
    if len(event_id) == 32 and _UUID_HEX.fullmatch(event_id):
        return event_id
    return hashlib.blake2b(event_id.encode(), digest_size=16).hexdigest()


def minute_of(ts_ms: int) -> int:
    """Epoch seconds of the UTC minute that contains `ts_ms`."""
    return (ts_ms // 60_000) * 60


@dataclass(slots=True)
class PreparedBatch:
    """One batch's events as columns, plus the partitions' offset ranges."""

    ids: list[str] = field(default_factory=list)
    campaign_ids: list[int] = field(default_factory=list)
    advertiser_ids: list[int] = field(default_factory=list)
    buckets: list[int] = field(default_factory=list)
    types: list[int] = field(default_factory=list)
    bid_micros: list[int] = field(default_factory=list)
    spend_micros: list[int] = field(default_factory=list)
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    """Per partition: one past the last offset in the batch."""
    messages: int = 0
    duplicates_in_batch: int = 0
    invalid: int = 0
    lag_sample_ts_ms: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


def prepare_batch(messages: list[Message], positions: dict[TopicPartition, int]) -> PreparedBatch:
    """Decode `messages`, keeping only those at or past this consumer's `positions`.

    A message of a partition this consumer does not own (revoked while the batch was in
    flight) or below the stored position (already committed) is skipped: the stored
    offsets, not what the broker happened to return, decide what a batch covers.
    """
    batch = PreparedBatch()
    seen: set[str] = set()
    next_offsets = batch.next_offsets
    ids = batch.ids
    campaign_ids = batch.campaign_ids
    advertiser_ids = batch.advertiser_ids
    buckets = batch.buckets
    types = batch.types
    bids = batch.bid_micros
    spends = batch.spend_micros
    codes = TYPE_CODES
    step = max(1, len(messages) // LAG_SAMPLES_PER_BATCH)
    for index, message in enumerate(messages):
        tp = (message.topic, message.partition)
        position = positions.get(tp)
        if position is None or message.offset < position:
            continue
        next_offsets[tp] = max(next_offsets.get(tp, 0), message.offset + 1)
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
        key = event_key(event.id)
        if key in seen:
            batch.duplicates_in_batch += 1
            continue
        seen.add(key)
        ids.append(key)
        campaign_ids.append(event.campaign_id)
        advertiser_ids.append(event.advertiser_id)
        buckets.append((event.ts_ms // 60_000) * 60)
        types.append(codes[event.type])
        bids.append(event.bid_micros)
        spends.append(event.spend_micros)
        if index % step == 0:
            batch.lag_sample_ts_ms.append(event.ts_ms)
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
    for i, key in enumerate(batch.ids):
        if keep is not None and key not in keep:
            continue
        group = (batch.campaign_ids[i], batch.buckets[i])
        counters = result.get(group)
        if counters is None:
            counters = [batch.advertiser_ids[i], 0, 0, 0, 0, 0, 0]
            result[group] = counters
        elif batch.advertiser_ids[i] > counters[0]:
            counters[0] = batch.advertiser_ids[i]  # as SQL's max(), should two ever differ
        kind = batch.types[i]
        if kind == BID:
            counters[1] += 1
            counters[5] += batch.bid_micros[i]
        elif kind == WIN:
            counters[2] += 1
        elif kind == IMPRESSION:
            counters[3] += 1
        elif kind == CLICK:
            counters[4] += 1
        counters[6] += batch.spend_micros[i]
    return result
