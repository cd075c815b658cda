"""Demo data is valid by the API's own rules and biddable (embedded SQLite)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from adplatform.campaigns import rules
from adplatform.campaigns.reference import COUNTRIES, STANDARD_BANNER_SIZES
from adplatform.campaigns.schemas import CampaignCreate, CreativeCreate
from adplatform.campaigns.seed import seed_database
from adplatform.core.auth import hash_api_key
from adplatform.core.events import CampaignState


@pytest.fixture
async def seeded(tmp_path: Path) -> tuple[Path, list[str]]:
    path = tmp_path / "seed.db"
    result = await seed_database(f"sqlite:///{path}", campaigns=300, show_progress=False)
    assert result.campaigns == 300
    assert result.advertisers == 30
    assert len(result.api_keys) == 30
    assert "seeded 30 advertisers, 300 campaigns" in result.describe()
    return path, result.api_keys


def _rows(path: Path, sql: str) -> list[sqlite3.Row]:
    connection = sqlite3.connect(path)
    connection.row_factory = sqlite3.Row
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


async def test_seeded_campaigns_pass_the_api_validation(seeded: tuple[Path, list[str]]) -> None:
    path, _ = seeded
    campaigns = _rows(path, "SELECT * FROM campaigns")
    statuses = {row["status"] for row in campaigns}
    assert statuses <= {"draft", "active", "paused", "completed"}
    assert sum(row["status"] == "active" for row in campaigns) > 200
    for row in campaigns:
        targeting = msgspec.json.decode(row["targeting"])
        body = {
            "name": row["name"],
            "total_budget_micros": row["total_budget_micros"],
            "daily_budget_micros": row["daily_budget_micros"],
            "max_bid_cpm_micros": row["max_bid_cpm_micros"],
            "pacing": row["pacing"],
            "targeting": targeting,
        }
        validated = CampaignCreate.model_validate(body)
        assert validated.targeting.model_dump() == targeting  # already normalised
        assert set(targeting["countries"]) <= COUNTRIES
        assert set(targeting["sizes"]) <= set(STANDARD_BANNER_SIZES)
        assert not rules.budget_violations(
            total_budget_micros=row["total_budget_micros"],
            daily_budget_micros=row["daily_budget_micros"],
            max_bid_cpm_micros=row["max_bid_cpm_micros"],
        )
    names = [(row["advertiser_id"], row["name"]) for row in campaigns]
    assert len(names) == len(set(names))  # unique per advertiser, as the API promises


async def test_active_campaigns_can_bid_now(seeded: tuple[Path, list[str]]) -> None:
    path, _ = seeded
    now = datetime.now(UTC)
    states = [
        msgspec.json.decode(row["state"], type=CampaignState)
        for row in _rows(path, "SELECT state FROM campaign_outbox ORDER BY id")
    ]
    assert len(states) == 300  # one outbox row per seeded campaign
    active = [s for s in states if s.status == "active"]
    for state in active:
        assert state.creatives, state.name
        assert state.flight_start is None or state.flight_start <= now
        assert state.flight_end is None or state.flight_end > now
        for creative in state.creatives:
            assert f"{creative.w}x{creative.h}" in STANDARD_BANNER_SIZES
            assert creative.status == "active"
            assert (creative.markup is None) != (creative.image_url is None)
    varied = {tuple(s.targeting.countries) for s in active}
    assert len(varied) > 5  # targeting really varies
    assert any(not s.targeting.countries for s in active)  # some run everywhere


async def test_creatives_pass_the_api_validation(seeded: tuple[Path, list[str]]) -> None:
    path, _ = seeded
    for row in _rows(path, "SELECT * FROM creatives"):
        CreativeCreate.model_validate(
            {
                key: row[key]
                for key in (
                    "name",
                    "width",
                    "height",
                    "markup",
                    "image_url",
                    "click_url",
                    "adomain",
                    "iab_category",
                    "status",
                )
            }
        )


async def test_keys_are_stored_hashed_and_seeding_again_is_a_no_op(
    seeded: tuple[Path, list[str]],
) -> None:
    path, keys = seeded
    stored = {row["key_hash"] for row in _rows(path, "SELECT key_hash FROM api_keys")}
    assert stored == {hash_api_key(key) for key in keys}
    again = await seed_database(
        f"sqlite:///{path}", campaigns=10, only_if_empty=True, show_progress=False
    )
    assert again.existing_campaigns == 300
    assert again.api_keys == []
    assert "nothing seeded" in again.describe()
    more = await seed_database(f"sqlite:///{path}", campaigns=20, show_progress=False)
    assert more.advertisers == 2  # new advertisers, never a clash with existing names
    assert len(_rows(path, "SELECT id FROM campaigns")) == 320
