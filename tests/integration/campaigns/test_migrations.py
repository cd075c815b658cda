"""Migrations: up from an empty database (PostgreSQL and SQLite), down, and up again,
and the migrated schema is exactly what the models declare."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

import adplatform.campaigns.models
import adplatform.core.auth  # noqa: F401
from adplatform.core.db import Base, create_engine
from adplatform.migrations import downgrade, upgrade

pytestmark = pytest.mark.integration

OWN_TABLES = {"advertisers", "api_keys", "campaigns", "creatives", "campaign_outbox"}


def _table_of(diff: Any) -> str | None:
    if isinstance(diff, list):  # modify_* diffs come as lists of tuples
        return _table_of(diff[0])
    for item in diff[1:]:
        name = getattr(item, "name", None) if hasattr(item, "columns") else None
        table = getattr(item, "table", None)
        if table is not None and hasattr(table, "name"):
            return str(table.name)
        if name:
            return str(name)
        if isinstance(item, str) and item in OWN_TABLES:
            return item
    return None


def _own_differences(connection: Connection) -> list[Any]:
    diffs = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    own = []
    for diff in diffs:
        if _table_of(diff) not in OWN_TABLES:
            continue
        # The api_keys -> advertisers foreign key is declared in the migration only
        # (core.auth must not import campaign-service's model).
        if diff[0] == "add_fk" or (diff[0] == "remove_fk" and diff[1].parent.name == "api_keys"):
            continue
        own.append(diff)
    return own


async def _inspect(url: str) -> tuple[set[str], list[Any], dict[str, list[str]]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            tables = set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
            differences = await connection.run_sync(_own_differences)
            foreign_keys = await connection.run_sync(
                lambda c: (
                    {
                        fk["referred_table"]: fk["constrained_columns"]
                        for fk in inspect(c).get_foreign_keys("api_keys")
                    }
                    if "api_keys" in tables
                    else {}
                )
            )
    finally:
        await engine.dispose()
    return tables, differences, foreign_keys


async def _round_trip(url: str) -> None:
    await asyncio.to_thread(upgrade, url)
    tables, differences, foreign_keys = await _inspect(url)
    assert tables >= OWN_TABLES | {"alembic_version"}
    assert differences == []
    assert foreign_keys == {"advertisers": ["advertiser_id"]}

    await asyncio.to_thread(downgrade, url, "base")
    tables, _, _ = await _inspect(url)
    assert not tables & OWN_TABLES

    await asyncio.to_thread(upgrade, url)
    tables, differences, _ = await _inspect(url)
    assert tables >= OWN_TABLES
    assert differences == []


async def test_migrations_on_postgresql(postgres_url: str) -> None:
    await _round_trip(postgres_url)


async def test_migrations_on_sqlite(tmp_path: Path) -> None:
    await _round_trip(f"sqlite:///{tmp_path / 'campaigns.db'}")


async def test_migration_revision_is_the_base() -> None:
    from alembic.script import ScriptDirectory

    from adplatform.migrations import alembic_config

    script = ScriptDirectory.from_config(alembic_config(None))
    revision = script.get_revision("0001_campaigns")
    assert revision is not None
    assert revision.down_revision is None
