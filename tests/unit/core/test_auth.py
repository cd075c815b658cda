from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from adplatform.core.auth import (
    ApiKey,
    Authenticator,
    generate_api_key,
    hash_api_key,
    secret_matches,
)
from adplatform.core.db import create_engine, session_factory
from adplatform.core.errors import Unauthorized


def test_generated_keys_are_random_and_only_their_hash_is_kept() -> None:
    first, second = generate_api_key(), generate_api_key()
    assert first.plaintext != second.plaintext
    assert first.key_hash == hash_api_key(first.plaintext)
    assert first.plaintext not in first.key_hash
    assert first.plaintext.startswith(first.display_prefix)
    assert len(first.plaintext) > 40


def test_secret_matches() -> None:
    assert secret_matches(SecretStr("k"), "k")
    assert not secret_matches(SecretStr("k"), "K")
    assert not secret_matches(None, "k")
    assert not secret_matches(SecretStr("k"), None)
    assert not secret_matches(SecretStr("k"), "")


@pytest.fixture
async def authenticator(tmp_path: Path) -> Authenticator:
    engine = create_engine(f"sqlite:///{tmp_path / 'auth.db'}")
    # The real tables come from the migrations (campaign-service owns `advertisers`);
    # here only the columns the authenticator touches.
    async with engine.begin() as connection:
        await connection.exec_driver_sql("CREATE TABLE advertisers (id INTEGER PRIMARY KEY)")
        await connection.exec_driver_sql(
            "CREATE TABLE api_keys (id INTEGER PRIMARY KEY, advertiser_id INTEGER NOT NULL"
            " REFERENCES advertisers (id), key_hash VARCHAR(64) UNIQUE NOT NULL,"
            " display_prefix VARCHAR(16) NOT NULL,"
            " created_at DATETIME DEFAULT CURRENT_TIMESTAMP, revoked_at DATETIME)"
        )
        await connection.exec_driver_sql("INSERT INTO advertisers (id) VALUES (1), (2)")
    return Authenticator(SecretStr("admin-key"), session_factory(engine), cache_seconds=60)


async def test_admin_and_advertiser_keys(authenticator: Authenticator) -> None:
    issued = generate_api_key()
    async with authenticator.sessions() as session, session.begin():
        session.add(ApiKey(advertiser_id=2, key_hash=issued.key_hash, display_prefix="p"))
    admin = await authenticator.authenticate("admin-key")
    assert admin.is_admin
    assert admin.may_see(99)
    advertiser = await authenticator.authenticate(issued.plaintext)
    assert advertiser.advertiser_id == 2
    assert advertiser.may_see(2)
    assert not advertiser.may_see(1)


@pytest.mark.parametrize("key", [None, "", "adp_wrong", "admin-key "])
async def test_missing_or_wrong_keys_are_unauthorized(
    authenticator: Authenticator, key: str | None
) -> None:
    with pytest.raises(Unauthorized) as info:
        await authenticator.authenticate(key)
    assert info.value.status_code == 401


async def test_revoked_key_stops_working_once_cache_is_dropped(
    authenticator: Authenticator,
) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import update

    issued = generate_api_key()
    async with authenticator.sessions() as session, session.begin():
        session.add(ApiKey(advertiser_id=1, key_hash=issued.key_hash, display_prefix="p"))
    await authenticator.authenticate(issued.plaintext)
    async with authenticator.sessions() as session, session.begin():
        await session.execute(update(ApiKey).values(revoked_at=datetime.now(UTC)))
    authenticator.forget()
    with pytest.raises(Unauthorized):
        await authenticator.authenticate(issued.plaintext)
