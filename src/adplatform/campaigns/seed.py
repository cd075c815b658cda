"""Demo and load data: advertisers, campaigns and creatives a bidder can actually bid on.

`adplatform dev` seeds `DEMO_CAMPAIGNS` into an empty database; `adplatform seed
--campaigns 100000` makes load-test data. The data is deterministic (a fixed random
seed) and realistic: mostly active campaigns with flights around today, budgets from
hundreds to hundreds of thousands of dollars, and varied targeting (ISO-3166 alpha-3
countries, OpenRTB device types, OS, IAB categories, the common banner sizes), so the
exchange simulator's traffic finds matches but not every campaign matches everything.

Rows go in with multi-row inserts in chunks of `CHUNK` campaigns, one transaction per
chunk, each with the outbox rows of its campaigns (so running bidders receive the new
campaigns over `campaign-updates`, and the snapshot covers them as well).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from adplatform.campaigns.models import Advertiser, Campaign, Creative, OutboxRow
from adplatform.campaigns.service import OUTBOX_LOCK_KEY
from adplatform.campaigns.state import campaign_state
from adplatform.core.auth import ApiKey, generate_api_key
from adplatform.core.db import create_engine, is_sqlite
from adplatform.core.events import encode

DEMO_CAMPAIGNS: Final = 40
CHUNK: Final = 1000
RANDOM_SEED: Final = 20_261_201
SIZES: Final = ("300x250", "728x90", "320x50", "160x600", "300x600")

# (brand, domain, IAB vertical, related content categories)
BRANDS: Final = (
    (
        "Northwind Outfitters",
        "northwind-outfitters.example",
        "IAB17",
        ("IAB17", "IAB17-12", "IAB17-33"),
    ),
    ("Bluefin Travel", "bluefin-travel.example", "IAB20", ("IAB20", "IAB20-3", "IAB20-18")),
    ("Contoso Motors", "contoso-motors.example", "IAB2", ("IAB2", "IAB2-10", "IAB2-23")),
    ("Fabrikam Finance", "fabrikam-finance.example", "IAB13", ("IAB13", "IAB13-7", "IAB3")),
    ("Tailspin Games", "tailspin-games.example", "IAB9", ("IAB9-30", "IAB1", "IAB19")),
    ("Litware Software", "litware.example", "IAB19", ("IAB19", "IAB19-18", "IAB3-4")),
    ("Adventure Works Cycles", "adventure-works.example", "IAB17", ("IAB17-2", "IAB17", "IAB7-1")),
    ("Wide World Importers", "wideworld-importers.example", "IAB22", ("IAB22", "IAB22-2")),
    ("Proseware Learning", "proseware.example", "IAB5", ("IAB5", "IAB5-6", "IAB4")),
    ("Lucerne Publishing", "lucerne-publishing.example", "IAB1", ("IAB1-1", "IAB1", "IAB12")),
    ("Margie's Kitchen", "margies-kitchen.example", "IAB8", ("IAB8", "IAB8-9", "IAB8-5")),
    ("Trey Research Health", "trey-health.example", "IAB7", ("IAB7", "IAB7-32", "IAB7-1")),
    ("Coho Winery", "coho-winery.example", "IAB8", ("IAB8-18", "IAB8")),
    ("Alpine Ski House", "alpine-ski-house.example", "IAB17", ("IAB17-27", "IAB20")),
    ("Graphic Design Institute", "gdi.example", "IAB5", ("IAB5", "IAB1-3", "IAB9-2")),
    ("Humongous Insurance", "humongous-insurance.example", "IAB13", ("IAB13-5", "IAB13")),
    ("Woodgrove Bank", "woodgrove-bank.example", "IAB13", ("IAB13", "IAB13-1", "IAB13-4")),
    ("Relecloud Streaming", "relecloud.example", "IAB1", ("IAB1-5", "IAB1-7", "IAB1-6")),
    ("First Up Consultants", "firstup.example", "IAB3", ("IAB3", "IAB3-9", "IAB4-5")),
    ("Southridge Video", "southridge-video.example", "IAB1", ("IAB1-7", "IAB1-5")),
    ("Fourth Coffee", "fourth-coffee.example", "IAB8", ("IAB8-6", "IAB8")),
    ("Blue Yonder Airlines", "blueyonder-air.example", "IAB20", ("IAB20-1", "IAB20")),
    ("VanArsdel Home", "vanarsdel-home.example", "IAB10", ("IAB10", "IAB10-4", "IAB10-7")),
    ("Munson's Pickles", "munsons.example", "IAB8", ("IAB8", "IAB8-1")),
)
THEMES: Final = (
    "Spring Sale",
    "Summer Launch",
    "Back to School",
    "Black Friday",
    "Holiday Gifts",
    "New Year Deals",
    "Brand Awareness",
    "Retargeting",
    "App Install",
    "Loyalty Push",
    "Clearance",
    "Product Launch",
)
REGIONS: Final = (
    ("USA",),
    ("USA", "CAN"),
    ("GBR", "IRL"),
    ("DEU", "AUT", "CHE"),
    ("FRA", "BEL", "LUX"),
    ("ESP", "PRT", "ITA"),
    ("AUS", "NZL"),
    ("BRA", "MEX", "ARG"),
    ("JPN",),
    ("IND",),
    ("USA", "GBR", "CAN", "AUS"),
)
REGION_ZONES: Final = {
    "USA": "America/New_York",
    "GBR": "Europe/London",
    "DEU": "Europe/Berlin",
    "FRA": "Europe/Paris",
    "ESP": "Europe/Madrid",
    "AUS": "Australia/Sydney",
    "BRA": "America/Sao_Paulo",
    "JPN": "Asia/Tokyo",
    "IND": "Asia/Kolkata",
}
DEVICE_GROUPS: Final = ((2,), (1, 4, 5), (4,), (3, 7), (1, 2, 4, 5))
MOBILE_OS: Final = (("ios",), ("android",), ("android", "ios"))
DESKTOP_OS: Final = (("windows",), ("macos", "windows"))
BLOCKLISTS: Final = (
    ("clickfarm.example", "spammy-news.example"),
    ("piracy-site.example",),
    ("made-for-ads.example", "clickfarm.example"),
)
ALLOWLISTS: Final = (
    ("daily-planet.example", "metro-news.example", "sportsdesk.example"),
    ("recipes-daily.example", "homecook.example"),
)


@dataclass
class SeedResult:
    advertisers: int = 0
    campaigns: int = 0
    active_campaigns: int = 0
    creatives: int = 0
    api_keys: list[str] = field(default_factory=list)
    """Plaintext keys of the created advertisers, in creation order (shown once)."""
    advertiser_names: list[str] = field(default_factory=list)
    existing_campaigns: int | None = None
    """Set when `only_if_empty` found data and seeded nothing."""
    seconds: float = 0.0

    def describe(self) -> str:
        if self.existing_campaigns is not None:
            return f"the database already has {self.existing_campaigns} campaigns; nothing seeded"
        lines = [
            f"seeded {self.advertisers} advertisers, {self.campaigns} campaigns "
            f"({self.active_campaigns} active) and {self.creatives} creatives "
            f"in {self.seconds:.1f}s"
        ]
        if self.api_keys:
            lines.append("advertiser API keys (header X-API-Key; shown only now):")
            shown = list(zip(self.advertiser_names, self.api_keys, strict=True))[:5]
            lines += [f"  {name}: {key}" for name, key in shown]
            if len(self.api_keys) > len(shown):
                lines.append(f"  ... and {len(self.api_keys) - len(shown)} more")
        return "\n".join(lines)


class _Generator:
    """Deterministic realistic rows (no I/O)."""

    def __init__(self, now: datetime) -> None:
        self.rng = random.Random(RANDOM_SEED)
        self.now = now.replace(minute=0, second=0, microsecond=0)

    def advertiser_name(self, index: int) -> tuple[str, str, int]:
        brand = index % len(BRANDS)
        name, domain, _, _ = BRANDS[brand]
        cycle = index // len(BRANDS)
        if cycle:
            name = f"{name} {cycle + 1}"
            stem, tld = domain.rsplit(".", 1)
            domain = f"{stem}-{cycle + 1}.{tld}"
        return name, domain, brand

    def status(self) -> str:
        roll = self.rng.random()
        if roll < 0.80:
            return "active"
        if roll < 0.88:
            return "paused"
        if roll < 0.95:
            return "draft"
        return "completed"

    def targeting(self) -> dict[str, Any]:
        rng = self.rng
        region = rng.choice(REGIONS) if rng.random() < 0.7 else ()
        devices = rng.choice(DEVICE_GROUPS) if rng.random() < 0.6 else ()
        os: tuple[str, ...] = ()
        if rng.random() < 0.4 and devices:
            os = rng.choice(DESKTOP_OS if devices == (2,) else MOBILE_OS)
        hours: list[int] = []
        timezone = "UTC"
        if rng.random() < 0.15:
            hours = list(range(7, 23))
            timezone = REGION_ZONES.get(region[0], "UTC") if region else "UTC"
        return {
            "countries": list(region),
            "device_types": sorted(devices),
            "os": list(os),
            "categories": [],
            "domains_allow": list(rng.choice(ALLOWLISTS)) if rng.random() < 0.05 else [],
            "domains_block": list(rng.choice(BLOCKLISTS)) if rng.random() < 0.4 else [],
            "sizes": sorted(rng.sample(SIZES, rng.randint(2, 4))) if rng.random() < 0.5 else [],
            "hours": hours,
            "timezone": timezone,
        }

    def campaign(self, index: int, advertiser_id: int, brand: int) -> dict[str, Any]:
        rng = self.rng
        status = self.status()
        days = rng.randint(21, 120)
        if status == "completed":
            start = self.now - timedelta(days=days + rng.randint(5, 60))
        elif status == "draft":
            start = self.now + timedelta(days=rng.randint(1, 30))
        else:
            start = self.now - timedelta(days=rng.randint(0, 20), hours=rng.randint(0, 23))
        end = start + timedelta(days=days) if status == "completed" or rng.random() < 0.9 else None
        total_usd = rng.choice((500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000))
        daily_usd = max(10, min(total_usd, math.ceil(total_usd / days * rng.uniform(1.1, 2.0))))
        targeting = self.targeting()
        _, _, _, categories = BRANDS[brand]
        if rng.random() < 0.4:
            targeting["categories"] = sorted(
                rng.sample(categories, rng.randint(1, len(categories)))
            )
        capped = rng.random() < 0.5
        theme = THEMES[index % len(THEMES)]
        return {
            "advertiser_id": advertiser_id,
            "name": f"{theme} {start.year} #{index + 1}",
            "status": status,
            "total_budget_micros": total_usd * 1_000_000,
            "daily_budget_micros": daily_usd * 1_000_000,
            "max_bid_cpm_micros": rng.randint(5, 120) * 100_000,
            "pacing": "even" if rng.random() < 0.7 else "asap",
            "flight_start": start,
            "flight_end": end,
            "frequency_cap_impressions": rng.randint(3, 12) if capped else None,
            "frequency_cap_window_seconds": rng.choice((3_600, 86_400)) if capped else None,
            "targeting": targeting,
            "version": 1,
            "created_at": self.now,
            "updated_at": self.now,
        }

    def creatives(
        self, campaign: dict[str, Any], campaign_id: int, domain: str, brand: int
    ) -> Iterator[dict[str, Any]]:
        rng = self.rng
        sizes = campaign["targeting"]["sizes"] or list(SIZES)
        count = rng.randint(1, 3)
        vertical = BRANDS[brand][2]
        for number, size in enumerate(rng.sample(sizes, min(count, len(sizes))), start=1):
            width, height = (int(part) for part in size.split("x"))
            click = (
                f"https://www.{domain}/landing/{campaign_id}"
                f"?utm_source=adplatform&utm_campaign={campaign_id}&utm_content={number}"
            )
            as_image = rng.random() < 0.6
            yield {
                "campaign_id": campaign_id,
                "advertiser_id": campaign["advertiser_id"],
                "name": f"{campaign['name']} — {size} v{number}",
                "width": width,
                "height": height,
                "markup": None
                if as_image
                else (
                    f'<a href="{click}" target="_blank" rel="noopener">'
                    f'<img src="https://cdn.{domain}/ads/{campaign_id}-{number}.png" '
                    f'width="{width}" height="{height}" alt="{campaign["name"]}"></a>'
                ),
                "image_url": f"https://cdn.{domain}/ads/{campaign_id}-{number}-{size}.png"
                if as_image
                else None,
                "click_url": click,
                "adomain": domain,
                "iab_category": vertical,
                "status": "paused" if number > 1 and rng.random() < 0.1 else "active",
                "version": 1,
                "created_at": campaign["created_at"],
                "updated_at": campaign["updated_at"],
            }


class _Row:
    """Attribute access over a dict, for `campaign_state` (which reads attributes)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


async def _insert_returning_ids(
    connection: AsyncConnection, table: Any, rows: list[dict[str, Any]]
) -> list[int]:
    if not rows:
        return []
    result = await connection.execute(
        insert(table).returning(table.c.id, sort_by_parameter_order=True), rows
    )
    return [row.id for row in result]


async def seed_database(
    database_url: str | None,
    *,
    campaigns: int,
    advertisers: int | None = None,
    only_if_empty: bool = False,
    show_progress: bool = True,
) -> SeedResult:
    """Create demo advertisers (each with an API key), campaigns and creatives."""
    from adplatform.migrations import upgrade

    started = time.perf_counter()
    await asyncio.to_thread(upgrade, database_url)  # seeding a fresh database just works
    engine = create_engine(database_url)
    result = SeedResult()
    try:
        async with engine.connect() as connection:
            existing = int(await connection.scalar(select(func.count()).select_from(Campaign)) or 0)
            known_names = set((await connection.scalars(select(Advertiser.name))).all())
        if only_if_empty and existing:
            result.existing_campaigns = existing
            return result
        generator = _Generator(datetime.now(UTC))
        wanted = advertisers or max(1, math.ceil(campaigns / 10))
        advertiser_rows: list[dict[str, Any]] = []
        brands: list[int] = []
        index = 0
        while len(advertiser_rows) < wanted:
            name, domain, brand = generator.advertiser_name(index)
            index += 1
            if name in known_names:
                continue
            advertiser_rows.append(
                {
                    "name": name,
                    "domain": domain,
                    "version": 1,
                    "created_at": generator.now,
                    "updated_at": generator.now,
                }
            )
            brands.append(brand)

        async with engine.begin() as connection:
            advertiser_ids = await _insert_returning_ids(
                connection, Advertiser.__table__, advertiser_rows
            )
            keys = [generate_api_key() for _ in advertiser_ids]
            await connection.execute(
                insert(ApiKey),
                [
                    {
                        "advertiser_id": advertiser_id,
                        "key_hash": key.key_hash,
                        "display_prefix": key.display_prefix,
                        "created_at": datetime.now(UTC),
                    }
                    for advertiser_id, key in zip(advertiser_ids, keys, strict=True)
                ],
            )
        result.advertisers = len(advertiser_ids)
        result.api_keys = [key.plaintext for key in keys]
        result.advertiser_names = [row["name"] for row in advertiser_rows]

        with _Progress(show_progress, campaigns) as advance:
            for first in range(0, campaigns, CHUNK):
                count = min(CHUNK, campaigns - first)
                await _seed_chunk(
                    engine=engine,
                    generator=generator,
                    first=first,
                    count=count,
                    advertiser_ids=advertiser_ids,
                    advertiser_rows=advertiser_rows,
                    brands=brands,
                    result=result,
                )
                advance(count)
    finally:
        await engine.dispose()
    result.seconds = time.perf_counter() - started
    return result


async def _seed_chunk(
    *,
    engine: Any,
    generator: _Generator,
    first: int,
    count: int,
    advertiser_ids: list[int],
    advertiser_rows: list[dict[str, Any]],
    brands: list[int],
    result: SeedResult,
) -> None:
    campaign_rows: list[dict[str, Any]] = []
    owners: list[int] = []
    for index in range(first, first + count):
        owner = index % len(advertiser_ids)
        owners.append(owner)
        campaign_rows.append(generator.campaign(index, advertiser_ids[owner], brands[owner]))
    async with engine.begin() as connection:
        if not is_sqlite(engine):
            await connection.execute(
                text("SELECT pg_advisory_xact_lock_shared(:key)").bindparams(key=OUTBOX_LOCK_KEY)
            )
        campaign_ids = await _insert_returning_ids(connection, Campaign.__table__, campaign_rows)
        creative_rows: list[dict[str, Any]] = []
        for row, campaign_id, owner in zip(campaign_rows, campaign_ids, owners, strict=True):
            creative_rows += generator.creatives(
                row, campaign_id, advertiser_rows[owner]["domain"], brands[owner]
            )
        creative_ids = await _insert_returning_ids(connection, Creative.__table__, creative_rows)
        by_campaign: dict[int, list[_Row]] = {}
        for creative, creative_id in zip(creative_rows, creative_ids, strict=True):
            by_campaign.setdefault(creative["campaign_id"], []).append(
                _Row({**creative, "id": creative_id})
            )
        outbox_rows = []
        for row, campaign_id in zip(campaign_rows, campaign_ids, strict=True):
            state = campaign_state(
                _Row({**row, "id": campaign_id}), by_campaign.get(campaign_id, [])
            )
            outbox_rows.append(
                {
                    "campaign_id": campaign_id,
                    "campaign_version": 1,
                    "deleted": False,
                    "state": encode(state),
                    "created_at": datetime.now(UTC),
                }
            )
        await connection.execute(insert(OutboxRow), outbox_rows)
    result.campaigns += count
    result.active_campaigns += sum(1 for row in campaign_rows if row["status"] == "active")
    result.creatives += len(creative_rows)


class _Progress:
    """A rich progress bar (or nothing), as a context giving an `advance(n)` function."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled
        self.total = total
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> Any:
        if not self.enabled:
            return lambda n: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("seeding campaigns"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self._progress.start()
        self._task = self._progress.add_task("seed", total=self.total)
        return lambda n: self._progress.advance(self._task, n)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
