"""`adplatform dev` with its simulator: the analytics totals of a campaign grow live."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.infra.common import serving

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ADMIN = "dev-analytics-admin"


def _analytics_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def dev_analytics(tmp_path: Path) -> Iterator[str]:
    env = {
        **os.environ,
        "ADMIN_API_KEY": ADMIN,
        "DATABASE_URL": "",
        "KAFKA_BROKERS": "",
        "REDIS_HOST": "",
    }
    argv = [sys.executable, "-m", "adplatform", "dev", "--metrics-port", "0", "--rate", "50"]
    with serving(
        lambda base: [*argv, "--port-base", str(base), "--database", str(tmp_path / "dev.db")],
        lambda _: env,
        ready=lambda base: _analytics_ready(f"http://127.0.0.1:{base + 2}"),
        log=tmp_path / "dev.log",
        what="adplatform dev (analytics)",
        ports=3,
    ) as base:
        yield f"http://127.0.0.1:{base + 2}"


def _top_campaign(url: str) -> tuple[int, int]:
    response = httpx.get(
        f"{url}/analytics/top",
        params={"metric": "impressions", "limit": 1},
        headers={"X-API-Key": ADMIN},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    campaigns = response.json()["campaigns"]
    if not campaigns:
        return 0, 0
    return int(campaigns[0]["campaign_id"]), int(campaigns[0]["bids"])


def _bids(url: str, campaign_id: int) -> int:
    response = httpx.get(
        f"{url}/analytics/campaigns/{campaign_id}/totals",
        headers={"X-API-Key": ADMIN},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return int(response.json()["totals"]["bids"])


def test_the_simulators_traffic_makes_a_campaigns_totals_grow(dev_analytics: str) -> None:
    url = dev_analytics
    deadline = time.monotonic() + 60
    campaign_id = 0
    while time.monotonic() < deadline:  # the simulator starts 2 s after the services
        campaign_id, bids = _top_campaign(url)
        if campaign_id and bids:
            break
        time.sleep(0.5)
    assert campaign_id, "no campaign had any analytics within a minute of simulated traffic"
    first = _bids(url, campaign_id)
    assert first > 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        later = _bids(url, campaign_id)
        if later > first:
            break
        time.sleep(0.5)
    assert later > first, f"campaign {campaign_id}'s bids stayed at {first}"
