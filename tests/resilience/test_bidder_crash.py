"""A bidder replica SIGKILLed in the middle of a flood against a small budget, where
the exchange lets about half of the bids win: the budget is never overspent, and the
reservations the crash left open (its bids that lost, its requests cut off after they
reserved) are released once `BID_RESERVATION_TIMEOUT_SECONDS` has passed, by the
surviving replicas' sweepers (DESIGN §3, §6)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator

import pytest

from adplatform.bidding.budget_redis import RedisBudgetStore
from adplatform.bidding.pacing import utc_day
from adplatform.core.bus import ensure_topics
from adplatform.core.events import AD_EVENTS_TOPIC, CAMPAIGN_UPDATES_TOPIC
from tests.infra.kafka import KafkaBroker
from tests.infra.redis import RedisServer
from tests.integration.bidding.support import BidderProcess, ThreadedSnapshotServer, start_bidders
from tests.resilience.support import Flood
from tests.unit.bidding.factories import campaign, snapshot

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CAMPAIGN = 76_001
BUDGET = 120 * 1000  # 120 impressions at a 1.00 CPM
RESERVATION_TIMEOUT = 3
RELEASE_BOUND = RESERVATION_TIMEOUT + 15
"""The timeout, then a sweep: every 5 s, for campaigns quiet for timeout + 5 s."""


@pytest.fixture
def bidders(kafka_broker: KafkaBroker, redis_server: RedisServer) -> Iterator[list[BidderProcess]]:
    ensure_topics([kafka_broker.bootstrap], {AD_EVENTS_TOPIC: 6, CAMPAIGN_UPDATES_TOPIC: 6})
    server = ThreadedSnapshotServer(snapshot([campaign(CAMPAIGN, cpm=1_000_000, total=BUDGET)]))
    env = {
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(redis_server.port),
        "REDIS_CLUSTER": "false",
        "KAFKA_BROKERS": kafka_broker.bootstrap,
        "CAMPAIGN_SERVICE_URL": server.url,
        "BID_TIMEOUT_MS": "1000",
        "BID_RESERVATION_TIMEOUT_SECONDS": str(RESERVATION_TIMEOUT),
    }
    processes = start_bidders(3, env)
    yield processes
    for process in processes:
        process.stop()
    server.stop()


async def test_killed_replica_never_overspends_and_its_reservations_come_back(
    bidders: list[BidderProcess], redis_server: RedisServer
) -> None:
    store = RedisBudgetStore.connect("127.0.0.1", redis_server.port)
    day = utc_day(time.time())
    luck = random.Random(5)
    flood = Flood(bidders, concurrency=18, wins=lambda bid: luck.random() < 0.5).start()
    try:
        await flood.until(lambda: len(flood.bids(CAMPAIGN)) >= 40, 30, "first 40 bids")
        victim = bidders[0]
        assert victim.process is not None
        victim.process.kill()  # SIGKILL: no shutdown, no release of anything
        flood.down.add(0)
        killed = time.monotonic()
        await asyncio.sleep(2.0)
    finally:
        await flood.stop()
    stopped = time.monotonic()
    unacknowledged = await flood.retry_notices(10)
    victim_bids = sum(len(a.bids) for a in flood.answers if a.bidder == 0)
    cut_off = sum(1 for a in flood.answers if a.bidder == 0 and a.status is None)
    open_at_stop = await store.view(CAMPAIGN, day)
    expired_before = sum(b.metric("bid_reservations_expired_total") for b in bidders[1:])
    released_at = None
    try:
        while time.monotonic() - stopped < RELEASE_BOUND:
            view = await store.view(CAMPAIGN, day)
            if view.reserved == 0 and view.reservations == 0:
                released_at = time.monotonic()
                break
            await asyncio.sleep(0.2)
        final = await store.view(CAMPAIGN, day)
    finally:
        await store.close()
    expired = sum(b.metric("bid_reservations_expired_total") for b in bidders[1:]) - expired_before
    acknowledged = flood.acknowledged()
    print(
        f"\nbidder SIGKILLed after {victim_bids} of its bids ({cut_off} requests cut off); "
        f"{len(flood.bids(CAMPAIGN))} bids in all, {len(flood.notices)} won\n"
        f"  at the end of the flood: spent {open_at_stop.spent}, reserved "
        f"{open_at_stop.reserved} micros in {open_at_stop.reservations} reservations; "
        f"budget {BUDGET}\n"
        f"  reserved back to 0 "
        f"{(released_at - stopped) if released_at else float('nan'):.1f} s after the flood "
        f"(timeout {RESERVATION_TIMEOUT} s), {expired:.0f} released by the survivors' "
        f"sweepers; final spend {final.spent} micros, acknowledged wins {acknowledged}"
    )
    assert killed < stopped
    assert cut_off + victim_bids > 0
    assert open_at_stop.reservations > 0  # the losing bids did leave reservations open
    assert open_at_stop.spent + open_at_stop.reserved <= BUDGET
    assert released_at is not None, f"still reserved: {final}"
    assert released_at - stopped >= RESERVATION_TIMEOUT - 0.5  # not before their timeout
    assert expired > 0
    assert final.spent <= BUDGET
    assert not unacknowledged
    assert final.spent == acknowledged  # every acknowledged win is settled spend
