"""Budget safety on real Redis, single node and a 6-node cluster, across three real
bidder processes (`adplatform serve bidding`) answering concurrent requests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from adplatform.bidding.budget import BudgetStore
from adplatform.bidding.budget_redis import RedisBudgetStore
from adplatform.bidding.pacing import utc_day
from adplatform.core.events import FrequencyCap
from tests.infra.kafka import KafkaBroker
from tests.infra.redis import RedisCluster, RedisServer
from tests.integration.bidding.support import BidderProcess, ThreadedSnapshotServer, start_bidders
from tests.unit.bidding.budget_contract import CHECKS
from tests.unit.bidding.factories import bid_request, bids_of, campaign, creative, snapshot

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOTAL_ONLY = 70_001  # 2.00 CPM = 2000 micros a bid; total budget: 50 impressions
TOTAL_BUDGET = 100_000
DAILY_ONLY = 70_004  # 1.50 CPM = 1500 micros; daily budget: 40 impressions
DAILY_BUDGET = 60_000
CAPPED = 70_002  # 3 impressions per user per hour
EXPIRING = 70_003  # budget for exactly one impression
RESERVATION_TIMEOUT = 4

CAMPAIGNS = [
    campaign(TOTAL_ONLY, cpm=2_000_000, total=TOTAL_BUDGET, creatives=[creative(w=320, h=480)]),
    campaign(
        DAILY_ONLY,
        cpm=1_500_000,
        total=10_000_000_000,
        daily=DAILY_BUDGET,
        creatives=[creative(w=320, h=480)],
    ),
    campaign(
        CAPPED,
        cap=FrequencyCap(impressions=3, window_seconds=3600),
        creatives=[creative(w=300, h=600)],
    ),
    campaign(EXPIRING, cpm=2_000_000, total=2000, creatives=[creative(w=970, h=250)]),
]


def _redis_env(
    kind: str, request: pytest.FixtureRequest
) -> tuple[dict[str, str], RedisBudgetStore]:
    if kind == "single":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.command("FLUSHALL")
        env = {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(server.port), "REDIS_CLUSTER": "false"}
        return env, RedisBudgetStore.connect("127.0.0.1", server.port)
    cluster: RedisCluster = request.getfixturevalue("redis_cluster")
    for node in cluster.master_nodes():
        node.command("FLUSHALL")
    host, port = cluster.startup_nodes[0]
    env = {"REDIS_HOST": host, "REDIS_PORT": str(port), "REDIS_CLUSTER": "true"}
    return env, RedisBudgetStore.connect(host, port, cluster=True)


@pytest.fixture(scope="module", params=["single", "cluster"])
def bidders(
    request: pytest.FixtureRequest, kafka_broker: KafkaBroker
) -> Iterator[tuple[str, list[BidderProcess], dict[str, str]]]:
    kind: str = request.param
    env, store = _redis_env(kind, request)
    del store
    snapshot_server = ThreadedSnapshotServer(snapshot(CAMPAIGNS))
    env |= {
        "KAFKA_BROKERS": kafka_broker.bootstrap,
        "CAMPAIGN_SERVICE_URL": snapshot_server.url,
        "BID_TIMEOUT_MS": "2000",
        "BID_RESERVATION_TIMEOUT_SECONDS": str(RESERVATION_TIMEOUT),
    }
    processes = start_bidders(3, env)
    yield kind, processes, env
    for process in processes:
        process.stop()
    snapshot_server.stop()


@pytest.fixture
async def store(
    bidders: tuple[str, list[BidderProcess], dict[str, str]],
) -> AsyncIterator[BudgetStore]:
    _, _, env = bidders
    client = RedisBudgetStore.connect(
        env["REDIS_HOST"], int(env["REDIS_PORT"]), cluster=env["REDIS_CLUSTER"] == "true"
    )
    yield client
    await client.close()


def _other(url: str, bidders: list[BidderProcess], index: int) -> str:
    """The same notice, sent to another replica than the one that bid."""
    own = next(b for b in bidders if url.startswith(b.url))
    target = bidders[(bidders.index(own) + 1 + index) % len(bidders)]
    return url.replace(own.url, target.url, 1)


async def _flood(
    bidders: list[BidderProcess],
    requests: int,
    body: Callable[[int], dict[str, Any]],
    *,
    win: bool,
    concurrency: int = 48,
) -> list[dict[str, Any]]:
    """Concurrent bid requests round-robin over the bidders; every bid wins (at its
    price) with the notice sent to another replica."""
    bids: list[dict[str, Any]] = []
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(
        max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2
    )
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def one(i: int) -> None:
            async with gate:
                bidder = bidders[i % len(bidders)]
                response = await client.post(f"{bidder.url}/openrtb2/bid", json=body(i))
                assert response.status_code in (200, 204), response.text
                for bid in bids_of(response):
                    bids.append(bid)
                    if win:
                        nurl = bid["nurl"].replace("${AUCTION_PRICE}", str(bid["price"]))
                        notice = await client.get(_other(nurl, bidders, i))
                        assert notice.status_code == 204, notice.text

        await asyncio.gather(*(one(i) for i in range(requests)))
    return bids


async def test_budget_invariant_under_concurrency_across_three_bidders(
    bidders: tuple[str, list[BidderProcess], dict[str, str]], store: BudgetStore
) -> None:
    kind, processes, _ = bidders
    size = {"id": "1", "banner": {"w": 320, "h": 480}}
    bids = await _flood(processes, 400, lambda i: bid_request(imps=[size]), win=True)
    day = utc_day(time.time())
    total = await store.view(TOTAL_ONLY, day)
    daily = await store.view(DAILY_ONLY, day)
    by_campaign = {
        cid: sum(1 for b in bids if b["cid"] == str(cid)) for cid in (TOTAL_ONLY, DAILY_ONLY)
    }
    print(
        f"\n[{kind} Redis] 400 concurrent requests over 3 bidders, every bid won:\n"
        f"  campaign {TOTAL_ONLY}: {by_campaign[TOTAL_ONLY]} bids, settled spend "
        f"{total.spent} micros, total budget {TOTAL_BUDGET} micros\n"
        f"  campaign {DAILY_ONLY}: {by_campaign[DAILY_ONLY]} bids, settled spend today "
        f"{daily.day_spent} micros, daily budget {DAILY_BUDGET} micros"
    )
    assert total.spent <= TOTAL_BUDGET
    assert daily.day_spent <= DAILY_BUDGET
    # every bid was won and settled, and the budgets were used up, not left idle
    assert total.spent == by_campaign[TOTAL_ONLY] * 2000 == TOTAL_BUDGET
    assert daily.day_spent == by_campaign[DAILY_ONLY] * 1500 == DAILY_BUDGET
    assert total.reserved == 0
    assert daily.day_reserved == 0


async def test_frequency_cap_holds_under_concurrency(
    bidders: tuple[str, list[BidderProcess], dict[str, str]],
) -> None:
    _, processes, _ = bidders
    size = {"id": "1", "banner": {"w": 300, "h": 600}}
    users = ["alice", "bob"]

    def body(i: int) -> dict[str, Any]:
        return bid_request(imps=[size], user={"id": users[i % 2]})

    bids = await _flood(processes, 120, body, win=False, concurrency=60)
    assert len(bids) == 6  # three per user, across all replicas
    ifa_only = await _flood(
        processes,
        30,
        lambda i: {**bid_request(imps=[size]), "user": None, "device": {"ifa": "device-1"}},
        win=False,
    )
    assert len(ifa_only) == 3


async def test_reservations_expire_and_release_budget(
    bidders: tuple[str, list[BidderProcess], dict[str, str]], store: BudgetStore
) -> None:
    _, processes, _ = bidders
    size = {"id": "1", "banner": {"w": 970, "h": 250}}
    async with httpx.AsyncClient(timeout=10) as client:

        async def ask(bidder: BidderProcess) -> int:
            response = await client.post(
                f"{bidder.url}/openrtb2/bid", json=bid_request(imps=[size])
            )
            return response.status_code

        assert await ask(processes[0]) == 200  # reserves the whole budget; never wins
        assert await ask(processes[1]) == 204
        view = await store.view(EXPIRING, utc_day(time.time()))
        assert (view.reserved, view.reservations) == (2000, 1)
        expired_before = sum(p.metric("bid_reservations_expired_total") for p in processes)
        await asyncio.sleep(RESERVATION_TIMEOUT + 0.5)
        assert await ask(processes[2]) == 200  # the expired reservation was released
    expired_after = sum(p.metric("bid_reservations_expired_total") for p in processes)
    assert expired_after == expired_before + 1
    view = await store.view(EXPIRING, utc_day(time.time()))
    assert (view.spent, view.reserved, view.reservations) == (0, 2000, 1)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
async def test_store_contract_on_redis(
    check: Callable[[BudgetStore, int], Awaitable[None]],
    bidders: tuple[str, list[BidderProcess], dict[str, str]],
    store: BudgetStore,
) -> None:
    await check(store, 80_000 + [c.__name__ for c in CHECKS].index(check.__name__))
