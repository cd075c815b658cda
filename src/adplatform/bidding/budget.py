"""The budget store: reservations, settlements and frequency caps (DESIGN §3).

A bid reserves its price before it is sent: atomically, spent + reserved + price must
stay within the campaign's total budget and within today's daily limit (the daily
budget, or less under even pacing), and the user must be under the frequency cap.
A win or billing notice settles the reservation at the clearing price, once per
auction and imp, whichever notice comes first. A reservation nobody settles is
released after the reservation timeout, so budget tied up by lost bids comes back.

`RedisBudgetStore` (budget_redis.py) does this in Lua on a single Redis or a Redis
Cluster; `MemoryBudgetStore` below does the same in process for `adplatform dev`
and unit tests. `ReservationBatcher` collects the reservations of all requests that
arrive in one event-loop turn into one store call: one Redis round trip for many bids.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final

from adplatform.bidding.pacing import NO_LIMIT

KEY_PREFIX: Final = "adp"


class StoreUnavailable(RuntimeError):
    """The budget store cannot be reached: the bidder answers no-bid."""


class ReserveResult(IntEnum):
    NO_BUDGET = 0
    """Total budget exhausted (counting outstanding reservations)."""
    RESERVED = 1
    CAPPED = 2
    """The user reached the frequency cap in this window."""
    DUPLICATE = 3
    """This auction and imp already hold a reservation, or were already settled."""
    DAILY_LIMIT = 4
    """Today's budget, or the even-pacing line, is reached."""
    UNCONFIRMED = 5
    """The store could not confirm the reservation: its write did not reach the
    required replicas in time (`REDIS_WAIT_REPLICAS`), or its cluster shard did not
    answer. Not a reservation as far as the bid goes (no-bid); the store hands back
    what the master did take at once, best effort, else the timeout releases it."""


class SettleResult(IntEnum):
    DUPLICATE_NOTICE = -1
    """This very notice (same type, auction, imp) was already counted."""
    ALREADY_SETTLED = 0
    """Another notice (win vs billing) settled this impression first."""
    SETTLED = 1
    REJECTED = 2
    """The reservation was released and the budget cannot take the spend any more."""


@dataclass(slots=True)
class Reservation:
    campaign_id: int
    rid: str
    """`reservation_id(auction id, imp id)`: one per impression opportunity."""
    price: int
    total_budget: int
    daily_limit: int
    day: int
    expires_ms: int
    cap_key: str | None = None
    """Frequency-cap counter suffix (hashed user and window), or None for no cap."""
    cap_limit: int = 0
    cap_ttl: int = 0


@dataclass(slots=True)
class Settlement:
    campaign_id: int
    rid: str
    notice_id: str
    """The notice's event id: a repeated notice is recognised by it."""
    clearing: int
    total_budget: int
    daily_budget: int
    day: int
    """Today (UTC days): a late settlement after release counts toward today."""
    ttl: int


@dataclass(slots=True)
class SettleOutcome:
    result: SettleResult
    amount: int = 0
    """The spend this notice's event carries (for a duplicate: what the first one had)."""
    first_ms: int = 0
    """A duplicate only: when the notice was first counted (ms since the epoch; 0 when
    the store does not know). A retry soon after means the first attempt's event may
    never have been published (its reply was lost), so it is published again."""


class WriteUnconfirmed(StoreUnavailable):
    """A settlement ran on the Redis master but did not reach the required replicas
    in time: a failover could still lose it, so the notice is not acknowledged (the
    exchange retries; the settlement is idempotent per notice). `outcome` is what the
    master answered."""

    def __init__(self, message: str, outcome: SettleOutcome) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass(slots=True)
class BudgetView:
    spent: int
    reserved: int
    day_spent: int
    day_reserved: int
    reservations: int


def cap_key(user: str, window_seconds: int, now: float) -> str:
    """The counter of one user in the current tumbling window (hashed: bounded keys)."""
    digest = hashlib.blake2b(user.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    return f"{digest}:{int(now // window_seconds)}"


def reservation_id(auction_id: str, imp_id: str) -> str:
    """One id per impression opportunity, the same on every replica, bounded in size."""
    raw = f"{auction_id}\x1f{imp_id}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(raw, digest_size=12).hexdigest()


class BudgetStore(ABC):
    """What the bidder needs from a budget store; every method may raise
    `StoreUnavailable`."""

    @abstractmethod
    async def reserve_many(
        self, reservations: Sequence[Reservation], now_ms: int
    ) -> tuple[list[ReserveResult], int]:
        """Try every reservation; returns the results in order and how many expired
        reservations were released on the way."""

    @abstractmethod
    async def settle(self, settlement: Settlement, now_ms: int) -> SettleOutcome: ...

    @abstractmethod
    async def release(self, campaign_id: int, rid: str) -> bool:
        """Give a reservation back now (loss notice, or a bid that was never sent)."""

    @abstractmethod
    async def release_expired(self, campaign_ids: Sequence[int], now_ms: int) -> int:
        """Release expired reservations of these campaigns; returns how many."""

    @abstractmethod
    async def mark_once(
        self, campaign_id: int, notice_id: str, ttl: int, now_ms: int
    ) -> int | None:
        """None the first time a notice is seen (impressions, clicks); for a repeat,
        when the first was marked (ms since the epoch; 0 when the store does not know)."""

    @abstractmethod
    async def view(self, campaign_id: int, day: int) -> BudgetView: ...

    @abstractmethod
    async def ping(self) -> None: ...

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass


# ----------------------------------------------------------------------- in-process


@dataclass
class _Held:
    price: int
    day: int
    cap: str | None
    expires_ms: int


@dataclass
class _Account:
    spent: int = 0
    reserved: int = 0
    day_spent: dict[int, int] = field(default_factory=dict)
    day_reserved: dict[int, int] = field(default_factory=dict)
    held: dict[str, _Held] = field(default_factory=dict)
    expiries: list[tuple[int, str]] = field(default_factory=list)
    caps: dict[str, tuple[int, float]] = field(default_factory=dict)
    notices: dict[str, float] = field(default_factory=dict)
    notice_marks: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Notice id -> (first seen in ms, the spend its event carried)."""
    settled: dict[str, float] = field(default_factory=dict)


class MemoryBudgetStore(BudgetStore):
    """The same rules as the Lua scripts, in one process (single-threaded: atomic)."""

    def __init__(self) -> None:
        self._accounts: dict[int, _Account] = {}
        self.available = True
        """Tests flip this to simulate an outage."""

    def _account(self, campaign_id: int) -> _Account:
        if not self.available:
            raise StoreUnavailable("in-process budget store unavailable")
        account = self._accounts.get(campaign_id)
        if account is None:
            account = self._accounts[campaign_id] = _Account()
        return account

    def _release(self, account: _Account, rid: str) -> bool:
        held = account.held.pop(rid, None)
        if held is None:
            return False
        account.reserved -= held.price
        account.day_reserved[held.day] = account.day_reserved.get(held.day, 0) - held.price
        if held.cap is not None and held.cap in account.caps:
            count, expires = account.caps[held.cap]
            account.caps[held.cap] = (max(count - 1, 0), expires)
        return True

    def _sweep(self, account: _Account, now_ms: int) -> int:
        released = 0
        heap = account.expiries
        while heap and heap[0][0] <= now_ms:
            expires, rid = heapq.heappop(heap)
            held = account.held.get(rid)
            if held is not None and held.expires_ms == expires:
                self._release(account, rid)
                released += 1
        return released

    def _forget(self, account: _Account, now_ms: int) -> None:
        """Drop expired cap counters and dedup markers (the sweeper's job)."""
        now = now_ms / 1000
        for key in [k for k, (_, exp) in account.caps.items() if exp <= now]:
            del account.caps[key]
        for table in (account.notices, account.settled):
            for key in [k for k, exp in table.items() if exp <= now]:
                del table[key]
        for key in [k for k in account.notice_marks if k not in account.notices]:
            del account.notice_marks[key]

    async def reserve_many(
        self, reservations: Sequence[Reservation], now_ms: int
    ) -> tuple[list[ReserveResult], int]:
        results: list[ReserveResult] = []
        released = 0
        swept: set[int] = set()
        for item in reservations:
            account = self._account(item.campaign_id)
            if item.campaign_id not in swept:
                swept.add(item.campaign_id)
                released += self._sweep(account, now_ms)
            results.append(self._reserve(account, item, now_ms))
        return results, released

    def _reserve(self, account: _Account, item: Reservation, now_ms: int) -> ReserveResult:
        if item.rid in account.held or item.rid in account.settled:
            return ReserveResult.DUPLICATE
        if account.spent + account.reserved + item.price > item.total_budget:
            return ReserveResult.NO_BUDGET
        day_used = account.day_spent.get(item.day, 0) + account.day_reserved.get(item.day, 0)
        if item.daily_limit != NO_LIMIT and day_used + item.price > item.daily_limit:
            return ReserveResult.DAILY_LIMIT
        if item.cap_key is not None and item.cap_limit > 0:
            count, expires = account.caps.get(item.cap_key, (0, now_ms / 1000 + item.cap_ttl))
            if count >= item.cap_limit:
                return ReserveResult.CAPPED
            account.caps[item.cap_key] = (count + 1, expires)
        account.reserved += item.price
        account.day_reserved[item.day] = account.day_reserved.get(item.day, 0) + item.price
        account.held[item.rid] = _Held(item.price, item.day, item.cap_key, item.expires_ms)
        heapq.heappush(account.expiries, (item.expires_ms, item.rid))
        return ReserveResult.RESERVED

    async def settle(self, settlement: Settlement, now_ms: int) -> SettleOutcome:
        account = self._account(settlement.campaign_id)
        self._sweep(account, now_ms)
        expires = now_ms / 1000 + settlement.ttl
        notice = settlement.notice_id
        if notice in account.notices:
            first_ms, amount = account.notice_marks.get(notice, (0, 0))
            return SettleOutcome(SettleResult.DUPLICATE_NOTICE, amount, first_ms)
        account.notices[notice] = expires
        account.notice_marks[notice] = (now_ms, 0)
        if settlement.rid in account.settled:
            return SettleOutcome(SettleResult.ALREADY_SETTLED)
        held = account.held.pop(settlement.rid, None)
        amount = settlement.clearing
        if held is not None:
            amount = min(amount, held.price)
            account.reserved -= held.price
            account.day_reserved[held.day] = account.day_reserved.get(held.day, 0) - held.price
            day = held.day
        else:
            day = settlement.day
            day_used = account.day_spent.get(day, 0) + account.day_reserved.get(day, 0)
            over_total = account.spent + account.reserved + amount > settlement.total_budget
            over_daily = (
                settlement.daily_budget != NO_LIMIT and day_used + amount > settlement.daily_budget
            )
            if over_total or over_daily:
                return SettleOutcome(SettleResult.REJECTED)
        account.spent += amount
        account.day_spent[day] = account.day_spent.get(day, 0) + amount
        account.settled[settlement.rid] = expires
        account.notice_marks[notice] = (now_ms, amount)
        return SettleOutcome(SettleResult.SETTLED, amount)

    async def release(self, campaign_id: int, rid: str) -> bool:
        return self._release(self._account(campaign_id), rid)

    async def release_expired(self, campaign_ids: Sequence[int], now_ms: int) -> int:
        released = 0
        for campaign_id in campaign_ids:
            account = self._account(campaign_id)
            released += self._sweep(account, now_ms)
            self._forget(account, now_ms)
        return released

    async def mark_once(
        self, campaign_id: int, notice_id: str, ttl: int, now_ms: int
    ) -> int | None:
        account = self._account(campaign_id)
        now = now_ms / 1000
        expires = account.notices.get(notice_id)
        if expires is not None and expires > now:
            return account.notice_marks.get(notice_id, (0, 0))[0]
        account.notices[notice_id] = now + ttl
        account.notice_marks[notice_id] = (now_ms, 0)
        return None

    async def view(self, campaign_id: int, day: int) -> BudgetView:
        account = self._account(campaign_id)
        return BudgetView(
            account.spent,
            account.reserved,
            account.day_spent.get(day, 0),
            account.day_reserved.get(day, 0),
            len(account.held),
        )

    async def ping(self) -> None:
        if not self.available:
            raise StoreUnavailable("in-process budget store unavailable")


# ------------------------------------------------------------------------ batching


Waiter = asyncio.Future["list[ReserveResult] | None"]


class ReservationBatcher:
    """Coalesces the reservations of concurrent requests into few store calls.

    Requests submitted in the same event-loop turn go out together on the next turn.
    At most `max_in_flight` calls run at once; whatever arrives meanwhile waits for a
    free slot and goes out as one batch. So under load one Redis round trip carries
    many bids (and the connection pool stays small), while at low load a request waits
    no extra time at all.

    Each submission has a deadline: one timer for all of them (a heap, not a timer per
    request) resolves late ones with None, and whatever those reserved after all is
    given back as soon as the store answers.
    """

    def __init__(self, store: BudgetStore, *, max_in_flight: int = 2) -> None:
        self.store = store
        self.max_in_flight = max_in_flight
        self._pending: list[Reservation] = []
        self._waiters: list[tuple[Waiter, int, int]] = []
        self._scheduled = False
        self._in_flight = 0
        self._deadlines: list[tuple[float, int, Waiter]] = []
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self.on_released: Callable[[int], None] = _noop
        """Called with the number of expired reservations a batch released."""
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, reservations: list[Reservation], deadline: float) -> Waiter:
        """Reserve; the future gives the results, or None if `deadline` (a
        `time.monotonic()` instant) passed first."""
        loop = asyncio.get_running_loop()
        future: Waiter = loop.create_future()
        start = len(self._pending)
        self._pending.extend(reservations)
        self._waiters.append((future, start, len(reservations)))
        when = loop.time() + (deadline - time.monotonic())
        self._seq += 1
        heapq.heappush(self._deadlines, (when, self._seq, future))
        if when < self._timer_at:
            self._arm(loop, when)
        if not self._scheduled and self._in_flight < self.max_in_flight:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._expire)
        self._timer_at = when

    def _expire(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = None
        self._timer_at = math.inf
        heap = self._deadlines
        now = loop.time()
        while heap and (heap[0][0] <= now or heap[0][2].done()):
            _, _, future = heapq.heappop(heap)
            if not future.done():
                future.set_result(None)
        if heap:
            self._arm(loop, heap[0][0])

    def _flush(self) -> None:
        self._scheduled = False
        if not self._pending or self._in_flight >= self.max_in_flight:
            return
        pending, waiters = self._pending, self._waiters
        self._pending, self._waiters = [], []
        self._in_flight += 1
        self.spawn(self._run(pending, waiters))

    async def _run(
        self, pending: list[Reservation], waiters: list[tuple[Waiter, int, int]]
    ) -> None:
        try:
            results, released = await self.store.reserve_many(pending, int(time.time() * 1000))
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else StoreUnavailable("cancelled")
            for future, _, _ in waiters:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self._in_flight -= 1
            if self._pending and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
        if released:
            self.on_released(released)
        late: list[Reservation] = []
        for future, start, count in waiters:
            mine = results[start : start + count]
            if not future.done():
                future.set_result(mine)
                continue
            late += [
                item
                for item, result in zip(pending[start : start + count], mine, strict=True)
                if result is ReserveResult.RESERVED
            ]
        if late:
            self.spawn(self._give_back(late))

    async def _give_back(self, reservations: list[Reservation]) -> None:
        """Release what requests that gave up waiting had reserved after all."""
        for item in reservations:
            try:
                await self.store.release(item.campaign_id, item.rid)
            except StoreUnavailable:
                return  # they expire on their own

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run store work in the background, kept referenced until it is done."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _noop(count: int) -> None:
    return None
