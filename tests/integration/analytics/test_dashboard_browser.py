"""The dashboard in real headless Chromium (Debian's), driven by Playwright.

The service runs as `adplatform dev` runs it (SQLite, in-process bus, consumer task),
under uvicorn on a free port; events go onto the bus while the page is open, and the
page must pick them up on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from pydantic import SecretStr

from adplatform.analytics.main import create_app
from adplatform.core.bus import EventBus
from adplatform.core.config import Environment, Settings
from adplatform.core.db import create_engine
from adplatform.core.events import AD_EVENTS_TOPIC, AdEvent, encode
from adplatform.migrations import upgrade
from tests.infra.common import PROJECT_ROOT, free_port, port_open, require
from tests.unit.analytics.support import (
    advertiser_of,
    eventually,
    expected_campaigns,
    generate_events,
    seed_campaigns,
)

pytestmark = pytest.mark.integration

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RESULTS = PROJECT_ROOT / "test-results"


@contextlib.asynccontextmanager
async def serve(settings: Settings, bus: EventBus) -> AsyncIterator[str]:
    port = free_port()
    app = create_app(settings, bus=bus)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())

    async def listening() -> bool:
        return port_open(port)

    await eventually(listening, timeout=20)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def publish(bus: EventBus, events: list[AdEvent]) -> None:
    producer = bus.producer()
    for e in events:
        producer.send(AD_EVENTS_TOPIC, str(e.campaign_id), encode(e))
    await producer.flush()


@contextlib.asynccontextmanager
async def chromium(tmp_path: Path) -> AsyncIterator[Any]:
    executable = require("/usr/bin/chromium", "apt-get install chromium (Debian's package)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield browser
        finally:
            await browser.close()


def watch_console(page: Any) -> list[str]:
    problems: list[str] = []
    page.on(
        "console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type == "error" else None
    )
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"requestfailed: {r.url}"))
    return problems


async def shown_spend(page: Any, campaign_id: int) -> int:
    value = await page.evaluate(
        """(id) => {
            const s = window.adpDashboard.series.find((x) => x.campaign_id === id);
            return s ? s.points.reduce((t, p) => t + p.spend_micros, 0) : -1;
        }""",
        campaign_id,
    )
    return int(value)


async def test_dashboard_shows_live_data_in_headless_chromium(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'dev.db'}"
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    campaigns = {
        cid: {"advertiser_id": advertiser_of(cid), "name": f"Demo campaign {cid}"}
        for cid in range(1, 5)
    }
    await seed_campaigns(engine, campaigns)
    await engine.dispose()
    now_ms = int(time.time() * 1000)
    first = generate_events(
        1500, campaigns=4, seed=61, start_ms=now_ms - 30 * 60_000, span_ms=25 * 60_000
    )
    more = generate_events(600, campaigns=4, seed=62, start_ms=now_ms - 60_000, span_ms=30_000)

    bus = EventBus.from_brokers([])
    dev = Settings(
        database_url=url,
        admin_api_key=SecretStr("dev-admin-key"),
        environment=Environment.DEVELOPMENT,
        metrics_enabled=False,
    )
    await publish(bus, first)
    async with serve(dev, bus) as base, chromium(tmp_path) as browser:
        page = await browser.new_page()
        problems = watch_console(page)
        await page.goto(f"{base}/analytics/dashboard")
        await page.wait_for_selector("body[data-state=ready]", timeout=20_000)

        # The top campaigns by spend are charted; campaign 1's line carries its spend.
        want = expected_campaigns(first)
        top = max(want, key=lambda c: (want[c][5], -c))

        async def charted() -> bool:
            return await shown_spend(page, top) == want[top][5]

        await eventually(charted, timeout=20)
        datasets = await page.evaluate(
            "() => window.adpDashboard.charts.spend.data.datasets.map((d) => d.data.length)"
        )
        assert len(datasets) == 4
        assert all(n > 25 for n in datasets)
        total_text = await page.text_content("#total-impressions")
        assert total_text == f"{sum(v[2] for v in want.values()):,}"
        RESULTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(RESULTS / "analytics-dashboard.png"), full_page=True)

        # Live: new events show up without a reload.
        refreshes = await page.evaluate("() => window.adpDashboard.refreshes")
        await publish(bus, more)
        both = expected_campaigns(first + more)

        async def updated() -> bool:
            return await shown_spend(page, top) == both[top][5]

        await eventually(updated, timeout=30, interval=0.5)
        assert await page.evaluate("() => window.adpDashboard.refreshes") > refreshes
        assert await page.text_content("#total-impressions") == (
            f"{sum(v[2] for v in both.values()):,}"
        )

        # One campaign alone.
        await page.select_option("#campaign", str(top))
        await eventually(
            lambda: page.evaluate(
                "() => window.adpDashboard.charts.clicks.data.datasets.length === 1"
            ),
            timeout=10,
        )
        assert await shown_spend(page, top) == both[top][5]
        assert problems == []


async def test_dashboard_outside_dev_asks_for_a_key_and_remembers_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'staging.db'}"
    await asyncio.to_thread(upgrade, url)
    bus = EventBus.from_brokers([])
    events = generate_events(200, campaigns=2, seed=63, start_ms=int(time.time() * 1000) - 600_000)
    await publish(bus, events)
    staging = Settings(
        database_url=url,
        admin_api_key=SecretStr("staging-admin-key"),
        environment=Environment.STAGING,
        metrics_enabled=False,
    )
    async with serve(staging, bus) as base, chromium(tmp_path) as browser:
        page = await browser.new_page()
        problems = watch_console(page)
        await page.goto(f"{base}/analytics/dashboard")
        await page.wait_for_selector("body[data-state=needs-key]", timeout=20_000)
        assert "API key" in (await page.text_content("#status") or "")
        await page.fill("#api-key", "staging-admin-key")
        await page.click("#key-form button")
        await page.wait_for_selector("body[data-state=ready]", timeout=20_000)
        want = expected_campaigns(events)
        for campaign_id in want:
            assert await shown_spend(page, campaign_id) == want[campaign_id][5]
        await page.reload()  # the key was remembered in localStorage
        await page.wait_for_selector("body[data-state=ready]", timeout=20_000)
        assert await page.evaluate("() => localStorage.length") == 1
        assert problems == []
