"""Fixtures: a migrated PostgreSQL database and the campaign app running on it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from adplatform.migrations import upgrade
from tests.integration.campaigns.support import Service, running_service


@pytest.fixture
async def campaign_db(postgres_url: str) -> str:
    await asyncio.to_thread(upgrade, postgres_url)
    return postgres_url


@pytest.fixture
async def service(campaign_db: str) -> AsyncIterator[Service]:
    async with running_service(campaign_db) as running:
        yield running
