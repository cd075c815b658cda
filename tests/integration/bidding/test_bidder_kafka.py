"""The bidder on real Kafka and Redis: ad events with the right keys, and freshness
through `campaign-updates` (a paused or cut campaign stops within a second; an update
written while the snapshot is read is not lost)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from confluent_kafka import Producer

from adplatform.bidding.pacing import utc_day
from adplatform.core.bus import EventBus, KafkaConsumer, KafkaProducer, ensure_topics
from adplatform.core.events import (
    AD_EVENTS_TOPIC,
    CAMPAIGN_UPDATES_TOPIC,
    AdEvent,
    AdEventType,
    CampaignState,
    CampaignUpdate,
    decode_ad_event,
    encode,
)
from tests.infra.kafka import KafkaBroker
from tests.infra.redis import RedisServer
from tests.integration.bidding.support import ThreadedSnapshotServer
from tests.unit.bidding.factories import (
    RunningBidder,
    bid_request,
    bidder_settings,
    bids_of,
    campaign,
    creative,
    running_bidder,
    snapshot,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def topics(kafka_broker: KafkaBroker) -> str:
    ensure_topics([kafka_broker.bootstrap], {AD_EVENTS_TOPIC: 6, CAMPAIGN_UPDATES_TOPIC: 6})
    return kafka_broker.bootstrap


@pytest.fixture
def snapshot_server() -> Iterator[ThreadedSnapshotServer]:
    server = ThreadedSnapshotServer(snapshot([]))
    yield server
    server.stop()


@pytest.fixture
async def kafka_bidder(
    topics: str, redis_clean: RedisServer, snapshot_server: ThreadedSnapshotServer
) -> AsyncIterator[RunningBidder]:
    settings = bidder_settings(
        snapshot_server.url,
        redis_host="127.0.0.1",
        redis_port=redis_clean.port,
        kafka_brokers=[topics],
    )
    async with running_bidder(settings, bus=EventBus.from_brokers([topics]), wait=False) as bidder:
        yield bidder


@pytest.fixture
async def updates(topics: str) -> AsyncIterator[KafkaProducer]:
    """A long-lived `campaign-updates` publisher, like the outbox relay's.

    A fresh idempotent producer's first publish waits 0.1-1 s for its producer id
    (librdkafka retries that on a 500 ms timer): start-up, not update latency, and it
    made the one-second test fail now and then when each update had its own producer.
    """
    producer = KafkaProducer([topics])
    yield producer
    await producer.close()


async def publish_update(producer: KafkaProducer, state: CampaignState, seq: int) -> None:
    await producer.publish(
        CAMPAIGN_UPDATES_TOPIC, str(state.id), encode(CampaignUpdate(seq=seq, campaign=state))
    )


async def read_events(
    bootstrap: str, auction_ids: set[str], count: int
) -> list[tuple[bytes | None, int, AdEvent]]:
    consumer = KafkaConsumer([bootstrap], f"test-{uuid.uuid4().hex}", [AD_EVENTS_TOPIC])
    await consumer.start()
    found: list[tuple[bytes | None, int, AdEvent]] = []
    deadline = time.monotonic() + 30
    try:
        while len(found) < count and time.monotonic() < deadline:
            for message in await consumer.poll(1000, 0.5):
                event = decode_ad_event(message.value)
                if event.auction_id in auction_ids:
                    found.append((message.key, message.partition, event))
    finally:
        await consumer.close()
    return found


async def winner_of(bidder: RunningBidder, body: dict[str, Any]) -> str | None:
    bids = bids_of(await bidder.bid(body))
    return bids[0]["cid"] if bids else None


async def test_every_event_reaches_kafka_with_one_id_keyed_by_campaign(
    kafka_bidder: RunningBidder, snapshot_server: ThreadedSnapshotServer, topics: str
) -> None:
    snapshot_server.snapshot = snapshot([campaign(90_001, advertiser_id=3, cpm=2_500_000)])
    await kafka_bidder.wait_ready()
    auctions: set[str] = set()
    for _ in range(3):
        body = bid_request()
        auctions.add(body["id"])
        (bid,) = bids_of(await kafka_bidder.bid(body))
        for url in (bid["nurl"], bid["nurl"], bid["burl"]):  # the win notice twice
            response = await kafka_bidder.notice(url.replace("${AUCTION_PRICE}", "2.0"))
            assert response.status_code == 204
        adm = bid["adm"].replace("&amp;", "&")
        pixel = adm.split('<img src="')[-1].split('"')[0]
        click = adm.split('href="')[1].split('"')[0]
        assert (await kafka_bidder.notice(pixel)).status_code == 200
        assert (await kafka_bidder.notice(pixel)).status_code == 200
        assert (await kafka_bidder.notice(click)).status_code == 302
    producer = kafka_bidder.bidder.auction.producer
    assert producer is not None
    assert await producer.flush(10) == 0
    # 3 auctions x bid, win, billing, impression, click, plus the repeated win and
    # pixel of each: a repeat this soon publishes its event again, with the same id
    found = await read_events(topics, auctions, 21)
    assert len(found) == 21
    assert {key for key, _, _ in found} == {b"90001"}
    assert len({partition for _, partition, _ in found}) == 1  # one key, one partition
    once = {e.id: e for _, _, e in found}
    assert len(once) == 15
    kinds = sorted(e.type.value for e in once.values())
    assert kinds == sorted([t.value for t in AdEventType] * 3)
    repeats = sorted(e.type.value for _, _, e in found)
    assert repeats == sorted(kinds + [AdEventType.WIN.value, AdEventType.IMPRESSION.value] * 3)
    spend = sum(e.spend_micros for e in once.values())
    view = await kafka_bidder.bidder.store.view(90_001, utc_day(time.time()))
    assert spend == view.spent == 3 * 2000
    for _, _, event in found:
        assert event.advertiser_id == 3
        assert event.bid_micros == 2500
        assert event.spend_micros == (2000 if event.type is AdEventType.WIN else 0)


async def test_paused_or_cut_campaign_stops_winning_within_a_second(
    kafka_bidder: RunningBidder, snapshot_server: ThreadedSnapshotServer, updates: KafkaProducer
) -> None:
    size = [{"id": "1", "banner": {"w": 336, "h": 280}}]
    paused = campaign(90_010, version=1, cpm=4_000_000, creatives=[creative(w=336, h=280)])
    cut = campaign(90_011, version=1, cpm=3_000_000, creatives=[creative(w=336, h=280)])
    fallback = campaign(90_012, version=1, cpm=1_000_000, creatives=[creative(w=336, h=280)])
    snapshot_server.snapshot = snapshot([paused, cut, fallback])
    await kafka_bidder.wait_ready()
    assert await winner_of(kafka_bidder, bid_request(imps=size)) == "90010"
    await publish_update(updates, fallback, 0)  # warm-up; not newer, so the index ignores it

    async def seconds_until_not(campaign_id: str, state: CampaignState, seq: int) -> float:
        published = time.monotonic()  # the clock includes the broker round trip
        await publish_update(updates, state, seq)
        while time.monotonic() - published < 5:
            if await winner_of(kafka_bidder, bid_request(imps=size)) != campaign_id:
                return time.monotonic() - published
            await asyncio.sleep(0.01)
        raise AssertionError(f"campaign {campaign_id} still bidding after 5 s")

    pause = CampaignState(**{**_fields(paused), "version": 2, "status": "paused"})
    paused_after = await seconds_until_not("90010", pause, 1)
    assert await winner_of(kafka_bidder, bid_request(imps=size)) == "90011"
    # "exhausted": the budget cut below what it has already spent
    exhausted = CampaignState(**{**_fields(cut), "version": 2, "total_budget_micros": 1})
    cut_after = await seconds_until_not("90011", exhausted, 2)
    print(f"\npaused campaign stopped winning {paused_after * 1000:.0f} ms after the update")
    print(f"exhausted campaign stopped winning {cut_after * 1000:.0f} ms after the update")
    assert paused_after < 1.0
    assert cut_after < 1.0
    assert await winner_of(kafka_bidder, bid_request(imps=size)) == "90012"


def _fields(state: CampaignState) -> dict[str, Any]:
    return {name: getattr(state, name) for name in state.__struct_fields__}


async def test_an_update_written_while_the_snapshot_is_read_is_not_lost(
    kafka_bidder: RunningBidder, snapshot_server: ThreadedSnapshotServer, topics: str
) -> None:
    size = [{"id": "1", "banner": {"w": 468, "h": 60}}]
    before = campaign(90_020, version=1, cpm=4_000_000, creatives=[creative(w=468, h=60)])
    other = campaign(90_021, version=1, cpm=1_000_000, creatives=[creative(w=468, h=60)])
    snapshot_server.snapshot = snapshot([before, other])
    paused = CampaignState(**{**_fields(before), "version": 2, "status": "paused"})

    def publish_during_snapshot() -> None:
        producer = Producer({"bootstrap.servers": topics})
        producer.produce(
            CAMPAIGN_UPDATES_TOPIC, encode(CampaignUpdate(seq=7, campaign=paused)), b"90020"
        )
        assert producer.flush(10) == 0
        snapshot_server.before_answer = None

    snapshot_server.before_answer = publish_during_snapshot
    await kafka_bidder.wait_ready()
    # Readiness waits for the follower to have read every partition to its end, so
    # the update is applied by the time the bidder is ready, not some time after.
    assert kafka_bidder.bidder.index.version(90_020) == 2
    assert (await kafka_bidder.client.get("/ready")).status_code == 200
    assert await winner_of(kafka_bidder, bid_request(imps=size)) == "90021"
