"""The bidder's start-up snapshot: every active campaign with its active creatives, and
the outbox position it corresponds to, read in one transaction.

`position` is the largest outbox id committed when the snapshot was taken, and the
snapshot reflects exactly the outbox rows up to it (see `service.py` for the advisory
lock that makes this exact), so a bidder that loads the snapshot and then applies
`campaign-updates` messages with `seq > position` (or, simply, newer `version`s) has
no gap and no stale state.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from adplatform.campaigns.models import Campaign, Creative, OutboxRow
from adplatform.campaigns.service import OUTBOX_LOCK_KEY, CampaignStore
from adplatform.campaigns.state import campaign_state
from adplatform.core.events import CampaignSnapshot

_campaigns = Campaign.__table__.c
_creatives = Creative.__table__.c


async def _read(connection: AsyncConnection) -> list[Any]:
    campaigns = (
        await connection.execute(
            select(Campaign.__table__).where(_campaigns.status == "active").order_by(_campaigns.id)
        )
    ).all()
    creatives = (
        await connection.execute(
            select(Creative.__table__)
            .join(Campaign.__table__, _campaigns.id == _creatives.campaign_id)
            .where(_campaigns.status == "active", _creatives.status == "active")
            .order_by(_creatives.campaign_id, _creatives.id)
        )
    ).all()
    by_campaign: dict[int, list[Any]] = defaultdict(list)
    for creative in creatives:
        by_campaign[creative.campaign_id].append(creative)
    return [campaign_state(row, by_campaign.get(row.id, ())) for row in campaigns]


async def read_snapshot(store: CampaignStore) -> CampaignSnapshot:
    position_query = select(func.coalesce(func.max(OutboxRow.id), 0))
    if store.write_gate is not None:  # SQLite: the in-process gate excludes writers
        async with store.write_gate, store.engine.connect() as connection, connection.begin():
            position = int(await connection.scalar(position_query) or 0)
            states = await _read(connection)
        return CampaignSnapshot(position=position, generated_at=datetime.now(UTC), campaigns=states)

    lock = text("SELECT pg_advisory_lock(:key)").bindparams(key=OUTBOX_LOCK_KEY)
    unlock = text("SELECT pg_advisory_unlock(:key)").bindparams(key=OUTBOX_LOCK_KEY)
    async with store.engine.connect() as connection:
        # Exclusive: waits for in-flight outbox writers, holds new ones back for the
        # milliseconds until the repeatable-read snapshot below is taken.
        await connection.execute(lock)
        await connection.commit()
        locked = True
        try:
            snapshot_connection = await connection.execution_options(
                isolation_level="REPEATABLE READ"
            )
            async with snapshot_connection.begin():
                position = int(await snapshot_connection.scalar(position_query) or 0)
                await snapshot_connection.execute(unlock)
                locked = False
                states = await _read(snapshot_connection)
        finally:
            if locked:
                # Never hand a pooled connection back holding the lock.
                with contextlib.suppress(Exception):
                    await connection.invalidate()
    return CampaignSnapshot(position=position, generated_at=datetime.now(UTC), campaigns=states)
