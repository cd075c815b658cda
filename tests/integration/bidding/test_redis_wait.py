"""`REDIS_WAIT_REPLICAS` on real Redis: a reservation or settlement counts only once
its write reached the replicas, with WAIT on the script's own connection (single node:
the fast pipe and redis-py; cluster: the node owning the campaign's slot).

The replica is paused with SIGSTOP to make it miss a write: a WAIT sent on any other
connection than the script's would find nothing of its own to wait for and count the
paused replica at once, so these tests fail if WAIT is not where the write is."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import redis.asyncio as aioredis

from adplatform.bidding.budget import BudgetStore, ReserveResult, SettleResult, WriteUnconfirmed
from adplatform.bidding.budget_redis import RedisBudgetStore
from adplatform.bidding.pacing import utc_day
from adplatform.core.bus import EventBus
from adplatform.core.events import AdEventType, decode_ad_event
from tests.infra.common import wait_for
from tests.infra.redis import RedisCluster, RedisServer
from tests.integration.bidding.support import ThreadedSnapshotServer
from tests.unit.bidding.budget_contract import CHECKS, now_ms, reservation, settlement
from tests.unit.bidding.factories import (
    bid_request,
    bidder_settings,
    bids_of,
    campaign,
    metric,
    running_bidder,
    snapshot,
)

pytestmark = [pytest.mark.integration]

R = ReserveResult


def _replicating(replica: RedisServer, master: RedisServer) -> bool:
    info = replica.command("INFO", "replication")
    return f"master_port:{master.port}" in info and "master_link_status:up" in info


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[RedisServer, RedisServer]]:
    """A master and its replica, of this module only (the replica gets paused)."""
    master = RedisServer().start()
    replica = RedisServer().start()
    try:
        replica.command("REPLICAOF", "127.0.0.1", str(master.port))
        wait_for(lambda: _replicating(replica, master), timeout=20, what="replica link up")
        yield master, replica
    finally:
        if replica.process is not None and replica.process.poll() is None:
            os.kill(replica.process.pid, signal.SIGCONT)
        replica.cleanup()
        master.cleanup()


def _store(master: RedisServer, path: str, replicas: int, timeout_ms: int) -> RedisBudgetStore:
    if path == "pipe":  # what `connect` builds for a single node: the fast connection
        store = RedisBudgetStore.connect(
            "127.0.0.1", master.port, wait_replicas=replicas, wait_timeout_ms=timeout_ms
        )
        assert store.pipe is not None
        return store
    client = aioredis.Redis(host="127.0.0.1", port=master.port, socket_timeout=1.0)
    return RedisBudgetStore(
        client, cluster=False, wait_replicas=replicas, wait_timeout_ms=timeout_ms
    )


@pytest.fixture(params=["pipe", "redis-py"])
async def store(
    request: pytest.FixtureRequest, pair: tuple[RedisServer, RedisServer]
) -> AsyncIterator[RedisBudgetStore]:
    # A paused replica never confirms, whatever the timeout; a generous one keeps a busy
    # machine from making a healthy replica look late.
    client = _store(pair[0], request.param, replicas=1, timeout_ms=250)
    yield client
    await client.close()


def _replica_hash(replica: RedisServer, campaign_id: int, field: str) -> str:
    return replica.command("HGET", f"adp:{{{campaign_id}}}:b", field)


async def test_confirmed_writes_are_on_the_replica_when_acknowledged(
    store: RedisBudgetStore, pair: tuple[RedisServer, RedisServer]
) -> None:
    _, replica = pair
    cid = 71_000 + (store.pipe is None)
    item = reservation(cid, 1500, total=10_000)
    results, _ = await store.reserve_many([item], now_ms())
    assert results == [R.RESERVED]
    # WAIT returned only after the replica had it: read it there straight away
    assert _replica_hash(replica, cid, "r") == "1500"
    outcome = await store.settle(settlement(cid, item.rid, 1200, total=10_000), now_ms())
    assert (outcome.result, outcome.amount) == (SettleResult.SETTLED, 1200)
    assert (_replica_hash(replica, cid, "s"), _replica_hash(replica, cid, "r")) == ("1200", "0")


async def test_a_write_the_replica_did_not_acknowledge_is_not_relied_on(
    store: RedisBudgetStore, pair: tuple[RedisServer, RedisServer]
) -> None:
    master, replica = pair
    assert replica.process is not None
    cid = 71_010 + (store.pipe is None)
    day = utc_day(time.time())
    held = reservation(cid, 1000, total=10_000)
    assert (await store.reserve_many([held], now_ms()))[0] == [R.RESERVED]
    os.kill(replica.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        fresh = reservation(cid, 1000, total=10_000)
        refused = reservation(cid, 50_000, total=10_000)  # over budget either way
        results, _ = await store.reserve_many([fresh, refused], now_ms())
        waited = time.monotonic() - started
        assert results == [R.UNCONFIRMED, R.NO_BUDGET]
        assert waited >= 0.025  # WAIT waited out its 30 ms for the paused replica
        # Nobody bids on the unconfirmed reservation: the store hands it back at once.
        for _ in range(100):
            if (await store.view(cid, day)).reserved == 1000:
                break
            await asyncio.sleep(0.01)
        assert (await store.view(cid, day)).reserved == 1000  # only `held`
        with pytest.raises(WriteUnconfirmed) as caught:
            await store.settle(settlement(cid, held.rid, 900, total=10_000), now_ms())
        assert (caught.value.outcome.result, caught.value.outcome.amount) == (
            SettleResult.SETTLED,
            900,
        )
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)
    # Back in sync: the same settlement retried is a duplicate, a new reservation counts.
    again = await store.settle(settlement(cid, held.rid, 900, total=10_000), now_ms())
    assert again.result is SettleResult.DUPLICATE_NOTICE
    assert (await store.reserve_many([reservation(cid, 100, total=10_000)], now_ms()))[0] == [
        R.RESERVED
    ]
    assert _replica_hash(replica, cid, "s") == "900"
    assert master.ping()


async def test_a_node_without_the_replicas_never_confirms(redis_clean: RedisServer) -> None:
    store = RedisBudgetStore.connect("127.0.0.1", redis_clean.port, wait_replicas=1)
    try:
        cid = 71_020
        results, _ = await store.reserve_many([reservation(cid, 10, total=100)], now_ms())
        assert results == [R.UNCONFIRMED]
    finally:
        await store.close()  # waits for the give-back of the unconfirmed reservation
    checker = RedisBudgetStore.connect("127.0.0.1", redis_clean.port)
    try:
        view = await checker.view(cid, utc_day(time.time()))
    finally:
        await checker.close()
    assert (view.reserved, view.reservations) == (0, 0)


def _replicas_in_sync(cluster: RedisCluster) -> bool:
    """Every replica past its initial sync (a fresh cluster's masters wait
    `repl-diskless-sync-delay`, 5 s, before they send it): until then WAIT counts none."""
    infos = [node.command("INFO", "replication") for node in cluster.nodes]
    replicas = [info for info in infos if "role:slave" in info]
    return len(replicas) == cluster.masters * cluster.replicas and all(
        "master_link_status:up" in info for info in replicas
    )


async def test_cluster_waits_on_the_node_that_owns_the_slot(redis_cluster: RedisCluster) -> None:
    wait_for(lambda: _replicas_in_sync(redis_cluster), timeout=30, what="replicas in sync")
    host, port = redis_cluster.startup_nodes[0]
    one = RedisBudgetStore.connect(host, port, cluster=True, wait_replicas=1, wait_timeout_ms=250)
    two = RedisBudgetStore.connect(host, port, cluster=True, wait_replicas=2, wait_timeout_ms=5)
    try:
        # Campaigns on all three shards in one batch; each master has one replica.
        items = [reservation(72_000 + i, 100, total=10_000) for i in range(12)]
        results, _ = await one.reserve_many(items, now_ms())
        assert results == [R.RESERVED] * 12
        outcome = await one.settle(settlement(72_000, items[0].rid, 80, total=10_000), now_ms())
        assert outcome.result is SettleResult.SETTLED
        # Two replicas are more than any master has: nothing can be confirmed.
        more = [reservation(72_100 + i, 100, total=10_000) for i in range(6)]
        results, _ = await two.reserve_many(more, now_ms())
        assert results == [R.UNCONFIRMED] * 6
        with pytest.raises(WriteUnconfirmed):
            await two.settle(settlement(72_001, items[1].rid, 80, total=10_000), now_ms())
    finally:
        await one.close()
        await two.close()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
async def test_store_contract_holds_with_wait(
    check: Callable[[BudgetStore, int], Awaitable[None]], store: RedisBudgetStore
) -> None:
    offset = 0 if store.pipe is not None else 100
    await check(store, 73_000 + offset + [c.__name__ for c in CHECKS].index(check.__name__))


async def test_the_bidder_no_bids_what_redis_cannot_confirm_and_503s_such_a_win(
    pair: tuple[RedisServer, RedisServer],
) -> None:
    master, replica = pair
    assert replica.process is not None
    server = ThreadedSnapshotServer(snapshot([campaign(71_100, cpm=2_000_000)]))
    bus = EventBus.from_brokers([])
    assert bus.memory is not None
    settings = bidder_settings(
        server.url,
        redis_host="127.0.0.1",
        redis_port=master.port,
        redis_wait_replicas=1,
        redis_wait_timeout_ms=250,
    )
    try:
        async with running_bidder(settings, bus=bus) as bidder:
            (bid,) = bids_of(await bidder.bid(bid_request()))
            win = bid["nurl"].replace("${AUCTION_PRICE}", "1.5")
            unconfirmed = metric("bid_reservations_unconfirmed_total")
            os.kill(replica.process.pid, signal.SIGSTOP)
            try:
                response = await bidder.bid(bid_request())
                assert response.status_code == 204  # a no-bid, not an error
                assert metric("bid_reservations_unconfirmed_total") == unconfirmed + 1
                assert (await bidder.client.get("/ready")).status_code == 200  # Redis answers
                assert (await bidder.notice(win)).status_code == 503  # exchange: retry it
            finally:
                os.kill(replica.process.pid, signal.SIGCONT)
            assert (await bidder.notice(win)).status_code == 204  # the retry is acknowledged
            assert bids_of(await bidder.bid(bid_request()))  # and bidding is back
            producer = bidder.bidder.notices.producer
            assert producer is not None
            await producer.flush()
        wins = [
            event
            for event in map(decode_ad_event, (m.value for m in bus.memory.messages("ad-events")))
            if event.type is AdEventType.WIN
        ]
        # One event (one id): published by the attempt the master settled, and again by
        # the retry (a duplicate that soon publishes its event once more, in case the
        # first never went out); analytics counts the id once.
        assert {(w.id, w.auction_id, w.spend_micros) for w in wins} == {
            (wins[0].id, wins[0].auction_id, 1500)
        }
    finally:
        server.stop()
