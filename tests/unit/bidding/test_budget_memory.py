"""The in-process budget store (dev mode) keeps the same contract as Redis's."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from adplatform.bidding.budget import (
    BudgetStore,
    MemoryBudgetStore,
    ReservationBatcher,
    ReserveResult,
    StoreUnavailable,
)
from tests.unit.bidding.budget_contract import CHECKS, now_ms, reservation


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
async def test_contract(check: Callable[[BudgetStore, int], Awaitable[None]]) -> None:
    await check(MemoryBudgetStore(), 42)


async def test_unavailable_store_raises() -> None:
    store = MemoryBudgetStore()
    store.available = False
    with pytest.raises(StoreUnavailable):
        await store.reserve_many([reservation(1, 10)], now_ms())
    with pytest.raises(StoreUnavailable):
        await store.ping()


class CountingStore(MemoryBudgetStore):
    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.delay = delay

    async def reserve_many(self, reservations, now_ms):  # type: ignore[no-untyped-def]
        self.calls.append(len(reservations))
        if self.delay:
            await asyncio.sleep(self.delay)
        return await super().reserve_many(reservations, now_ms)


async def test_batcher_coalesces_concurrent_submissions() -> None:
    store = CountingStore(delay=0.01)
    batcher = ReservationBatcher(store, max_in_flight=1)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    futures = [batcher.submit([reservation(7, 1)], _mono(deadline)) for _ in range(50)]
    results = await asyncio.gather(*futures)
    assert all(r == [ReserveResult.RESERVED] for r in results)
    assert store.calls == [50]
    # while one call is in flight the next submissions wait and go out together
    first = batcher.submit([reservation(7, 1)], _mono(deadline))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    later = [batcher.submit([reservation(7, 1)], _mono(deadline)) for _ in range(10)]
    await asyncio.gather(first, *later)
    assert store.calls == [50, 1, 10]


async def test_batcher_times_out_and_gives_back_late_reservations() -> None:
    store = CountingStore(delay=0.2)
    batcher = ReservationBatcher(store)
    import time

    future = batcher.submit([reservation(8, 100)], time.monotonic() + 0.05)
    assert await future is None
    await asyncio.sleep(0.3)
    await batcher.drain()
    view = await store.view(8, 0)
    assert (view.reserved, view.reservations) == (0, 0)


async def test_batcher_passes_store_errors_to_every_waiter() -> None:
    store = MemoryBudgetStore()
    store.available = False
    batcher = ReservationBatcher(store)
    import time

    futures = [batcher.submit([reservation(9, 1)], time.monotonic() + 1) for _ in range(3)]
    for outcome in await asyncio.gather(*futures, return_exceptions=True):
        assert isinstance(outcome, StoreUnavailable)


def _mono(loop_deadline: float) -> float:
    import time

    return time.monotonic() + (loop_deadline - asyncio.get_running_loop().time())
