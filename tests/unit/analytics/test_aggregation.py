from __future__ import annotations

import msgspec

from adplatform.analytics.aggregation import (
    CLICK,
    RecentIds,
    aggregate,
    event_key,
    minute_of,
    prepare_batch,
)
from adplatform.core.bus import Message
from adplatform.core.events import AdEvent, AdEventType, ad_event_id, encode
from tests.unit.analytics.support import event, expected_minutes, generate_events

TOPIC = "ad-events"


def messages(events: list[AdEvent], partition: int = 0, first_offset: int = 0) -> list[Message]:
    return [
        Message(TOPIC, partition, first_offset + i, b"k", encode(e), 0)
        for i, e in enumerate(events)
    ]


def test_event_key_keeps_ad_event_ids_and_hashes_anything_else() -> None:
    generated = ad_event_id("auction", "1", AdEventType.WIN)
    assert event_key(generated) == generated
    other = event_key("not-a-hex-id")
    assert len(other) == 32
    assert int(other, 16) >= 0
    assert event_key("not-a-hex-id") == other
    assert event_key("NOT-A-HEX-ID") != other
    upper = generated.upper()
    assert event_key(upper) != generated  # hashed: only canonical hex is kept as is


def test_minute_of_floors_to_the_utc_minute() -> None:
    assert minute_of(1_790_000_059_999) == 1_790_000_040 - 1_790_000_040 % 60
    assert minute_of(120_000) == 120
    assert minute_of(179_999) == 120


def test_duplicates_inside_a_batch_count_once_and_first_copy_wins() -> None:
    first = event(AdEventType.CLICK, campaign_id=3, advertiser_id=1, ts_ms=60_000, auction_id="x")
    again = msgspec.structs.replace(first, ts_ms=125_000)  # same id, a later minute
    batch = prepare_batch(messages([first, again]), {(TOPIC, 0): 0})
    assert batch.ids == [first.id]
    assert batch.rows[0][3] == 60
    assert batch.rows[0][4] == CLICK
    assert batch.duplicates_in_batch == 1
    assert batch.messages == 2
    assert batch.next_offsets == {(TOPIC, 0): 2}


def test_messages_below_the_position_or_of_other_partitions_are_skipped() -> None:
    events = generate_events(20, duplicate_rate=0)
    polled = messages(events[:10], partition=0) + messages(events[10:], partition=1)
    batch = prepare_batch(polled, {(TOPIC, 0): 4})
    assert batch.messages == 6
    assert batch.next_offsets == {(TOPIC, 0): 10}
    assert batch.ids == [event_key(e.id) for e in events[4:10]]


def test_invalid_messages_are_counted_and_still_advance_the_offset() -> None:
    good = event(AdEventType.BID, campaign_id=1, advertiser_id=1, ts_ms=0, auction_id="g")
    polled = [
        Message(TOPIC, 0, 0, None, b"not json", 0),
        Message(TOPIC, 0, 1, None, b'{"id": "x", "type": "teleport"}', 0),
        Message(TOPIC, 0, 2, None, encode(good), 0),
    ]
    batch = prepare_batch(polled, {(TOPIC, 0): 0})
    assert batch.invalid == 2
    assert len(batch) == 1
    assert batch.next_offsets == {(TOPIC, 0): 3}


def test_python_aggregation_matches_the_oracle() -> None:
    events = generate_events(500, campaigns=7, seed=3, duplicate_rate=0.2)
    batch = prepare_batch(messages(events), {(TOPIC, 0): 0})
    rows = aggregate(batch)
    got = {key: tuple(c[1:]) for key, c in rows.items()}
    assert got == expected_minutes(events)
    assert sum(v[5] for v in got.values()) > 0


def test_aggregate_keeps_only_the_given_ids() -> None:
    events = generate_events(50, seed=4, duplicate_rate=0)
    batch = prepare_batch(messages(events), {(TOPIC, 0): 0})
    keep = set(batch.ids[:10])
    rows = aggregate(batch, keep=keep)
    assert sum(c[1] + c[2] + c[3] + c[4] for c in rows.values()) <= 10
    assert rows == aggregate(prepare_batch(messages(events[:10]), {(TOPIC, 0): 0}))


def test_interleaved_partitions_each_keep_their_own_position() -> None:
    events = generate_events(30, duplicate_rate=0, seed=5)
    a = messages(events[:10], partition=0)
    b = messages(events[10:20], partition=1)
    interleaved = [a[0], a[1], b[0], a[2], b[1], b[2], a[3]]
    batch = prepare_batch(interleaved, {(TOPIC, 0): 1, (TOPIC, 1): 0})
    assert batch.start_offsets == {(TOPIC, 0): 1, (TOPIC, 1): 0}
    assert batch.next_offsets == {(TOPIC, 0): 4, (TOPIC, 1): 3}
    assert batch.ids == [event_key(events[i].id) for i in (1, 10, 2, 11, 12, 3)]


def test_ids_known_to_be_committed_are_skipped_as_duplicates() -> None:
    events = generate_events(40, duplicate_rate=0, seed=6)
    recent = RecentIds(capacity=1000)
    first = prepare_batch(messages(events[:20]), {(TOPIC, 0): 0}, recent)
    recent.add(first.ids)
    replay = prepare_batch(messages(events, first_offset=0), {(TOPIC, 0): 0}, recent)
    assert replay.duplicates_in_batch == 20
    assert replay.ids == [event_key(e.id) for e in events[20:]]


def test_recent_ids_forget_whole_old_batches_beyond_capacity() -> None:
    recent = RecentIds(capacity=10)
    recent.add([f"{i:032x}" for i in range(6)])
    recent.add([f"{i:032x}" for i in range(6, 12)])
    assert len(recent) == 6  # the first batch went
    assert f"{0:032x}" not in recent
    assert f"{11:032x}" in recent
    recent.discard([f"{11:032x}"])
    assert f"{11:032x}" not in recent


def test_out_of_range_values_are_invalid_not_fatal() -> None:
    good = event(AdEventType.BID, campaign_id=1, advertiser_id=1, ts_ms=0, auction_id="ok")
    bad = [
        msgspec.structs.replace(good, id=f"{i:032x}", **change)
        for i, change in enumerate(
            [
                {"campaign_id": 0},
                {"campaign_id": 2**63},
                {"advertiser_id": -1},
                {"spend_micros": -5},
                {"bid_micros": 10**13},
                {"ts_ms": -1},
            ]
        )
    ]
    batch = prepare_batch(messages([*bad, good]), {(TOPIC, 0): 0})
    assert batch.invalid == len(bad)
    assert batch.ids == [good.id]
    assert batch.next_offsets == {(TOPIC, 0): len(bad) + 1}
