"""`adplatform dev` boots the embedded platform and serves the API with demo data."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adplatform.campaigns.seed import DEMO_CAMPAIGNS
from tests.infra.common import serving
from tests.integration.campaigns.support import is_ready

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ADMIN = "dev-test-admin"
INTERNAL = "dev-test-internal"


@pytest.fixture
def dev_platform(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    log = tmp_path / "dev.log"
    env = {
        **os.environ,
        "ADMIN_API_KEY": ADMIN,
        "INTERNAL_API_KEY": INTERNAL,
        "DATABASE_URL": "",
        "KAFKA_BROKERS": "",
    }
    argv = [sys.executable, "-m", "adplatform", "dev", "--no-simulate", "--metrics-port", "0"]
    with serving(
        lambda base: [*argv, "--port-base", str(base), "--database", str(tmp_path / "dev.db")],
        lambda _: env,
        ready=lambda base: is_ready(f"http://127.0.0.1:{base}"),
        log=log,
        what="adplatform dev",
        ports=3,
    ) as base:
        yield f"http://127.0.0.1:{base}", log


def test_dev_mode_serves_the_api_with_demo_data(dev_platform: tuple[str, Path]) -> None:
    url, log = dev_platform
    admin = {"X-API-Key": ADMIN}
    campaigns = httpx.get(f"{url}/campaigns", params={"limit": 200}, headers=admin, timeout=10)
    assert campaigns.status_code == 200
    items = campaigns.json()["items"]
    assert len(items) == DEMO_CAMPAIGNS
    assert sum(1 for c in items if c["status"] == "active") >= DEMO_CAMPAIGNS // 2

    output = log.read_text(errors="replace")
    match = re.search(r"demo advertiser key: (adp_\S+)", output)
    assert match, output[-2000:]
    own = httpx.get(
        f"{url}/campaigns", params={"limit": 200}, headers={"X-API-Key": match[1]}, timeout=10
    )
    assert own.status_code == 200
    owners = {c["advertiser_id"] for c in own.json()["items"]}
    assert len(owners) == 1
    assert 0 < len(own.json()["items"]) < DEMO_CAMPAIGNS

    snapshot = httpx.get(
        f"{url}/internal/snapshot", headers={"X-Internal-Key": INTERNAL}, timeout=10
    )
    assert snapshot.status_code == 200
    active = snapshot.json()["campaigns"]
    assert active
    assert all(c["creatives"] for c in active)  # every active demo campaign can bid
    assert snapshot.json()["position"] >= DEMO_CAMPAIGNS

    created = httpx.post(
        f"{url}/advertisers", json={"name": "Dev Mode Test"}, headers=admin, timeout=10
    )
    assert created.status_code == 201
    docs = httpx.get(f"{url}/docs", timeout=10)
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    schema = httpx.get(f"{url}/openapi.json", timeout=10).json()
    assert "/campaigns/{campaign_id}" in schema["paths"]


def test_serve_refuses_to_start_without_its_dependencies() -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "ADMIN_API_KEY", "INTERNAL_API_KEY")
    }
    result = subprocess.run(
        [sys.executable, "-m", "adplatform", "serve", "campaigns"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr
    assert "ADMIN_API_KEY" in result.stderr
    assert "INTERNAL_API_KEY" in result.stderr
