"""The query routes on PostgreSQL, where campaign-service's ids are 32-bit columns and
a date outside PostgreSQL's or Python's calendar would fail the query: 4xx, never 500."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from adplatform.analytics.main import create_app
from adplatform.core.bus import EventBus
from adplatform.core.config import Settings
from tests.unit.analytics.support import advertiser_of, seed_campaigns

pytestmark = pytest.mark.integration

ADMIN = {"X-API-Key": "pg-admin"}


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/analytics/campaigns/2147483647/totals", {}, 404, "not_found"),
        ("/analytics/campaigns/2147483647/timeseries", {}, 404, "not_found"),
        ("/analytics/advertisers/2147483647/totals", {}, 404, "not_found"),
        ("/analytics/campaigns/2147483648/totals", {}, 422, "validation_error"),
        ("/analytics/campaigns/2147483648/timeseries", {}, 422, "validation_error"),
        ("/analytics/advertisers/2147483648/totals", {}, 422, "validation_error"),
        ("/analytics/advertisers/9223372036854775808/totals", {}, 422, "validation_error"),
        (
            "/analytics/campaigns/1/timeseries",
            {"from": "0001-01-01T00:30:00+01:00", "to": "0001-01-01T05:00:00Z"},
            422,
            "invalid_range",
        ),
        (
            "/analytics/campaigns/1/totals",
            {"to": "9999-12-31T23:30:00-01:00"},
            422,
            "invalid_range",
        ),
        ("/analytics/top", {"from": "0001-01-01T00:30:00+01:00"}, 422, "invalid_range"),
        (
            "/analytics/campaigns/1/timeseries",
            {"from": "0001-01-01T00:00:00Z", "to": "0001-01-02T00:00:00Z", "granularity": "hour"},
            200,
            None,
        ),
        (
            "/analytics/top",
            {"from": "0001-01-01T00:00:00Z", "to": "0001-02-01T00:00:00Z"},
            200,
            None,
        ),
    ],
)
async def test_out_of_range_ids_and_dates_are_4xx_on_postgresql(
    postgres_url: str,
    pg_engine: AsyncEngine,
    path: str,
    params: dict[str, str],
    status: int,
    code: str | None,
) -> None:
    await seed_campaigns(pg_engine, {1: {"advertiser_id": advertiser_of(1)}})
    settings = Settings(
        database_url=postgres_url, admin_api_key=SecretStr("pg-admin"), metrics_enabled=False
    )
    app = create_app(settings, bus=EventBus.from_brokers([]))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://a") as http:
            response = await http.get(path, params=params, headers=ADMIN)
    finally:
        await app.state.engine.dispose()
    assert response.status_code == status, response.text
    if code is not None:
        assert response.json()["error"]["code"] == code
