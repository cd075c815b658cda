"""Alembic environment: runs migrations over the async engine from `core.db`."""

from __future__ import annotations

import asyncio
import contextlib
import importlib

from alembic import context
from sqlalchemy.engine import Connection

from adplatform.core.db import Base, create_engine

# Import every service's models so `Base.metadata` is complete for autogenerate.
for module in (
    "adplatform.core.auth",
    "adplatform.campaigns.models",
    "adplatform.analytics.models",
):
    with contextlib.suppress(ModuleNotFoundError):  # a service not built yet
        importlib.import_module(module)

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_engine(context.config.attributes.get("database_url"))
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    asyncio.run(_run_async())


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run `adplatform migrate`")
run_migrations_online()
