"""API keys: who is calling, shared by every service that serves advertisers.

Two kinds of caller send `X-API-Key`:

- the **admin** key (`ADMIN_API_KEY`, from a Secret) manages advertisers and issues
  their keys, and sees everything;
- an **advertiser** key (issued by campaign-service, shown once, stored as a SHA-256
  hash) sees only that advertiser's resources. Anything else is a 404 to it, so a key
  cannot probe which ids exist.

Keys are 256-bit random tokens, so a plain SHA-256 (not a slow password hash) is the
right digest: there is nothing to brute-force. The `api_keys` table lives here because
campaign-service writes it and analytics-service reads it. Successful look-ups are
cached for `cache_seconds`, so a revoked key keeps working for at most that long.

Service-to-service calls (the bidder's snapshot) use `INTERNAL_API_KEY` in
`X-Internal-Key`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Final

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader
from pydantic import SecretStr
from sqlalchemy import DateTime, Integer, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from adplatform.core.db import Base
from adplatform.core.errors import Unauthorized

API_KEY_HEADER: Final = "X-API-Key"
INTERNAL_KEY_HEADER: Final = "X-Internal-Key"
KEY_PREFIX: Final = "adp"


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    advertiser_id: Mapped[int] = mapped_column(Integer, index=True)
    """References `advertisers.id` (ON DELETE CASCADE). The foreign key is declared in
    migration 0001 only: the `advertisers` table belongs to campaign-service, and core
    must not need its model to be imported."""
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    display_prefix: Mapped[str] = mapped_column(String(16))
    """The key's first characters, so a user can tell their keys apart."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: the admin, or one advertiser."""

    advertiser_id: int | None
    key_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.advertiser_id is None

    def may_see(self, advertiser_id: int) -> bool:
        return self.is_admin or self.advertiser_id == advertiser_id


ADMIN: Final = Principal(advertiser_id=None)


@dataclass(frozen=True, slots=True)
class IssuedKey:
    plaintext: str
    """Shown to the user once; never stored."""
    key_hash: str
    display_prefix: str


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_api_key() -> IssuedKey:
    plaintext = f"{KEY_PREFIX}_{secrets.token_urlsafe(32)}"
    return IssuedKey(plaintext, hash_api_key(plaintext), plaintext[:12])


def secret_matches(configured: SecretStr | None, provided: str | None) -> bool:
    """Constant-time comparison; an unconfigured secret matches nothing."""
    if configured is None or not provided:
        return False
    return hmac.compare_digest(configured.get_secret_value().encode(), provided.encode())


class Authenticator:
    """Turns an `X-API-Key` value into a `Principal`, or raises `Unauthorized`."""

    def __init__(
        self,
        admin_key: SecretStr | None,
        sessions: async_sessionmaker[AsyncSession],
        *,
        cache_seconds: float = 5.0,
        cache_size: int = 10_000,
    ) -> None:
        self.admin_key = admin_key
        self.sessions = sessions
        self.cache_seconds = cache_seconds
        self.cache_size = cache_size
        self._cache: dict[str, tuple[float, Principal]] = {}

    async def authenticate(self, key: str | None) -> Principal:
        if not key:
            raise Unauthorized(f"missing {API_KEY_HEADER} header")
        if secret_matches(self.admin_key, key):
            return ADMIN
        digest = hash_api_key(key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self.sessions() as session:
            row = (
                await session.execute(
                    select(ApiKey.id, ApiKey.advertiser_id).where(
                        ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None)
                    )
                )
            ).first()
        if row is None:
            raise Unauthorized("invalid API key")
        principal = Principal(advertiser_id=row.advertiser_id, key_id=row.id)
        if len(self._cache) >= self.cache_size:
            self._cache.clear()
        self._cache[digest] = (now + self.cache_seconds, principal)
        return principal

    def forget(self) -> None:
        """Drop cached look-ups (after a key is revoked in this process)."""
        self._cache.clear()


API_KEY_SCHEME: Final = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="The admin key (manages everything) or an advertiser's key (its own resources).",
)


async def current_principal(
    request: Request, key: Annotated[str | None, Security(API_KEY_SCHEME)]
) -> Principal:
    """FastAPI dependency: the caller, from the app's `state.authenticator`."""
    authenticator: Authenticator = request.app.state.authenticator
    return await authenticator.authenticate(key)


Caller = Annotated[Principal, Depends(current_principal)]
"""A route parameter typed `Caller` is the authenticated caller (401 otherwise)."""
