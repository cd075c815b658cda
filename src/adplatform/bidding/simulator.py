"""An exchange simulator: realistic, varied OpenRTB 2.6 traffic at a given rate.

It sends bid requests shaped like a real exchange's (sites and apps, countries,
device types and operating systems, IAB categories, banner sizes and `format` lists,
floors in USD and sometimes EUR, block lists, a few multi-imp requests, unknown
fields and `ext` objects), and for a share of the bids it plays the rest of the
auction: a loss notice, or a win notice with `${AUCTION_PRICE}` replaced by a clearing
price at or below the bid, then the billing notice, the impression pixel and sometimes
a click. `adplatform simulate` shows live counts; `adplatform dev` runs it quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import msgspec

SIZES: Final = [
    ((300, 250), 30),
    ((728, 90), 15),
    ((320, 50), 20),
    ((160, 600), 6),
    ((300, 600), 8),
    ((970, 250), 5),
    ((336, 280), 6),
    ((468, 60), 3),
    ((320, 100), 7),
    # the long tail: sizes few campaigns carry
    ((250, 250), 4),
    ((120, 600), 3),
    ((970, 90), 3),
]
COUNTRIES: Final = [
    ("USA", 35),
    ("GBR", 10),
    ("DEU", 9),
    ("FRA", 8),
    ("CAN", 6),
    ("BRA", 6),
    ("IND", 6),
    ("JPN", 5),
    ("AUS", 4),
    ("ESP", 4),
    ("ITA", 4),
    ("MEX", 3),
    # the long tail of an exchange's traffic: markets few campaigns buy
    *[
        (code, 2)
        for code in (
            "ARG",
            "CHL",
            "COL",
            "PER",
            "NGA",
            "KEN",
            "EGY",
            "ZAF",
            "TUR",
            "POL",
            "UKR",
            "ROU",
            "VNM",
            "THA",
            "IDN",
            "PHL",
            "MYS",
            "PAK",
            "BGD",
            "SAU",
        )
    ],
]
DEVICES: Final = [  # (devicetype, os choices, weight)
    (4, ["iOS", "Android"], 45),
    (2, ["Windows", "macOS", "Linux"], 35),
    (5, ["iOS", "Android"], 12),
    (3, ["Android", "tvOS"], 5),
    (1, ["Android"], 3),
]
CATEGORIES: Final = [f"IAB{i}" for i in range(1, 27)]
DOMAINS: Final = [
    "news.example.com",
    "sports.example.org",
    "weather.example.net",
    "recipes.example.com",
    "techdaily.example.io",
    "travel.example.co.uk",
    "finance.example.com",
    "games.example.net",
    "autos.example.de",
    "music.example.fr",
]
BUNDLES: Final = [
    "com.example.puzzle",
    "com.example.news",
    "com.example.fitness",
    "com.example.chat",
]
ADVERTISER_BLOCKS: Final = ["competitor.example", "casino.example", "pharma.example"]

WIN_SHARE: Final = 0.55
BILLING_SHARE: Final = 0.9
IMPRESSION_SHARE: Final = 0.95
CLICK_SHARE: Final = 0.04
LOSS_NOTICE_SHARE: Final = 0.8

_IMP_URL = re.compile(r'<img src="([^"]+/t/imp\?[^"]+)"')
_CLICK_URL = re.compile(r'href="([^"]+/t/click\?[^"]+)"')


def _pick(rng: random.Random, weighted: list[tuple[Any, int]]) -> Any:
    values, weights = zip(*weighted, strict=True)
    return rng.choices(values, weights)[0]


class TrafficGenerator:
    """Bid request bodies drawn from realistic distributions (seeded: reproducible)."""

    def __init__(self, seed: int | None = None, *, users: int = 5000) -> None:
        self.rng = random.Random(seed)
        self.users = [uuid.UUID(int=self.rng.getrandbits(128)).hex for _ in range(users)]

    def imp(self, index: int) -> dict[str, Any]:
        rng = self.rng
        w, h = _pick(rng, SIZES)
        banner: dict[str, Any] = {"w": w, "h": h, "pos": rng.choice([0, 1, 3])}
        if rng.random() < 0.25:
            extra = [_pick(rng, SIZES) for _ in range(rng.randint(1, 3))]
            banner["format"] = [{"w": fw, "h": fh} for fw, fh in {(w, h), *extra}]
        imp: dict[str, Any] = {"id": str(index + 1), "banner": banner, "secure": 1}
        roll = rng.random()
        if roll < 0.55:
            imp["bidfloor"] = round(rng.uniform(0.05, 2.5), 2)
            if rng.random() < 0.08:
                imp["bidfloorcur"] = "EUR"
        if rng.random() < 0.3:
            imp["ext"] = {"gpid": f"/slot/{rng.randint(1, 50)}", "data": {"pbadslot": "x"}}
        return imp

    def request(self) -> dict[str, Any]:
        rng = self.rng
        country = _pick(rng, COUNTRIES)
        devicetype, systems, _ = rng.choices(DEVICES, [d[2] for d in DEVICES])[0]
        imps = [self.imp(i) for i in range(rng.choices([1, 2, 3], [85, 11, 4])[0])]
        categories = rng.sample(CATEGORIES, rng.randint(1, 2))
        if rng.random() < 0.4:
            categories.append(f"{categories[0]}-{rng.randint(1, 8)}")
        body: dict[str, Any] = {
            "id": uuid.UUID(int=rng.getrandbits(128)).hex,
            "imp": imps,
            "device": {
                "ua": "Mozilla/5.0 (simulated)",
                "ip": f"203.0.113.{rng.randint(1, 254)}",
                "devicetype": devicetype,
                "os": rng.choice(systems),
                "geo": {"country": country, "type": 2},
            },
            "user": {"id": rng.choice(self.users)},
            "at": rng.choice([1, 2]),
            "tmax": rng.choice([80, 100, 120, 150, 200, 300]),
            "cur": ["USD"],
            "source": {"fd": 1, "tid": uuid.UUID(int=rng.getrandbits(128)).hex},
            "regs": {"coppa": 0, "gdpr": int(country in ("DEU", "FRA", "ESP", "ITA"))},
            "ext": {"exchange": "simulator", "schain": {"complete": 1, "nodes": []}},
        }
        if rng.random() < 0.7:
            domain = rng.choice(DOMAINS)
            body["site"] = {
                "id": domain.split(".")[0],
                "domain": domain,
                "page": f"https://{domain}/article/{rng.randint(1, 10_000)}",
                "cat": categories,
                "publisher": {"id": f"pub-{rng.randint(1, 40)}"},
            }
        else:
            bundle = rng.choice(BUNDLES)
            body["app"] = {
                "id": bundle,
                "bundle": bundle,
                "cat": categories,
                "publisher": {"id": f"pub-{rng.randint(1, 40)}"},
            }
        if devicetype in (1, 4, 5) and rng.random() < 0.5:
            body["device"]["ifa"] = uuid.UUID(int=rng.getrandbits(128)).hex
        if rng.random() < 0.3:
            body["bcat"] = rng.sample(CATEGORIES, 2)
        if rng.random() < 0.2:
            body["badv"] = rng.sample(ADVERTISER_BLOCKS, 1)
        if rng.random() < 0.05:
            body["cur"] = ["EUR", "USD"]
        return body


@dataclass
class SimulationStats:
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    requests: int = 0
    bids: int = 0
    nobids: int = 0
    invalid: int = 0
    errors: int = 0
    wins: int = 0
    billings: int = 0
    impressions: int = 0
    clicks: int = 0
    losses: int = 0
    notice_errors: int = 0
    spend_micros: int = 0
    latencies: list[float] = field(default_factory=list)

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def percentile(self, share: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies[-50_000:])
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    def rows(self) -> list[tuple[str, str]]:
        rate = self.requests / self.elapsed if self.elapsed > 0 else 0.0
        bid_share = self.bids / self.requests * 100 if self.requests else 0.0
        return [
            ("elapsed", f"{self.elapsed:.1f} s"),
            ("bid requests", f"{self.requests} ({rate:.1f}/s)"),
            ("bids", f"{self.bids} ({bid_share:.1f}%)"),
            ("no-bids", str(self.nobids)),
            ("invalid / errors", f"{self.invalid} / {self.errors}"),
            ("latency p50 / p99", f"{self.percentile(0.5):.1f} / {self.percentile(0.99):.1f} ms"),
            ("wins / losses", f"{self.wins} / {self.losses}"),
            ("billing notices", str(self.billings)),
            ("impressions / clicks", f"{self.impressions} / {self.clicks}"),
            ("notice errors", str(self.notice_errors)),
            ("spend (clearing)", f"${self.spend_micros / 1_000_000:,.4f}"),
        ]

    def describe(self) -> str:
        width = max(len(name) for name, _ in self.rows())
        return "\n".join(f"{name:<{width}}  {value}" for name, value in self.rows())


class _Simulator:
    def __init__(self, bidder_url: str, rate: float, concurrency: int, seed: int | None) -> None:
        self.url = bidder_url.rstrip("/") + "/openrtb2/bid"
        self.rate = rate
        self.generator = TrafficGenerator(seed)
        self.rng = random.Random(None if seed is None else seed + 1)
        self.stats = SimulationStats()
        self.slots = asyncio.Semaphore(concurrency)
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(2.0),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self.tasks: set[asyncio.Task[None]] = set()
        self.encoder = msgspec.json.Encoder()

    async def one(self) -> None:
        stats = self.stats
        body = self.encoder.encode(self.generator.request())
        start = time.perf_counter()
        try:
            response = await self.client.post(
                self.url,
                content=body,
                headers={"content-type": "application/json", "x-openrtb-version": "2.6"},
            )
        except httpx.HTTPError:
            stats.errors += 1
            return
        finally:
            stats.requests += 1
            stats.latencies.append((time.perf_counter() - start) * 1000)
            if len(stats.latencies) > 100_000:
                del stats.latencies[:50_000]
        if response.status_code == 204:
            stats.nobids += 1
            return
        if response.status_code == 400:
            stats.invalid += 1
            return
        if response.status_code != 200:
            stats.errors += 1
            return
        stats.bids += 1
        try:
            payload = response.json()
        except ValueError:
            stats.errors += 1
            return
        for seat in payload.get("seatbid", []):
            for bid in seat.get("bid", []):
                await self.play(bid)

    async def play(self, bid: dict[str, Any]) -> None:
        """The rest of one bid's life: lost, or won, billed, shown and maybe clicked."""
        stats = self.stats
        rng = self.rng
        if rng.random() >= WIN_SHARE:
            lurl = bid.get("lurl")
            if lurl and rng.random() < LOSS_NOTICE_SHARE and await self.notice(lurl):
                stats.losses += 1
            return
        price = float(bid["price"]) * rng.uniform(0.5, 1.0)
        text = f"{price:.6f}"
        if bid.get("nurl") and await self.notice(bid["nurl"].replace("${AUCTION_PRICE}", text)):
            stats.wins += 1
            stats.spend_micros += round(price * 1000)
        burl = bid.get("burl")
        if (
            burl
            and rng.random() < BILLING_SHARE
            and await self.notice(burl.replace("${AUCTION_PRICE}", text))
        ):
            stats.billings += 1
        adm = bid.get("adm") or ""
        pixel = _IMP_URL.search(adm)
        if pixel and rng.random() < IMPRESSION_SHARE:
            if await self.notice(html.unescape(pixel.group(1))):
                stats.impressions += 1
            link = _CLICK_URL.search(adm)
            if (
                link
                and rng.random() < CLICK_SHARE
                and await self.notice(html.unescape(link.group(1)))
            ):
                stats.clicks += 1

    async def notice(self, url: str) -> bool:
        try:
            response = await self.client.get(url)
        except httpx.HTTPError:
            self.stats.notice_errors += 1
            return False
        if response.status_code >= 400:
            self.stats.notice_errors += 1
            return False
        return True

    async def guarded(self) -> None:
        try:
            await self.one()
        except Exception:
            self.stats.errors += 1
        finally:
            self.slots.release()

    async def run(self, duration: float | None) -> None:
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        end = None if duration is None else next_at + duration
        while end is None or time.monotonic() < end:
            await self.slots.acquire()
            task = asyncio.create_task(self.guarded())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:
                next_at = time.monotonic()  # behind by a second: do not burst to catch up
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.client.aclose()
        self.stats.finished = time.monotonic()


def _table(stats: SimulationStats, url: str) -> Any:
    from rich.table import Table

    table = Table(title=f"exchange simulator → {url}", show_header=False, min_width=56)
    table.add_column("what", style="bold")
    table.add_column("count", justify="right")
    for name, value in stats.rows():
        table.add_row(name, value)
    return table


async def simulate(
    bidder_url: str,
    *,
    rate: float,
    duration: float | None,
    concurrency: int = 32,
    show_progress: bool = True,
    seed: int | None = None,
) -> SimulationStats:
    """Send traffic at `rate` requests/s for `duration` seconds (None: until cancelled)."""
    if rate <= 0:
        raise ValueError("rate must be > 0")
    # One INFO line per request would drown `adplatform dev`'s console.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    simulator = _Simulator(bidder_url, rate, concurrency, seed)
    try:
        if not show_progress:
            await simulator.run(duration)
        else:
            from rich.live import Live

            with Live(_table(simulator.stats, bidder_url), refresh_per_second=4) as live:
                runner = asyncio.create_task(simulator.run(duration))
                while not runner.done():
                    await asyncio.wait({runner}, timeout=0.25)
                    live.update(_table(simulator.stats, bidder_url))
                await runner
    finally:
        with contextlib.suppress(Exception):
            await simulator.close()
    return simulator.stats
