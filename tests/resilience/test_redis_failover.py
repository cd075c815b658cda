"""A Redis Cluster master SIGKILLed while three bidders serve a flood in which every
bid wins, against a small budget (DESIGN §3, §6).

Replication is asynchronous; on loopback a replica trails its master by microseconds,
so a bare SIGKILL would almost never lose anything and the test could not fail. The
lag a real crash can hit (a slow network, a replica catching up) is made wide on
purpose: the master's link to its replica is cut (PSYNC/SYNC denied to the master's
users by ACL, the replica connection dropped) a second before the master is killed.
Whatever the master acknowledged in that second is gone once its replica is promoted.
With `REDIS_WAIT_REPLICAS=1` the bidder relied on none of it: no bid was sent on an
unconfirmed reservation and no win was acknowledged on an unconfirmed settlement, so
the money the exchange charges (every bid won) stays within the budget. Run with
`RESILIENCE_REDIS_WAIT=0` to watch the same scenario overspend.

This module starts its own 6-node cluster (it kills a node of it)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from redis.crc import key_slot

from adplatform.bidding.budget import ReserveResult
from adplatform.bidding.budget_redis import RedisBudgetStore
from adplatform.bidding.pacing import utc_day
from adplatform.core.bus import ensure_topics
from adplatform.core.events import AD_EVENTS_TOPIC, CAMPAIGN_UPDATES_TOPIC
from tests.infra.common import wait_for
from tests.infra.kafka import KafkaBroker
from tests.infra.redis import RedisCluster, RedisServer
from tests.integration.bidding.support import BidderProcess, ThreadedSnapshotServer, start_bidders
from tests.resilience.support import Flood, micros
from tests.unit.bidding.budget_contract import now_ms, reservation
from tests.unit.bidding.factories import campaign, snapshot

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CAMPAIGN = 74_001
PRICE = 1000  # micros per impression: a 1.00 CPM bid
BUDGET = 150 * PRICE
WAIT_REPLICAS = os.environ.get("RESILIENCE_REDIS_WAIT", "1")
RECOVERY_BOUND = 20.0
"""Seconds from the replica's promotion to bids and readiness being back."""


def _replicas_in_sync(cluster: RedisCluster) -> bool:
    infos = [n.command("INFO", "replication") for n in cluster.nodes if n.process is not None]
    replicas = [info for info in infos if "role:slave" in info]
    return len(replicas) == 3 and all("master_link_status:up" in info for info in replicas)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    cluster = RedisCluster().start()
    try:
        for node in cluster.nodes:  # a (re)joining replica gets its sync at once
            node.command("CONFIG", "SET", "repl-diskless-sync-delay", "0")
        wait_for(lambda: _replicas_in_sync(cluster), timeout=30, what="replicas in sync")
        yield cluster
    finally:
        cluster.cleanup()


def shard_of(cluster: RedisCluster, campaign_id: int) -> tuple[RedisServer, RedisServer]:
    """The master owning the campaign's slot, and its replica."""
    slot = key_slot(f"adp:{{{campaign_id}}}:b".encode())
    live = next(n for n in cluster.nodes if n.process is not None and n.process.poll() is None)
    by_port = {node.port: node for node in cluster.nodes}
    lines = [line.split() for line in live.command("CLUSTER", "NODES").splitlines()]
    for fields in lines:
        if "master" not in fields[2] or "fail" in fields[2]:
            continue
        for span in fields[8:]:
            low, _, high = span.partition("-")
            if int(low) <= slot <= int(high or low):
                replica = next(f for f in lines if f[3] == fields[0])
                port = int(fields[1].split("@")[0].split(":")[1])
                replica_port = int(replica[1].split("@")[0].split(":")[1])
                return by_port[port], by_port[replica_port]
    raise AssertionError(f"slot {slot} has no master")


@pytest.fixture(scope="module")
def topics(kafka_broker: KafkaBroker) -> str:
    ensure_topics([kafka_broker.bootstrap], {AD_EVENTS_TOPIC: 6, CAMPAIGN_UPDATES_TOPIC: 6})
    return kafka_broker.bootstrap


async def test_wait_vouches_only_for_writes_the_shards_replica_has(cluster: RedisCluster) -> None:
    """A paused replica (connected, not acknowledging): its shard's reservation is not
    confirmed, another shard's in the same batch is. A WAIT sent anywhere else than on
    the script's own connection would count the paused replica at once."""
    master, replica = shard_of(cluster, CAMPAIGN)
    other = next(c for c in range(74_100, 74_200) if shard_of(cluster, c)[0] is not master)
    assert replica.process is not None
    host, port = cluster.startup_nodes[0]
    # The paused replica never acknowledges, whatever the timeout; a generous one keeps a
    # busy machine from making the healthy shard's replica look late too.
    store = RedisBudgetStore.connect(host, port, cluster=True, wait_replicas=1, wait_timeout_ms=500)
    try:
        items = [reservation(CAMPAIGN, 10, total=100), reservation(other, 10, total=100)]
        os.kill(replica.process.pid, signal.SIGSTOP)
        try:
            results, _ = await store.reserve_many(items, now_ms())
        finally:
            os.kill(replica.process.pid, signal.SIGCONT)
        assert results == [ReserveResult.UNCONFIRMED, ReserveResult.RESERVED]
        await asyncio.sleep(0.2)
        again, _ = await store.reserve_many([reservation(CAMPAIGN, 10, total=100)], now_ms())
        assert again == [ReserveResult.RESERVED]
    finally:
        await store.close()
        for node in cluster.master_nodes():
            node.command("FLUSHALL")


@pytest.fixture
async def bidders(cluster: RedisCluster, topics: str) -> AsyncIterator[list[BidderProcess]]:
    master, _ = shard_of(cluster, CAMPAIGN)
    entry = next(node for node in cluster.nodes if node is not master)
    server = ThreadedSnapshotServer(snapshot([campaign(CAMPAIGN, cpm=1_000_000, total=BUDGET)]))
    env = {
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(entry.port),
        "REDIS_CLUSTER": "true",
        "REDIS_WAIT_REPLICAS": WAIT_REPLICAS,
        "REDIS_WAIT_TIMEOUT_MS": "20",
        "KAFKA_BROKERS": topics,
        "CAMPAIGN_SERVICE_URL": server.url,
        "BID_TIMEOUT_MS": "1000",
    }
    processes = start_bidders(3, env)
    yield processes
    for process in processes:
        process.stop()
    server.stop()


async def _all_ready(bidders: list[BidderProcess]) -> bool:
    async with httpx.AsyncClient(timeout=1) as client:
        try:
            answers = await asyncio.gather(*(client.get(f"{b.url}/ready") for b in bidders))
        except httpx.HTTPError:
            return False
    return all(answer.status_code == 200 for answer in answers)


async def test_master_killed_under_load_never_overspends_and_recovers(
    cluster: RedisCluster, bidders: list[BidderProcess]
) -> None:
    master, replica = shard_of(cluster, CAMPAIGN)
    flood = Flood(bidders).start()
    ready_log: list[tuple[float, bool]] = []

    async def watch_readiness() -> None:
        while True:
            ready_log.append((time.monotonic(), await _all_ready(bidders)))
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch_readiness())
    try:
        # 1. Bidding normally until part of the budget is spent.
        await flood.until(lambda: len(flood.bids(CAMPAIGN)) >= 40, 30, "first 40 bids")
        # 2. The replication link is cut: what the master takes now, only it has.
        master.command("ACL", "SETUSER", "default", "-psync", "-sync")
        master.command("CLIENT", "KILL", "TYPE", "replica")
        cut = time.monotonic()
        await asyncio.sleep(1.0)
        # 3. The master dies; its replica, a second behind, is promoted.
        master.kill()
        killed = time.monotonic()
        bids_while_cut = sum(1 for a in flood.answers if cut <= a.at <= killed and a.bids)
        promoted = await flood.until(
            lambda: "role:master" in replica.command("INFO", "replication"), 30, "promotion"
        )
        # 4. The crashed node comes back (its pod restarted) as the new master's replica.
        master.restart()
        resumed = await flood.until(
            lambda: flood.first_bid_after(promoted, CAMPAIGN) is not None,
            RECOVERY_BOUND,
            "bids resumed after the promotion",
        )
        resumed = flood.first_bid_after(promoted, CAMPAIGN) or resumed
        # 5. Bid on until the budget is used up (no bid for 1.5 s).
        await flood.until(lambda: time.monotonic() - flood.last_bid() > 1.5, 30, "budget used up")
    finally:
        await flood.stop()
        watcher.cancel()
    ready_again = next((t for t, ok in ready_log if t > promoted and ok), None)
    not_ready = [t for t, ok in ready_log if t >= killed and not ok]
    unready_for = (max(not_ready) - min(not_ready)) if not_ready else 0.0
    unacknowledged = await flood.retry_notices(20)

    day = utc_day(time.time())
    alive = next(n for n in cluster.nodes if n is not master)
    store = RedisBudgetStore.connect("127.0.0.1", alive.port, cluster=True)
    try:
        view = await store.view(CAMPAIGN, day)
    finally:
        await store.close()
    bids = flood.bids(CAMPAIGN)
    charged = sum(micros(bid) for bid in bids)  # every bid won: the exchange bills each
    acknowledged = flood.acknowledged()
    statuses = flood.statuses()
    failover = flood.statuses(killed, resumed)
    print(
        f"\n[REDIS_WAIT_REPLICAS={WAIT_REPLICAS}] {len(flood.answers)} bid requests over 3 "
        f"bidders, every bid won; master SIGKILLed {killed - cut:.1f} s after its replication "
        f"link was cut ({bids_while_cut} answers with bids in that second)\n"
        f"  budget {BUDGET} micros; bids won (charged by the exchange) {len(bids)} = "
        f"{charged} micros; settled spend in Redis {view.spent} micros (reserved "
        f"{view.reserved}); win notices acknowledged {acknowledged} micros\n"
        f"  replica promoted {promoted - killed:.1f} s after the kill; bids resumed "
        f"{resumed - promoted:.1f} s after the promotion; all bidders ready "
        f"{(ready_again - promoted) if ready_again else float('nan'):.1f} s after it "
        f"(readiness false for {unready_for:.1f} s around the failover)\n"
        f"  answers: {dict(sorted(statuses.items(), key=str))}; between kill and resumed "
        f"bids: {dict(sorted(failover.items(), key=str))}"
    )
    assert not [s for s in statuses if s is None or s >= 500], statuses  # never an error
    assert failover.get(204, 0) > 0  # the failover was answered with no-bids
    assert charged <= BUDGET, f"overspent: {charged} micros charged, budget {BUDGET}"
    assert view.spent <= BUDGET
    assert not unacknowledged, f"{len(unacknowledged)} win notices never acknowledged"
    # no acknowledged settlement was lost, and every won bid ended up settled
    assert view.spent == acknowledged == charged
    assert resumed - promoted <= RECOVERY_BOUND
    assert ready_again is not None
    assert ready_again - promoted <= RECOVERY_BOUND
