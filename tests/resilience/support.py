"""A flood of bid requests over real bidder processes, playing the exchange: every bid
it chooses to win gets its win notice (at the bid price) sent to another replica, a
notice answered 503 is kept for a retry, and every answer is recorded."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.integration.bidding.support import BidderProcess
from tests.unit.bidding.factories import bid_request, bids_of


@dataclass
class Answer:
    at: float
    """`time.monotonic()` when the answer arrived."""
    bidder: int
    status: int | None
    """HTTP status, or None when the bidder could not be reached."""
    bids: list[dict[str, Any]]
    auction: str = ""
    """The bid request's id (the auction id of its events)."""


@dataclass
class Flood:
    bidders: list[BidderProcess]
    body: Callable[[], dict[str, Any]] = bid_request
    concurrency: int = 24
    wins: Callable[[dict[str, Any]], bool] = lambda bid: True
    """Which bids the exchange lets win (the others lose silently: their reservations
    stay open until the timeout releases them)."""
    answers: list[Answer] = field(default_factory=list)
    notices: dict[str, int | None] = field(default_factory=dict)
    """Win notice URL (as first sent) -> the last status it got."""
    prices: dict[str, int] = field(default_factory=dict)
    """Win notice URL -> the clearing price it carries, micros per impression."""
    won: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Win notice URL -> (auction id, imp id) of the bid it is for."""
    down: set[int] = field(default_factory=set)
    """Bidders (by index) the flood no longer sends to (killed by the test)."""
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _client: httpx.AsyncClient | None = None
    _turn: int = 0

    def start(self) -> Flood:
        limits = httpx.Limits(max_connections=self.concurrency * 3)
        self._client = httpx.AsyncClient(timeout=10, limits=limits)
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.concurrency)]
        return self

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _live(self) -> list[int]:
        return [i for i in range(len(self.bidders)) if i not in self.down]

    def _next(self) -> int:
        live = self._live()
        self._turn += 1
        return live[self._turn % len(live)]

    async def _worker(self) -> None:
        assert self._client is not None
        while not self._stop.is_set():
            index = self._next()
            bidder = self.bidders[index]
            body = self.body()
            try:
                response = await self._client.post(f"{bidder.url}/openrtb2/bid", json=body)
            except httpx.HTTPError:
                self.answers.append(Answer(time.monotonic(), index, None, [], body["id"]))
                await asyncio.sleep(0.01)
                continue
            bids = bids_of(response)
            answer = Answer(time.monotonic(), index, response.status_code, bids, body["id"])
            self.answers.append(answer)
            for bid in bids:
                if self.wins(bid):
                    url = bid["nurl"].replace("${AUCTION_PRICE}", str(bid["price"]))
                    self.notices[url] = None
                    self.prices[url] = micros(bid)
                    self.won[url] = (body["id"], bid["impid"])
                    await self._notify(url, index)
            if response.status_code != 200:
                await asyncio.sleep(0.005)  # a no-bid answers at once: do not spin

    async def _notify(self, url: str, avoid: int) -> None:
        """The notice goes to another live replica than the one that bid."""
        assert self._client is not None
        own = next(b for b in self.bidders if url.startswith(b.url))
        live = [i for i in self._live() if self.bidders[i] is not own] or self._live()
        target = self.bidders[live[(self._turn + avoid) % len(live)]]
        with contextlib.suppress(httpx.HTTPError):
            response = await self._client.get(url.replace(own.url, target.url, 1))
            self.notices[url] = response.status_code
            return
        self.notices[url] = None

    async def retry_notices(self, timeout: float) -> list[str]:
        """Re-send the notices that were not acknowledged (204), as an exchange retries,
        until all are or `timeout` passes; returns those still unacknowledged."""
        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(timeout=10, limits=limits) as client:
            self._client = client
            deadline = time.monotonic() + timeout
            while True:
                pending = [url for url, status in self.notices.items() if status != 204]
                if not pending or time.monotonic() > deadline:
                    return pending
                for url in pending:
                    await self._notify(url, 0)
                await asyncio.sleep(0.2)

    # ------------------------------------------------------------------ reading

    def bids(self, campaign_id: int | None = None) -> list[dict[str, Any]]:
        return [
            bid
            for answer in self.answers
            for bid in answer.bids
            if campaign_id is None or bid["cid"] == str(campaign_id)
        ]

    def statuses(self, since: float = 0.0, until: float = float("inf")) -> dict[int | None, int]:
        counts: dict[int | None, int] = {}
        for answer in self.answers:
            if since <= answer.at <= until:
                counts[answer.status] = counts.get(answer.status, 0) + 1
        return counts

    def acknowledged(self) -> int:
        """Micros of the win notices a bidder acknowledged (204)."""
        return sum(self.prices[url] for url, status in self.notices.items() if status == 204)

    def last_bid(self) -> float:
        return max((answer.at for answer in self.answers if answer.bids), default=0.0)

    def first_bid_after(self, moment: float, campaign_id: int) -> float | None:
        for answer in self.answers:
            if answer.at > moment and any(b["cid"] == str(campaign_id) for b in answer.bids):
                return answer.at
        return None

    async def until(self, condition: Callable[[], bool], timeout: float, what: str) -> float:
        """Wait (flooding on) until `condition()`; returns the moment it held."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout} s")
            await asyncio.sleep(0.02)
        return time.monotonic()


def micros(bid: dict[str, Any]) -> int:
    """A bid's price (CPM USD) as the micros one impression costs."""
    return round(float(bid["price"]) * 1000)
