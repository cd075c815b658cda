"""Failure modes on real servers: Redis going away, hostile bid bodies (hypothesis,
over real HTTP), and production mode refusing to start without its dependencies."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.infra.common import PROJECT_ROOT
from tests.infra.kafka import KafkaBroker
from tests.infra.redis import RedisServer
from tests.integration.bidding.support import BidderProcess, ThreadedSnapshotServer
from tests.unit.bidding.factories import (
    bid_request,
    bidder_settings,
    bids_of,
    campaign,
    metric,
    running_bidder,
    snapshot,
)

pytestmark = pytest.mark.integration


async def test_redis_down_means_no_bid_not_error_and_not_ready() -> None:
    redis = RedisServer().start()
    server = ThreadedSnapshotServer(snapshot([campaign(95_001)]))
    try:
        settings = bidder_settings(server.url, redis_host="127.0.0.1", redis_port=redis.port)
        async with running_bidder(settings) as bidder:
            (bid,) = bids_of(await bidder.bid(bid_request()))
            assert (await bidder.client.get("/ready")).status_code == 200
            errors = metric("bid_requests_total", outcome="error")
            nobids = metric("bid_requests_total", outcome="nobid")
            redis.stop()
            for _ in range(5):
                response = await bidder.bid(bid_request())
                assert response.status_code == 204
            assert metric("bid_requests_total", outcome="error") == errors
            assert metric("bid_requests_total", outcome="nobid") == nobids + 5
            assert metric("bidder_budget_store_up") == 0
            ready = await bidder.client.get("/ready")
            assert ready.status_code == 503
            assert not ready.json()["checks"]["budget_store"]["ok"]
            assert (await bidder.client.get("/health/ready")).status_code == 503
            assert (await bidder.client.get("/health")).status_code == 200  # alive, not ready
            # a notice cannot be settled: the exchange is told to retry, nothing is counted
            win = await bidder.notice(bid["nurl"].replace("${AUCTION_PRICE}", "1"))
            assert win.status_code == 503
            redis.restart()
            for _ in range(50):
                if (await bidder.client.get("/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert (await bidder.client.get("/ready")).status_code == 200
            await asyncio.sleep(0.6)  # the bid path retries the store after a short pause
            assert (await bidder.bid(bid_request())).status_code == 200
            assert metric("bidder_budget_store_up") == 1
            retried = await bidder.notice(bid["nurl"].replace("${AUCTION_PRICE}", "1"))
            assert retried.status_code == 204
    finally:
        server.stop()
        redis.cleanup()


@pytest.fixture(scope="module")
def live_bidder(kafka_broker: KafkaBroker, redis_server: RedisServer) -> Iterator[BidderProcess]:
    server = ThreadedSnapshotServer(snapshot([campaign(96_001), campaign(96_002, cpm=900_000)]))
    process = BidderProcess(
        {
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(redis_server.port),
            "KAFKA_BROKERS": kafka_broker.bootstrap,
            "CAMPAIGN_SERVICE_URL": server.url,
            "BID_TIMEOUT_MS": "1000",
            "BID_CURRENCY_RATES": "EUR=1.1",
        }
    ).start()
    process.wait_ready()
    yield process
    process.stop()
    server.stop()


json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
ids = st.text(min_size=1, max_size=40) | json_value
banner = st.fixed_dictionaries(
    {},
    optional={
        "w": st.integers(-10, 2000) | json_value,
        "h": st.integers(-10, 2000) | json_value,
        "format": st.lists(
            st.fixed_dictionaries(
                {}, optional={"w": st.integers(0, 1000), "h": st.integers(0, 1000)}
            ),
            max_size=3,
        )
        | json_value,
    },
)
imp = st.fixed_dictionaries(
    {"id": ids},
    optional={
        "banner": banner | json_value,
        "bidfloor": st.floats(allow_nan=False) | json_value,
        "bidfloorcur": st.sampled_from(["USD", "EUR", "JPY", ""]) | json_value,
        "ext": json_value,
    },
)
request = st.fixed_dictionaries(
    {"id": ids, "imp": st.lists(imp, max_size=3) | json_value},
    optional={
        "site": st.fixed_dictionaries(
            {}, optional={"domain": st.text(max_size=30) | json_value, "cat": json_value}
        )
        | json_value,
        "device": st.fixed_dictionaries(
            {},
            optional={
                "devicetype": json_value,
                "os": json_value,
                "ifa": json_value,
                "geo": st.fixed_dictionaries({}, optional={"country": json_value}) | json_value,
            },
        )
        | json_value,
        "user": st.fixed_dictionaries({}, optional={"id": st.text(max_size=30) | json_value})
        | json_value,
        "tmax": json_value,
        "cur": json_value,
        "bcat": json_value,
        "badv": json_value,
        "wseat": json_value,
        "bseat": json_value,
        "ext": json_value,
    },
)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(body=request | json_value | st.binary(max_size=300))
def test_fuzzed_bid_bodies_never_get_a_500(live_bidder: BidderProcess, body: Any) -> None:
    content = body if isinstance(body, bytes) else msgspec.json.encode(body)
    response = httpx.post(
        f"{live_bidder.url}/openrtb2/bid",
        content=content,
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert response.status_code in (200, 204, 400), (response.status_code, response.text)
    if response.status_code == 400:
        error = response.json()["error"]
        assert error["code"] == "invalid_bid_request"
        assert error["message"]
    if response.status_code == 200:
        assert response.json()["seatbid"]


def test_fuzzing_did_not_count_errors(live_bidder: BidderProcess) -> None:
    assert live_bidder.metric("bid_requests_total", outcome="error") == 0
    assert live_bidder.metric("bid_requests_total", outcome="invalid") > 0


def test_production_mode_refuses_to_start_without_its_dependencies() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_HOST", "KAFKA_BROKERS", "TRACKING_SECRET", "INTERNAL_API_KEY")
    }
    result = subprocess.run(
        [str(PROJECT_ROOT / ".venv" / "bin" / "adplatform"), "serve", "bidding"],
        env={**env, "ENVIRONMENT": "production"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "REDIS_HOST, KAFKA_BROKERS, TRACKING_SECRET, INTERNAL_API_KEY" in result.stderr
