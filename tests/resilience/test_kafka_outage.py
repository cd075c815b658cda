"""The Kafka broker SIGKILLed and restarted while three bidders serve a flood where
every bid wins: bids go on during the outage (ad events wait in the producers'
buffers) and afterwards every bid and every acknowledged win is in `ad-events`
exactly once, by event id (DESIGN §1, §6).

This module starts its own broker (it kills it); the broker keeps its data directory
and ports across the restart, as a pod with its volume would."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from adplatform.core.bus import KafkaConsumer, ensure_topics
from adplatform.core.events import (
    AD_EVENTS_TOPIC,
    CAMPAIGN_UPDATES_TOPIC,
    AdEventType,
    ad_event_id,
    decode_ad_event,
)
from tests.infra.kafka import KafkaBroker
from tests.infra.redis import RedisServer
from tests.integration.bidding.support import ThreadedSnapshotServer, start_bidders
from tests.resilience.support import Flood
from tests.unit.bidding.factories import campaign, snapshot

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CAMPAIGN = 75_001
OUTAGE_SECONDS = 3.0


@pytest.fixture(scope="module")
def broker() -> Iterator[KafkaBroker]:
    broker = KafkaBroker().start()
    try:
        ensure_topics([broker.bootstrap], {AD_EVENTS_TOPIC: 6, CAMPAIGN_UPDATES_TOPIC: 6})
        yield broker
    finally:
        broker.cleanup()


async def _events(bootstrap: str, expected: int, timeout: float = 60) -> Counter[str]:
    """Event ids on `ad-events` (this broker holds only this test's), with counts."""
    consumer = KafkaConsumer([bootstrap], f"resilience-{uuid.uuid4().hex[:8]}", [AD_EVENTS_TOPIC])
    await consumer.start()
    seen: Counter[str] = Counter()
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = await consumer.poll(5000, 0.5)
            seen.update(decode_ad_event(message.value).id for message in batch)
            if batch:
                quiet_since = time.monotonic()
            # all there, and nothing more (no duplicate) arrives for a while
            elif sum(seen.values()) >= expected and time.monotonic() - quiet_since > 2:
                break
    finally:
        await consumer.close()
    return seen


async def test_broker_killed_and_restarted_loses_no_ad_event(
    broker: KafkaBroker, redis_server: RedisServer
) -> None:
    server = ThreadedSnapshotServer(snapshot([campaign(CAMPAIGN, cpm=1_500_000)]))
    env = {
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(redis_server.port),
        "REDIS_CLUSTER": "false",
        "KAFKA_BROKERS": broker.bootstrap,
        "CAMPAIGN_SERVICE_URL": server.url,
        "BID_TIMEOUT_MS": "1000",
    }
    bidders = start_bidders(3, env)
    try:
        flood = Flood(bidders, concurrency=12).start()
        try:
            await asyncio.sleep(1.5)
            broker.kill()
            killed = time.monotonic()
            await asyncio.sleep(OUTAGE_SECONDS)
            back_at = time.monotonic()
            await asyncio.to_thread(broker.start)  # same data directory and ports
            restarted = time.monotonic()
            await asyncio.sleep(1.5)
        finally:
            await flood.stop()
        unacknowledged = await flood.retry_notices(10)
        during = flood.statuses(killed, restarted)
        bids_during = sum(len(a.bids) for a in flood.answers if killed <= a.at <= restarted)
    finally:
        for bidder in bidders:  # SIGTERM: each flushes its producer before it exits
            bidder.stop()
        server.stop()

    bids = [(a.auction, bid["impid"]) for a in flood.answers for bid in a.bids]
    wins = [flood.won[url] for url, status in flood.notices.items() if status == 204]
    expected = {ad_event_id(a, i, AdEventType.BID) for a, i in bids} | {
        ad_event_id(a, i, AdEventType.WIN) for a, i in wins
    }
    seen = await _events(broker.bootstrap, len(expected))
    missing = expected - set(seen)
    duplicated = {event_id: n for event_id, n in seen.items() if n > 1}
    unexpected = set(seen) - expected
    statuses = flood.statuses()
    print(
        f"\nKafka SIGKILLed under 3 bidders, restarted {back_at - killed:.1f} s later, "
        f"serving again {restarted - killed:.1f} s after the kill: {len(bids)} bids and "
        f"{len(wins)} acknowledged wins; {bids_during} bids answered while it was away "
        f"({dict(sorted(during.items(), key=str))})\n"
        f"  ad-events: {len(expected)} expected, {len(seen)} distinct found, "
        f"{len(missing)} missing, {len(duplicated)} duplicated, {len(unexpected)} unexpected"
    )
    assert not [s for s in statuses if s is None or s >= 500], statuses
    assert bids_during > 0  # the bid path did not wait for Kafka
    assert not unacknowledged
    assert len(wins) == len(bids)  # every bid won, every win acknowledged
    assert not missing, f"{len(missing)} events lost"
    assert not duplicated, f"{len(duplicated)} events twice"
    assert not unexpected
