"""The request-keyed normalisation caches hold bounded memory, whatever the requests.

A cache keeps its keys and values, and a request chooses both (site.cat, bcat and badv
are the publisher's or exchange's lists): each cache is measured here at its worst,
filled with entries as large as it still accepts, and must stay within a budget."""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from adplatform.bidding import auction, index

BUDGET: int = 24 * 2**20
"""The most one cache may hold when full of the largest entries it accepts."""


def token(rng: random.Random, length: int) -> str:
    return (f"{rng.getrandbits(64):x}" * (length // 8 + 1))[:length]


def worst_keys(
    rng: random.Random, count: int, items: int, chars: int, suffix: str = ""
) -> list[tuple[str, ...]]:
    """`count` distinct keys of `items` strings of `chars` characters in all, each a
    child category (`category_closure` adds its parent too)."""
    each = max(8, chars // items - len(suffix))
    half = each // 2
    return [
        tuple(f"{token(rng, half)}-{token(rng, each - half - 1)}{suffix}" for _ in range(items))
        for _ in range(count)
    ]


def kept_per_entry(function: Callable[[Any], Any], keys: list[Any]) -> tuple[float, int]:
    """Bytes the cache keeps per call (keys included), and how many it cached."""
    lookup: Any = function
    size = lookup.cache_info().currsize
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        kept_keys = list(keys)
        keys.clear()  # the cache, not this list, is what keeps them now
        for key in kept_keys:
            function(key)
        after = tracemalloc.take_snapshot()
        del kept_keys
        released = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    del after
    kept = sum(stat.size_diff for stat in released.compare_to(before, "filename"))
    cached: int = lookup.cache_info().currsize - size
    return kept / max(cached, 1), cached


@pytest.mark.parametrize(
    ("name", "function", "items", "chars", "suffix"),
    [
        # site.cat + sectioncat + pagecat: up to 3 x 512 codes of 128 characters
        ("category closure", index._closure, (16, 32, 512), (256, 4096, 65536), ""),
        # bcat: up to 512 codes of 128 characters
        ("bcat", auction._upper_set, (64, 128, 512), (512, 16384, 65536), ""),
        # badv: up to 512 domains of 1,024 characters (hosts of up to 253 are kept)
        ("badv", auction._domain_set, (32, 128, 512), (1024, 32000, 129000), ".com"),
    ],
)
def test_request_keyed_caches_hold_bounded_memory(
    name: str,
    function: Callable[[Any], Any],
    items: tuple[int, ...],
    chars: tuple[int, ...],
    suffix: str,
) -> None:
    rng = random.Random(7)
    lookup: Any = function
    maxsize: int = lookup.cache_info().maxsize
    worst = 0.0
    for count, length in zip(items, chars, strict=True):
        keys = worst_keys(rng, 200, count, length, suffix)
        per_entry, cached = kept_per_entry(function, keys)
        if cached:
            worst = max(worst, per_entry)
    held = worst * maxsize
    print(f"{name}: {worst / 1024:.1f} KB x {maxsize} = {held / 2**20:.1f} MB")
    assert held <= BUDGET, f"{name}: {worst / 1024:.1f} KB x {maxsize} = {held / 2**20:.0f} MB"


def test_the_lists_real_requests_send_are_still_cached() -> None:
    cats = ("IAB1", "IAB1-2", "IAB12", "IAB19-4", "IAB3")
    bcat = tuple(f"IAB{n}-{m}" for n in range(7, 12) for m in range(1, 11))  # 50 codes
    badv = tuple(f"advertiser-{n}.example.com" for n in range(30))
    for function, key in (
        (index._closure, cats),
        (auction._upper_set, bcat),
        (auction._domain_set, badv),
    ):
        lookup: Any = function
        hits = lookup.cache_info().hits
        assert function(key) is function(key)
        assert lookup.cache_info().hits == hits + 1
