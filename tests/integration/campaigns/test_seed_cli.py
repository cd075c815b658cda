"""`adplatform seed` as a user runs it: the installed command, in its own process,
against the database DATABASE_URL names (a temporary SQLite file here)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from adplatform.campaigns.seed import DEMO_CAMPAIGNS

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _adplatform() -> list[str]:
    script = Path(sys.executable).with_name("adplatform")  # the console script pip made
    return [str(script)] if script.exists() else [sys.executable, "-m", "adplatform"]


def _seed(database: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{database}"}
    result = subprocess.run(
        [*_adplatform(), "seed", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def _count(database: Path, table: str, where: str = "1=1") -> int:
    connection = sqlite3.connect(database)
    try:
        return int(connection.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0])  # noqa: S608
    finally:
        connection.close()


def test_seed_without_options_makes_the_demo_set_and_campaigns_n_adds_n(tmp_path: Path) -> None:
    database = tmp_path / "seed.db"

    demo = _seed(database)  # no --campaigns: the demo set, not a usage error
    assert f"{DEMO_CAMPAIGNS} campaigns" in demo.stdout
    assert _count(database, "campaigns") == DEMO_CAMPAIGNS
    demo_advertisers = _count(database, "advertisers")
    assert demo_advertisers == DEMO_CAMPAIGNS // 10  # one advertiser per 10 campaigns
    assert _count(database, "api_keys") == demo_advertisers
    assert _count(database, "creatives") >= DEMO_CAMPAIGNS
    assert _count(database, "campaign_outbox") == DEMO_CAMPAIGNS  # bidders hear of them
    assert _count(database, "campaigns", "status = 'active'") > 0

    load = _seed(database, "--campaigns", "50")
    assert "50 campaigns" in load.stdout
    assert _count(database, "campaigns") == DEMO_CAMPAIGNS + 50
    assert _count(database, "advertisers") == demo_advertisers + 5
    assert _count(database, "campaign_outbox") == DEMO_CAMPAIGNS + 50

    again = _seed(database, "--if-empty")
    assert "nothing seeded" in again.stdout
    assert _count(database, "campaigns") == DEMO_CAMPAIGNS + 50


def test_seed_rejects_a_negative_count(tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'seed.db'}"}
    result = subprocess.run(
        [*_adplatform(), "seed", "--campaigns", "-1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--campaigns" in result.stderr
