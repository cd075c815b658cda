"""`/analytics/...`: answers, tenancy and errors (SQLite, no consumer running)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from adplatform.analytics.aggregation import prepare_batch
from adplatform.analytics.main import create_app
from adplatform.analytics.store import SqlStore
from adplatform.core.bus import EventBus, Message
from adplatform.core.config import Environment, Settings
from adplatform.core.db import session_factory
from adplatform.core.events import AdEvent, encode
from tests.unit.analytics.support import (
    Seeded,
    advertiser_of,
    expected_campaigns,
    expected_minutes,
    generate_events,
    seed_campaigns,
)

ADMIN = {"X-API-Key": "admin-secret"}
START_MS = 1_790_000_000_000  # 2026-09-21T14:13:20Z
START_ISO = "2026-09-21T14:13:00Z"
CAMPAIGNS = {cid: {"advertiser_id": advertiser_of(cid)} for cid in range(1, 7)}


def settings(url: str, **overrides: Any) -> Settings:
    return Settings(
        database_url=url,
        admin_api_key=SecretStr("admin-secret"),
        metrics_enabled=False,
        **overrides,
    )


@pytest.fixture
async def seeded(engine: AsyncEngine) -> tuple[Seeded, list[AdEvent]]:
    seeded = await seed_campaigns(engine, CAMPAIGNS)
    events = generate_events(2000, campaigns=6, seed=31, start_ms=START_MS, span_ms=30 * 60_000)
    store = SqlStore(engine, session_factory(engine))
    tp = ("ad-events", 0)
    await store.load_offsets("analytics", [tp])
    messages = [Message(tp[0], 0, i, None, encode(e), 0) for i, e in enumerate(events)]
    await store.commit("analytics", prepare_batch(messages, {tp: 0}), {tp: 0})
    return seeded, events


@pytest.fixture
async def client(sqlite_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings(sqlite_url), bus=EventBus.from_brokers([]))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://analytics") as http:
        yield http
    await app.state.engine.dispose()


def series_params(**extra: str) -> dict[str, str]:
    return {"from": START_ISO, "to": "2026-09-21T14:50:00Z", **extra}


async def test_minute_series_is_exact_and_zero_filled(
    client: httpx.AsyncClient, seeded: tuple[Seeded, list[AdEvent]]
) -> None:
    _, events = seeded
    response = await client.get(
        "/analytics/campaigns/2/timeseries", params=series_params(), headers=ADMIN
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["granularity"] == "minute"
    assert body["name"] == "campaign 2"
    points = body["points"]
    assert len(points) == 37  # 14:13 .. 14:49
    assert points[0]["t"] == "2026-09-21T14:13:00Z"
    expected = {b: v for (c, b), v in expected_minutes(events).items() if c == 2}
    for point in points:
        want = expected.get(point["ts"], (0, 0, 0, 0, 0, 0))
        got = tuple(point[k] for k in ("bids", "wins", "impressions", "clicks"))
        assert (*got, point["bid_micros"], point["spend_micros"]) == want
        if point["impressions"]:
            assert point["ctr"] == point["clicks"] / point["impressions"]
    assert any(p["spend_micros"] for p in points)
    assert points[-1]["bids"] == 0  # past the events: zero-filled


async def test_hour_and_day_series_add_up_to_the_totals(
    client: httpx.AsyncClient, seeded: tuple[Seeded, list[AdEvent]]
) -> None:
    _, events = seeded
    want = expected_campaigns(events)[4]
    for granularity in ("hour", "day"):
        response = await client.get(
            "/analytics/campaigns/4/timeseries",
            params=series_params(granularity=granularity),
            headers=ADMIN,
        )
        assert response.status_code == 200, response.text
        points = response.json()["points"]
        assert sum(p["spend_micros"] for p in points) == want[5]
        assert sum(p["impressions"] for p in points) == want[2]
        assert all(p["ts"] % (3600 if granularity == "hour" else 86_400) == 0 for p in points)


async def test_campaign_totals_with_derived_metrics_and_budget(
    client: httpx.AsyncClient, seeded: tuple[Seeded, list[AdEvent]]
) -> None:
    _, events = seeded
    bids, wins, impressions, clicks, _, spend = expected_campaigns(events)[1]
    response = await client.get("/analytics/campaigns/1/totals", headers=ADMIN)
    assert response.status_code == 200, response.text
    body = response.json()
    totals = body["totals"]
    assert (totals["bids"], totals["wins"], totals["impressions"], totals["clicks"]) == (
        bids,
        wins,
        impressions,
        clicks,
    )
    assert totals["spend_micros"] == spend
    assert totals["ctr"] == pytest.approx(clicks / impressions)
    assert totals["win_rate"] == pytest.approx(wins / bids)
    assert totals["ecpm_micros"] == pytest.approx(spend * 1000 / impressions)
    budget = body["budget"]
    assert budget["total_budget_micros"] == 1_000_000_000
    assert budget["spent_micros"] == spend
    assert budget["remaining_micros"] == 1_000_000_000 - spend
    assert budget["total_utilization"] == pytest.approx(spend / 1_000_000_000)


async def test_advertiser_totals_sum_its_campaigns(
    client: httpx.AsyncClient, seeded: tuple[Seeded, list[AdEvent]]
) -> None:
    _, events = seeded
    per_campaign = expected_campaigns(events)
    mine = [c for c in CAMPAIGNS if CAMPAIGNS[c]["advertiser_id"] == 2]
    response = await client.get("/analytics/advertisers/2/totals", headers=ADMIN)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["totals"]["spend_micros"] == sum(per_campaign[c][5] for c in mine)
    assert body["totals"]["clicks"] == sum(per_campaign[c][3] for c in mine)
    assert body["budget"]["campaigns"] == len(mine)
    assert body["budget"]["total_budget_micros"] == 1_000_000_000 * len(mine)


async def test_top_campaigns_by_spend_and_clicks(
    client: httpx.AsyncClient, seeded: tuple[Seeded, list[AdEvent]]
) -> None:
    _, events = seeded
    per_campaign = expected_campaigns(events)
    for metric, index in (("spend", 5), ("clicks", 3)):
        response = await client.get(
            "/analytics/top", params=series_params(metric=metric, limit="3"), headers=ADMIN
        )
        assert response.status_code == 200, response.text
        top = response.json()["campaigns"]
        ranked = sorted(per_campaign, key=lambda c: (-per_campaign[c][index], c))[:3]
        assert [c["campaign_id"] for c in top] == ranked
        assert top[0]["name"] == f"campaign {ranked[0]}"


async def test_an_advertiser_key_sees_only_its_own_campaigns(
    client: httpx.AsyncClient, seeded: tuple[Seeded, list[AdEvent]]
) -> None:
    keys, _ = seeded
    own = {"X-API-Key": keys.advertiser_keys[1]}
    assert (await client.get("/analytics/campaigns/1/totals", headers=own)).status_code == 200
    foreign = await client.get("/analytics/campaigns/4/totals", headers=own)
    assert foreign.status_code == 404
    assert foreign.json()["error"]["code"] == "not_found"
    missing = await client.get("/analytics/campaigns/999/totals", headers=own)
    assert missing.status_code == 404
    assert missing.json() == foreign.json() | {
        "error": foreign.json()["error"] | {"message": "campaign 999 not found"}
    }
    assert (await client.get("/analytics/advertisers/2/totals", headers=own)).status_code == 404
    assert (await client.get("/analytics/advertisers/1/totals", headers=own)).status_code == 200
    top = await client.get("/analytics/top", params=series_params(), headers=own)
    assert {c["advertiser_id"] for c in top.json()["campaigns"]} == {1}
    series = await client.get(
        "/analytics/campaigns/5/timeseries", params=series_params(), headers=own
    )
    assert series.status_code == 404


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}])
async def test_missing_or_wrong_key_is_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    for path in (
        "/analytics/campaigns/1/totals",
        "/analytics/top",
        "/analytics/advertisers/1/totals",
    ):
        response = await client.get(path, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        (
            "/analytics/campaigns/1/timeseries",
            {"from": "2026-09-21T13:00:00Z", "to": "2026-09-21T12:00:00Z"},
            422,
            "invalid_range",
        ),
        (
            "/analytics/campaigns/1/timeseries",
            {"from": "2026-09-21T13:00:00Z", "to": "2026-09-21T13:00:00Z"},
            422,
            "invalid_range",
        ),
        (
            "/analytics/campaigns/1/timeseries",
            {"from": "2026-01-01T00:00:00Z", "to": "2026-09-21T00:00:00Z"},
            422,
            "range_too_large",
        ),
        (
            "/analytics/campaigns/1/timeseries",
            {"from": "2000-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z", "granularity": "hour"},
            422,
            "range_too_large",
        ),
        ("/analytics/campaigns/1/timeseries", {"granularity": "week"}, 422, "validation_error"),
        ("/analytics/campaigns/1/timeseries", {"from": "yesterday"}, 422, "validation_error"),
        ("/analytics/campaigns/abc/timeseries", {}, 422, "validation_error"),
        ("/analytics/campaigns/0/totals", {}, 422, "validation_error"),
        (
            "/analytics/campaigns/1/totals",
            {"from": "1900-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
            422,
            "range_too_large",
        ),
        # a date with an offset that lands in year 0 or 10000 once in UTC
        (
            "/analytics/campaigns/1/timeseries",
            {"from": "0001-01-01T00:30:00+01:00", "to": "0001-01-01T05:00:00Z"},
            422,
            "invalid_range",
        ),
        (
            "/analytics/campaigns/1/timeseries",
            {"from": "9999-12-31T20:00:00Z", "to": "9999-12-31T23:30:00-01:00"},
            422,
            "invalid_range",
        ),
        ("/analytics/campaigns/1/timeseries", {"to": "0001-01-01T00:10:00Z"}, 422, "invalid_range"),
        (
            "/analytics/campaigns/1/totals",
            {"from": "0001-01-01T00:30:00+01:00"},
            422,
            "invalid_range",
        ),
        (
            "/analytics/advertisers/1/totals",
            {"to": "9999-12-31T23:30:00-01:00"},
            422,
            "invalid_range",
        ),
        ("/analytics/top", {"from": "0001-01-01T00:30:00+01:00"}, 422, "invalid_range"),
        ("/analytics/top", {"to": "9999-12-31T23:30:00-01:00"}, 422, "invalid_range"),
        # ids are 32-bit, as in campaign-service
        ("/analytics/campaigns/2147483648/totals", {}, 422, "validation_error"),
        ("/analytics/campaigns/9223372036854775807/timeseries", {}, 422, "validation_error"),
        ("/analytics/advertisers/2147483648/totals", {}, 422, "validation_error"),
        ("/analytics/campaigns/2147483647/totals", {}, 404, "not_found"),
        ("/analytics/advertisers/2147483647/totals", {}, 404, "not_found"),
        ("/analytics/top", {"metric": "ctr"}, 422, "validation_error"),
        ("/analytics/top", {"limit": "0"}, 422, "validation_error"),
        ("/analytics/top", {"limit": "1000"}, 422, "validation_error"),
        (
            "/analytics/top",
            {"from": "2026-09-21T13:00:00Z", "to": "2026-09-21T12:00:00Z"},
            422,
            "invalid_range",
        ),
    ],
)
async def test_bad_input_is_a_4xx_with_the_error_body(
    client: httpx.AsyncClient,
    seeded: tuple[Seeded, list[AdEvent]],
    path: str,
    params: dict[str, str],
    status: int,
    code: str,
) -> None:
    response = await client.get(path, params=params, headers=ADMIN)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert "details" in error


@pytest.mark.parametrize(
    ("start", "end", "points"),
    [
        ("0001-01-01T00:00:00Z", "0001-01-02T00:00:00Z", 24),
        ("9999-12-31T00:00:00Z", "9999-12-31T23:59:59Z", 24),
        ("0001-01-01T01:00:00+01:00", "0001-01-01T03:00:00+01:00", 2),
    ],
)
async def test_periods_at_the_edges_of_the_calendar_are_answered(
    client: httpx.AsyncClient,
    seeded: tuple[Seeded, list[AdEvent]],
    start: str,
    end: str,
    points: int,
) -> None:
    params = {"from": start, "to": end, "granularity": "hour"}
    response = await client.get("/analytics/campaigns/1/timeseries", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert len(response.json()["points"]) == points
    totals = await client.get(
        "/analytics/campaigns/1/totals", params={"from": start, "to": end}, headers=ADMIN
    )
    assert totals.status_code == 200, totals.text
    assert totals.json()["totals"]["bids"] == 0


async def test_a_campaign_known_only_from_events_is_still_served(
    client: httpx.AsyncClient, seeded: tuple[Seeded, list[AdEvent]], engine: AsyncEngine
) -> None:
    from sqlalchemy import text

    async with engine.begin() as connection:
        await connection.execute(text("DELETE FROM campaigns WHERE id = 6"))
    response = await client.get("/analytics/campaigns/6/totals", headers=ADMIN)
    assert response.status_code == 200
    body = response.json()
    assert body["advertiser_id"] == advertiser_of(6)
    assert body["name"] is None
    assert body["budget"]["remaining_micros"] is None


async def test_dashboard_prefills_only_the_public_dev_key(sqlite_url: str) -> None:
    dev = Settings(
        database_url=sqlite_url, admin_api_key=SecretStr("dev-admin-key"), metrics_enabled=False
    )
    prod = Settings(
        database_url=sqlite_url,
        admin_api_key=SecretStr("dev-admin-key"),
        metrics_enabled=False,
        environment=Environment.PRODUCTION,
    )
    cases = [(dev, True), (prod, False), (settings(sqlite_url), False)]
    for config, prefilled in cases:
        app = create_app(config, bus=EventBus.from_brokers([]))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://a") as http:
            page = await http.get("/analytics/dashboard")
            assert page.status_code == 200
            assert "default-src 'self'" in page.headers["content-security-policy"]
            assert ('content="dev-admin-key"' in page.text) is prefilled
            assert "admin-secret" not in page.text
            script = page.text.split('src="', 2)[1].split('"', 1)[0]
            assert script.startswith("/analytics/static/assets/")
            asset = await http.get(script)
            assert asset.status_code == 200
            assert "javascript" in asset.headers["content-type"]
            assert "http://" not in page.text
            assert "https://" not in page.text
        await app.state.engine.dispose()
