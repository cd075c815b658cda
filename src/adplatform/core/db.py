"""Database engine and sessions (SQLAlchemy 2 async): asyncpg on PostgreSQL, aiosqlite
for the embedded mode.

`DATABASE_URL` may be given in the plain forms operators know (`postgresql://...`,
`postgres://...`, `sqlite:///path`); the async driver is filled in here, so the same
value works for `psql`, Alembic and the services. Every service's tables hang off the
one `Base.metadata`, which is what Alembic migrates.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

from sqlalchemy import MetaData, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

DEFAULT_SQLITE_PATH: Final = Path(".adplatform") / "adplatform.db"

# Stable constraint names, so Alembic migrations are the same on PostgreSQL and SQLite.
NAMING_CONVENTION: Final = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def default_sqlite_url() -> str:
    DEFAULT_SQLITE_PATH.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{DEFAULT_SQLITE_PATH}"


def async_url(url: str | None) -> URL:
    """The async-driver form of a database URL (None means the embedded SQLite file)."""
    parsed = make_url(url or default_sqlite_url())
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    raise ValueError(f"unsupported DATABASE_URL backend {backend!r}: use postgresql or sqlite")


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def create_engine(url: str | None, *, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    target = async_url(url)
    options: dict[str, Any] = {"echo": echo}
    if target.get_backend_name() == "postgresql":
        options.update(
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            pool_recycle=1800,
            connect_args={"server_settings": {"application_name": "adplatform"}},
        )
    engine = create_async_engine(target, **options)
    if target.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session inside one transaction: committed on success, rolled back on error."""
    async with sessions() as session, session.begin():
        yield session


async def check_database(engine: AsyncEngine) -> None:
    """Readiness check: a round trip to the database."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
