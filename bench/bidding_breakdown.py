"""Where the bid path's CPU goes, stage by stage, in process (issue 3's analysis).

    .venv/bin/python bench/bidding_breakdown.py [--campaigns 10000] [--in-flight 64]

`bench/bidding.py` measures the whole server; this drives the bidder's own objects
(built by `create_app`, 10,000 synthetic campaigns, a real Redis from tests/infra, the
in-process bus with a producer that drops what it is given) on one pinned core and
prints the CPU time per request of:

- each stage of the bid logic on its own (best of three passes over 4,000 requests);
- the whole logic request after request, without I/O;
- `Auction.run` with `--in-flight` requests at once through the real reservation
  batcher and Redis, and the same with reservations granted at once (no await, no
  Redis): the difference is what the per-bid reservation costs the bidder's process.

HTTP (uvicorn, the kernel's loopback TCP) and Kafka are not in these figures; the gap
between them and `bench/bidding.py`'s CPU per request is theirs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

from adplatform.bidding import auction as auction_module  # noqa: E402
from adplatform.bidding.budget import ReserveResult  # noqa: E402
from adplatform.bidding.main import create_app  # noqa: E402
from adplatform.bidding.openrtb import BidRequest, decode_bid_request  # noqa: E402
from adplatform.bidding.pacing import utc_day  # noqa: E402
from adplatform.core.bus import EventBus, EventProducer  # noqa: E402
from adplatform.core.config import Settings  # noqa: E402
from bench.bidding import request_bodies, serve_snapshot, synthetic_campaigns  # noqa: E402

T = TypeVar("T")
CORE = 0


class DroppingProducer(EventProducer):
    """Takes events and drops them: the event is built and encoded, Kafka is not timed."""

    def send(self, topic: str, key: str | bytes | None, value: bytes) -> bool:
        return True

    async def publish(self, topic: str, key: str | bytes | None, value: bytes) -> None:
        return None

    async def flush(self, timeout: float = 10.0) -> int:
        return 0

    def pending(self) -> int:
        return 0

    async def check(self) -> None:
        return None

    async def close(self, timeout: float = 10.0) -> None:
        return None


class GrantingBatcher:
    """Grants every reservation at once: `Auction.run` without the store's round trip."""

    def submit(self, reservations: Sequence[Any], deadline: float) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result([ReserveResult.RESERVED] * len(reservations))
        return future


def per_item(function: Callable[[T], object], items: Sequence[T], passes: int = 3) -> float:
    """Least CPU microseconds per item over `passes` passes."""
    best = float("inf")
    for _ in range(passes):
        started = time.process_time()
        for item in items:
            function(item)
        best = min(best, (time.process_time() - started) / len(items))
    return best * 1e6


async def run_in_flight(auction: Any, bodies: list[bytes], in_flight: int, tag: bytes) -> float:
    """CPU microseconds per request of decode + `Auction.run`, `in_flight` at once."""

    async def worker(offset: int) -> None:
        for position in range(offset, len(bodies), in_flight):
            body = bodies[position].replace(b'"id":"a', b'"id":"' + tag)
            await auction.run(decode_bid_request(body), time.monotonic())

    started = time.process_time()
    await asyncio.gather(*(worker(i) for i in range(in_flight)))
    return (time.process_time() - started) / len(bodies) * 1e6


async def measure(redis_port: int, snapshot_url: str, in_flight: int) -> list[tuple[str, float]]:
    settings = Settings(
        environment="test",
        metrics_enabled=False,
        redis_host="127.0.0.1",
        redis_port=redis_port,
        tracking_secret="bench-secret",
        internal_api_key="bench-internal",
        campaign_service_url=snapshot_url,
        public_bidding_url="http://127.0.0.1:1",
        bid_currency_rates={"EUR": 1.08},
    )
    app = create_app(settings, bus=EventBus.from_brokers([]))
    rows: list[tuple[str, float]] = []
    async with app.router.lifespan_context(app):
        bidder = app.state.bidder
        await asyncio.wait_for(bidder.feed.loaded.wait(), 60)
        auction = bidder.auction
        auction.producer = DroppingProducer()
        bodies = [
            body.replace(b"__AUCTION_ID__", b"a%d" % i)
            for i, body in enumerate(request_bodies(4000))
        ]
        requests = [decode_bid_request(body) for body in bodies]
        now, mono = time.time(), time.monotonic()
        day, now_ms = utc_day(now), int(now * 1000)

        def choose(request: BidRequest, ctx: Any) -> list[Any]:
            used: set[int] = set()
            chosen: list[Any] = []
            for imp in request.imp:
                floor = auction._floor_cpm_micros(imp) if imp.bidfloor else 0.0
                sizes = auction_module._sizes(imp)
                if floor is None or not sizes:
                    continue
                entry = auction.index.best(sizes, ctx, floor, used)
                if entry is not None:
                    chosen.append(auction_module._Choice(imp, sizes, floor, entry))
                    used.add(entry.campaign.id)
            return chosen

        def reserve(request: BidRequest, chosen: list[Any]) -> list[Any]:
            user = auction_module._user_key(request)
            return [auction._reservation(request.id, c, user, now, day, now_ms) for c in chosen]

        def respond(request: BidRequest, chosen: list[Any]) -> object:
            return auction._respond(request, chosen, auction_module._USD, now, day)

        def whole(body: bytes) -> None:
            request = decode_bid_request(body)
            chosen = choose(request, auction_module.request_context(request, now, mono))
            if chosen:
                reserve(request, chosen)
                respond(request, chosen)

        def context_of(request: BidRequest) -> Any:
            return auction_module.request_context(request, now, mono)

        contexts = {id(r): context_of(r) for r in requests}
        chosen = {id(r): choose(r, contexts[id(r)]) for r in requests}
        bidding = [r for r in requests if chosen[id(r)]]

        rows.append(("decode and validate", per_item(decode_bid_request, bodies)))
        rows.append(("targeting context", per_item(context_of, requests)))
        rows.append(
            ("index walk (all imps)", per_item(lambda r: choose(r, contexts[id(r)]), requests))
        )
        rows.append(("reservation records", per_item(lambda r: reserve(r, chosen[id(r)]), bidding)))
        rows.append(
            ("response, signed URLs, event", per_item(lambda r: respond(r, chosen[id(r)]), bidding))
        )
        rows.append(("the whole logic, no I/O", per_item(whole, bodies)))
        rows.append(
            (
                f"Auction.run, {in_flight} in flight, Redis",
                await run_in_flight(auction, bodies, in_flight, b"r"),
            )
        )
        real_batcher = auction.batcher
        auction.batcher = GrantingBatcher()
        try:
            rows.append(
                (
                    f"Auction.run, {in_flight} in flight, granted",
                    await run_in_flight(auction, bodies, in_flight, b"g"),
                )
            )
        finally:
            auction.batcher = real_batcher
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--campaigns", type=int, default=10_000)
    parser.add_argument("--in-flight", type=int, default=64)
    args = parser.parse_args()

    from tests.infra.redis import RedisServer

    redis = RedisServer().start()
    snapshot_server, snapshot_port = serve_snapshot(synthetic_campaigns(args.campaigns))
    try:
        os.sched_setaffinity(0, {CORE})
        rows = uvloop.run(measure(redis.port, f"http://127.0.0.1:{snapshot_port}", args.in_flight))
    finally:
        snapshot_server.shutdown()
        redis.cleanup()
    print(f"\nbid path CPU per request, in process ({args.campaigns:,} campaigns, core {CORE}):")
    for label, micros in rows:
        print(f"  {label:<40} {micros:7.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
