"""Alembic migrations for every service's tables, shipped inside the package.

`adplatform migrate` (and the chart's pre-upgrade hook Job) runs `upgrade()`. Revision
files are hand-written and must work on PostgreSQL and SQLite (batch mode for ALTERs).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

HERE = Path(__file__).resolve().parent


def alembic_config(database_url: str | None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str | None, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str | None, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def current_head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(None)).get_current_head()
