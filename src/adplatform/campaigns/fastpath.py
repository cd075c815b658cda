"""Hot reads on PostgreSQL straight through an asyncpg pool (rows come back as
asyncpg records; `state.*_from_record` turn them into API dicts).

`GET /campaigns/{id}` is the API's hottest call (dashboards poll it, tools read before
every conditional write) and its target is p99 < 10 ms at 1,000 req/s on two cores. Through
SQLAlchemy each read costs a pool checkout with a pre-ping round trip, BEGIN and
ROLLBACK round trips and result processing: about four times the query itself. These
few single-statement reads therefore use asyncpg directly, with prepared statements and
no transaction. Writes, and everything on SQLite (dev mode), keep the SQLAlchemy path.
The queries return the same columns and apply the same tenancy filter; the integration
tests run the whole API on PostgreSQL, so this is the path they exercise.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from sqlalchemy.engine import make_url

from adplatform.campaigns.state import CAMPAIGN_COLUMNS, CREATIVE_COLUMNS

QUERY_TIMEOUT_SECONDS: Final = 10.0
"""Bounds every query, and so the wait for a pooled connection too (an acquire timeout
would cost a `wait_for` per request for no extra safety)."""

_CAMPAIGN = f"SELECT {', '.join(CAMPAIGN_COLUMNS)} FROM campaigns"  # noqa: S608 - constant column names
_CREATIVE = f"SELECT {', '.join(CREATIVE_COLUMNS)} FROM creatives"  # noqa: S608


async def _no_reset(connection: Any) -> None:
    """These reads set no session state, so the pool's reset query (a round trip on
    every release) has nothing to undo."""


async def _init_connection(connection: Any) -> None:
    await connection.set_type_codec(
        "jsonb",
        encoder=lambda value: msgspec.json.encode(value).decode(),
        decoder=msgspec.json.decode,
        schema="pg_catalog",
    )


class FastReads:
    def __init__(self, database_url: str, *, max_size: int) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self.dsn = url.render_as_string(hide_password=False)
        self.max_size = max_size
        self.pool: Any = None

    async def start(self) -> None:
        import asyncpg  # type: ignore[import-untyped]

        # min_size=0: the service starts (and reports not-ready) while PostgreSQL is down.
        self.pool = await asyncpg.create_pool(
            self.dsn,
            min_size=0,
            max_size=self.max_size,
            init=_init_connection,
            reset=_no_reset,
            command_timeout=QUERY_TIMEOUT_SECONDS,
            max_inactive_connection_lifetime=300,
            server_settings={"application_name": "adplatform-campaigns"},
        )

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    async def _fetchrow(self, sql: str, *args: Any) -> Any:
        async with self.pool.acquire() as connection:
            return await connection.fetchrow(sql, *args)

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self.pool.acquire() as connection:
            records: list[Any] = await connection.fetch(sql, *args)
        return records

    async def campaign(self, campaign_id: int, owner: int | None) -> Any:
        if owner is None:
            return await self._fetchrow(f"{_CAMPAIGN} WHERE id = $1", campaign_id)
        return await self._fetchrow(
            f"{_CAMPAIGN} WHERE id = $1 AND advertiser_id = $2", campaign_id, owner
        )

    async def creative(self, creative_id: int, owner: int | None) -> Any:
        if owner is None:
            return await self._fetchrow(f"{_CREATIVE} WHERE id = $1", creative_id)
        return await self._fetchrow(
            f"{_CREATIVE} WHERE id = $1 AND advertiser_id = $2", creative_id, owner
        )

    async def campaigns(
        self,
        *,
        after: int,
        limit: int,
        owner: int | None,
        status: str | None,
        advertiser_id: int | None,
    ) -> list[Any]:
        conditions = ["id > $1"]
        args: list[Any] = [after]
        for column, value in (
            ("advertiser_id", owner),
            ("advertiser_id", advertiser_id),
            ("status", status),
        ):
            if value is not None:
                args.append(value)
                conditions.append(f"{column} = ${len(args)}")
        args.append(limit)
        sql = f"{_CAMPAIGN} WHERE {' AND '.join(conditions)} ORDER BY id LIMIT ${len(args)}"
        return await self._fetch(sql, *args)
