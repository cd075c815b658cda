"""The campaign store: every read and write of campaign-service, with its rules.

Writes run in one transaction each, which also inserts the outbox row describing the
campaign's new state, so the database and `campaign-updates` can never disagree for
long: either both the change and its event exist, or neither does.

Ordering. A write first locks its campaign row (`SELECT ... FOR UPDATE`) and only then
inserts the outbox row, so two writes of one campaign get outbox ids in commit order,
and the relay, which publishes by id, keeps each campaign's events in order.

Snapshot consistency. Outbox writers hold a *shared* PostgreSQL advisory lock for
their transaction; the snapshot briefly takes it *exclusively* while it starts its
repeatable-read transaction. At that instant no outbox writer is in flight, so every
outbox id up to the snapshot's `position` is committed and in the snapshot, and every
later one is not. (On SQLite, dev mode, one in-process lock serialises writers.)

Tenancy. An advertiser key's queries are filtered by its advertiser id, so another
advertiser's resource is simply not found (404), exactly like one that does not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Select, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from adplatform.campaigns import rules
from adplatform.campaigns.fastpath import FastReads
from adplatform.campaigns.models import Advertiser, Campaign, Creative, OutboxRow
from adplatform.campaigns.paging import encode_cursor
from adplatform.campaigns.preconditions import IfMatch, check_version
from adplatform.campaigns.rules import (
    CampaignStatus,
    CreativeStatus,
    Violation,
    raise_if_any,
)
from adplatform.campaigns.schemas import (
    AdvertiserCreate,
    AdvertiserPatch,
    CampaignCreate,
    CampaignPatch,
    CreativeCreate,
    CreativePatch,
)
from adplatform.campaigns.state import (
    advertiser_dict,
    api_key_dict,
    campaign_dict,
    campaign_dict_from_record,
    campaign_state,
    creative_dict,
    creative_dict_from_record,
    full_targeting,
)
from adplatform.core.auth import ApiKey, Principal, generate_api_key
from adplatform.core.db import is_sqlite, session_factory
from adplatform.core.errors import ApiError, Conflict, Forbidden, NotFound, ValidationFailed
from adplatform.core.events import encode

OUTBOX_LOCK_KEY: Final = 0x0AD0_0B01
"""Advisory lock id shared by outbox writers (shared) and the snapshot (exclusive)."""
MAX_CREATIVES_PER_CAMPAIGN: Final = 100

_SHARED_OUTBOX_LOCK = text("SELECT pg_advisory_xact_lock_shared(:key)").bindparams(
    key=OUTBOX_LOCK_KEY
)

_CAMPAIGN_COLUMNS = Campaign.__table__.c
_CREATIVE_COLUMNS = Creative.__table__.c


@dataclass(frozen=True, slots=True)
class PageResult:
    items: list[dict[str, Any]]
    next_cursor: str | None


def _page(rows: Sequence[Any], limit: int, convert: Callable[[Any], dict[str, Any]]) -> PageResult:
    items = [convert(row) for row in rows[:limit]]
    next_cursor = encode_cursor(items[-1]["id"]) if len(rows) > limit else None
    return PageResult(items, next_cursor)


def _now() -> datetime:
    return datetime.now(UTC)


def _duplicate(field: str, message: str) -> Conflict:
    return Conflict(message, code="duplicate_name", details={"field": field})


def _require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("this needs the admin key")


def _integrity_error(exc: IntegrityError) -> ApiError:
    """A constraint the checks before the write did not catch (a concurrent write won
    the race): still the client's 4xx, never a 500."""
    message = str(exc.orig)
    if (
        "uq_campaigns_advertiser_id_name" in message
        or "campaigns.advertiser_id, campaigns.name" in message
    ):
        return _duplicate("name", "this advertiser already has a campaign with that name")
    if "uq_advertisers_name" in message or "advertisers.name" in message:
        return _duplicate("name", "an advertiser with that name already exists")
    if "foreign key" in message.lower():
        return NotFound("a referenced resource no longer exists")
    return ValidationFailed("the change violates a data constraint", details=[{"field": "body"}])


class CampaignStore:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        on_outbox_commit: Callable[[], None] | None = None,
        fast: FastReads | None = None,
    ):
        self.engine = engine
        self.fast = fast
        """asyncpg reads for the hot single-row queries (PostgreSQL only)."""
        self.sessions = session_factory(engine)
        self.sqlite = is_sqlite(engine)
        self.write_gate = asyncio.Lock() if self.sqlite else None
        """SQLite allows one writer; queueing them here beats `database is locked`."""
        self.on_outbox_commit = on_outbox_commit or (lambda: None)

    # ------------------------------------------------------------- transactions

    @contextlib.asynccontextmanager
    async def write(self, *, outbox: bool) -> AsyncIterator[AsyncSession]:
        gate = self.write_gate if self.write_gate is not None else contextlib.nullcontext()
        async with gate:
            try:
                async with self.sessions() as session, session.begin():
                    if outbox and not self.sqlite:
                        await session.execute(_SHARED_OUTBOX_LOCK)
                    yield session
            except IntegrityError as exc:
                raise _integrity_error(exc) from exc
        if outbox:
            self.on_outbox_commit()

    async def _emit(self, session: AsyncSession, campaign: Campaign) -> None:
        """Insert the outbox row for the campaign's state as of this transaction."""
        creatives = (
            await session.scalars(
                select(Creative)
                .where(Creative.campaign_id == campaign.id, Creative.status == "active")
                .order_by(Creative.id)
            )
        ).all()
        state = campaign_state(campaign, creatives)
        session.add(
            OutboxRow(
                campaign_id=campaign.id,
                campaign_version=campaign.version,
                deleted=campaign.status == CampaignStatus.ARCHIVED,
                state=encode(state),
                created_at=_now(),
            )
        )

    # --------------------------------------------------------------- advertisers

    async def create_advertiser(
        self, principal: Principal, data: AdvertiserCreate
    ) -> dict[str, Any]:
        _require_admin(principal)
        async with self.write(outbox=False) as session:
            if await session.scalar(select(Advertiser.id).where(Advertiser.name == data.name)):
                raise _duplicate("name", "an advertiser with that name already exists")
            now = _now()
            advertiser = Advertiser(
                name=data.name, domain=data.domain, version=1, created_at=now, updated_at=now
            )
            session.add(advertiser)
            await session.flush()
        return advertiser_dict(advertiser)

    async def get_advertiser(self, principal: Principal, advertiser_id: int) -> dict[str, Any]:
        if not principal.may_see(advertiser_id):
            raise NotFound("advertiser not found")
        async with self.engine.connect() as connection:
            row = (
                await connection.execute(
                    select(Advertiser.__table__).where(Advertiser.id == advertiser_id)
                )
            ).first()
        if row is None:
            raise NotFound("advertiser not found")
        return advertiser_dict(row)

    async def list_advertisers(self, principal: Principal, *, limit: int, after: int) -> PageResult:
        stmt = (
            select(Advertiser.__table__)
            .where(Advertiser.id > after)
            .order_by(Advertiser.id)
            .limit(limit + 1)
        )
        if not principal.is_admin:
            stmt = stmt.where(Advertiser.id == principal.advertiser_id)
        async with self.engine.connect() as connection:
            rows = (await connection.execute(stmt)).all()
        return _page(rows, limit, advertiser_dict)

    async def update_advertiser(
        self,
        principal: Principal,
        advertiser_id: int,
        patch: AdvertiserPatch,
        if_match: IfMatch | None,
    ) -> dict[str, Any]:
        if not principal.may_see(advertiser_id):
            raise NotFound("advertiser not found")
        _require_admin(principal)
        async with self.write(outbox=False) as session:
            advertiser = await session.scalar(
                select(Advertiser).where(Advertiser.id == advertiser_id).with_for_update()
            )
            if advertiser is None:
                raise NotFound("advertiser not found")
            check_version(advertiser.version, if_match, patch.version)
            changes = patch.model_dump(exclude_unset=True, exclude={"version"})
            changes = {k: v for k, v in changes.items() if getattr(advertiser, k) != v}
            if "name" in changes and await session.scalar(
                select(Advertiser.id).where(
                    Advertiser.name == changes["name"], Advertiser.id != advertiser_id
                )
            ):
                raise _duplicate("name", "an advertiser with that name already exists")
            if changes:
                for key, value in changes.items():
                    setattr(advertiser, key, value)
                advertiser.version += 1
                advertiser.updated_at = _now()
                await session.flush()
        return advertiser_dict(advertiser)

    # ------------------------------------------------------------------ api keys

    async def issue_api_key(self, principal: Principal, advertiser_id: int) -> dict[str, Any]:
        if not principal.may_see(advertiser_id):
            raise NotFound("advertiser not found")
        _require_admin(principal)
        issued = generate_api_key()
        async with self.write(outbox=False) as session:
            if await session.get(Advertiser, advertiser_id) is None:
                raise NotFound("advertiser not found")
            key = ApiKey(
                advertiser_id=advertiser_id,
                key_hash=issued.key_hash,
                display_prefix=issued.display_prefix,
                created_at=_now(),
            )
            session.add(key)
            await session.flush()
            result = api_key_dict(key)
        return {**result, "key": issued.plaintext}

    async def list_api_keys(self, principal: Principal, advertiser_id: int) -> list[dict[str, Any]]:
        await self.get_advertiser(principal, advertiser_id)
        async with self.engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(ApiKey.__table__)
                    .where(ApiKey.advertiser_id == advertiser_id)
                    .order_by(ApiKey.id)
                )
            ).all()
        return [api_key_dict(row) for row in rows]

    async def revoke_api_key(
        self, principal: Principal, advertiser_id: int, key_id: int
    ) -> dict[str, Any]:
        if not principal.may_see(advertiser_id):
            raise NotFound("advertiser not found")
        _require_admin(principal)
        async with self.write(outbox=False) as session:
            key = await session.scalar(
                select(ApiKey)
                .where(ApiKey.id == key_id, ApiKey.advertiser_id == advertiser_id)
                .with_for_update()
            )
            if key is None:
                raise NotFound("API key not found")
            if key.revoked_at is None:
                key.revoked_at = _now()
                await session.flush()
            return api_key_dict(key)

    # ----------------------------------------------------------------- campaigns

    def _campaign_scope(self, stmt: Select[Any], principal: Principal) -> Select[Any]:
        if principal.is_admin:
            return stmt
        return stmt.where(_CAMPAIGN_COLUMNS.advertiser_id == principal.advertiser_id)

    async def get_campaign(self, principal: Principal, campaign_id: int) -> dict[str, Any]:
        if self.fast is not None:
            found = await self.fast.campaign(campaign_id, principal.advertiser_id)
            if found is None:
                raise NotFound("campaign not found")
            return campaign_dict_from_record(found)
        stmt = self._campaign_scope(
            select(Campaign.__table__).where(_CAMPAIGN_COLUMNS.id == campaign_id), principal
        )
        async with self.engine.connect() as connection:
            row = (await connection.execute(stmt)).first()
        if row is None:
            raise NotFound("campaign not found")
        return campaign_dict(row)

    async def list_campaigns(
        self,
        principal: Principal,
        *,
        status: CampaignStatus | None,
        advertiser_id: int | None,
        limit: int,
        after: int,
    ) -> PageResult:
        if self.fast is not None:
            records = await self.fast.campaigns(
                after=after,
                limit=limit + 1,
                owner=principal.advertiser_id,
                status=status.value if status is not None else None,
                advertiser_id=advertiser_id,
            )
            return _page(records, limit, campaign_dict_from_record)
        stmt = self._campaign_scope(
            select(Campaign.__table__)
            .where(_CAMPAIGN_COLUMNS.id > after)
            .order_by(_CAMPAIGN_COLUMNS.id)
            .limit(limit + 1),
            principal,
        )
        if status is not None:
            stmt = stmt.where(_CAMPAIGN_COLUMNS.status == status.value)
        if advertiser_id is not None:
            stmt = stmt.where(_CAMPAIGN_COLUMNS.advertiser_id == advertiser_id)
        async with self.engine.connect() as connection:
            rows = (await connection.execute(stmt)).all()
        return _page(rows, limit, campaign_dict)

    def _owner_for_new_campaign(self, principal: Principal, requested: int | None) -> int:
        if principal.is_admin:
            if requested is None:
                raise ValidationFailed(
                    "advertiser_id is required with the admin key",
                    details=[{"field": "advertiser_id", "message": "required", "type": "missing"}],
                )
            return requested
        assert principal.advertiser_id is not None
        if requested is not None and requested != principal.advertiser_id:
            raise NotFound("advertiser not found")
        return principal.advertiser_id

    async def create_campaign(self, principal: Principal, data: CampaignCreate) -> dict[str, Any]:
        advertiser_id = self._owner_for_new_campaign(principal, data.advertiser_id)
        targeting = data.targeting.model_dump(mode="json")
        violations = [
            *rules.budget_violations(
                total_budget_micros=data.total_budget_micros,
                daily_budget_micros=data.daily_budget_micros,
                max_bid_cpm_micros=data.max_bid_cpm_micros,
            ),
            *rules.flight_violations(data.flight_start, data.flight_end),
            *rules.targeting_violations(targeting),
        ]
        for index, creative in enumerate(data.creatives):
            violations += [
                Violation(f"creatives.{index}.{v.field}", v.message, v.type)
                for v in rules.creative_violations(
                    markup=creative.markup, image_url=creative.image_url
                )
            ]
        raise_if_any(violations)
        status = CampaignStatus(data.status)
        if status == CampaignStatus.ACTIVE:
            rules.check_activation(
                active_creatives=sum(1 for c in data.creatives if c.status == "active"),
                flight_end=data.flight_end,
            )
        cap = data.frequency_cap
        async with self.write(outbox=True) as session:
            if await session.get(Advertiser, advertiser_id) is None:
                raise NotFound("advertiser not found")
            if await session.scalar(
                select(Campaign.id).where(
                    Campaign.advertiser_id == advertiser_id, Campaign.name == data.name
                )
            ):
                raise _duplicate("name", "this advertiser already has a campaign with that name")
            now = _now()
            campaign = Campaign(
                advertiser_id=advertiser_id,
                name=data.name,
                status=status.value,
                total_budget_micros=data.total_budget_micros,
                daily_budget_micros=data.daily_budget_micros,
                max_bid_cpm_micros=data.max_bid_cpm_micros,
                pacing=data.pacing.value,
                flight_start=data.flight_start,
                flight_end=data.flight_end,
                frequency_cap_impressions=cap.impressions if cap else None,
                frequency_cap_window_seconds=cap.window_seconds if cap else None,
                targeting=targeting,
                version=1,
                created_at=now,
                updated_at=now,
            )
            session.add(campaign)
            await session.flush()
            session.add_all([_new_creative(campaign, creative, now) for creative in data.creatives])
            await session.flush()
            await self._emit(session, campaign)
        return campaign_dict(campaign)

    async def _lock_campaign(
        self, session: AsyncSession, principal: Principal, campaign_id: int
    ) -> Campaign:
        stmt = select(Campaign).where(Campaign.id == campaign_id).with_for_update()
        if not principal.is_admin:
            stmt = stmt.where(Campaign.advertiser_id == principal.advertiser_id)
        campaign = await session.scalar(stmt)
        if campaign is None:
            raise NotFound("campaign not found")
        return campaign

    async def _active_creative_count(self, session: AsyncSession, campaign_id: int) -> int:
        count = await session.scalar(
            select(func.count())
            .select_from(Creative)
            .where(Creative.campaign_id == campaign_id, Creative.status == "active")
        )
        return int(count or 0)

    async def update_campaign(
        self,
        principal: Principal,
        campaign_id: int,
        patch: CampaignPatch,
        if_match: IfMatch | None,
    ) -> dict[str, Any]:
        async with self.write(outbox=True) as session:
            campaign = await self._lock_campaign(session, principal, campaign_id)
            check_version(campaign.version, if_match, patch.version)
            changes = _campaign_changes(campaign, patch)
            current = CampaignStatus(campaign.status)
            target = CampaignStatus(changes.pop("status", current))
            transition = rules.check_campaign_transition(current, target)
            if changes:
                rules.check_campaign_editable(current)
            merged = {name: getattr(campaign, name) for name in _EDITABLE_FIELDS} | changes
            raise_if_any(
                [
                    *rules.budget_violations(
                        total_budget_micros=merged["total_budget_micros"],
                        daily_budget_micros=merged["daily_budget_micros"],
                        max_bid_cpm_micros=merged["max_bid_cpm_micros"],
                    ),
                    *rules.flight_violations(merged["flight_start"], merged["flight_end"]),
                    *rules.targeting_violations(merged["targeting"]),
                ]
            )
            if transition and target == CampaignStatus.ACTIVE:
                rules.check_activation(
                    active_creatives=await self._active_creative_count(session, campaign.id),
                    flight_end=merged["flight_end"],
                )
            if "name" in changes and await session.scalar(
                select(Campaign.id).where(
                    Campaign.advertiser_id == campaign.advertiser_id,
                    Campaign.name == changes["name"],
                    Campaign.id != campaign.id,
                )
            ):
                raise _duplicate("name", "this advertiser already has a campaign with that name")
            if not changes and not transition:
                return campaign_dict(campaign)
            for key, value in changes.items():
                setattr(campaign, key, value)
            campaign.status = target.value
            campaign.version += 1
            campaign.updated_at = _now()
            await session.flush()
            await self._emit(session, campaign)
        return campaign_dict(campaign)

    async def change_campaign_status(
        self,
        principal: Principal,
        campaign_id: int,
        status: CampaignStatus,
        *,
        if_match: IfMatch | None,
        version: int | None,
    ) -> dict[str, Any]:
        fields = {"status", "version"} if version is not None else {"status"}
        patch = CampaignPatch.model_construct(fields, status=status, version=version)
        return await self.update_campaign(principal, campaign_id, patch, if_match)

    # ----------------------------------------------------------------- creatives

    async def get_creative(self, principal: Principal, creative_id: int) -> dict[str, Any]:
        if self.fast is not None:
            found = await self.fast.creative(creative_id, principal.advertiser_id)
            if found is None:
                raise NotFound("creative not found")
            return creative_dict_from_record(found)
        stmt = select(Creative.__table__).where(_CREATIVE_COLUMNS.id == creative_id)
        if not principal.is_admin:
            stmt = stmt.where(_CREATIVE_COLUMNS.advertiser_id == principal.advertiser_id)
        async with self.engine.connect() as connection:
            row = (await connection.execute(stmt)).first()
        if row is None:
            raise NotFound("creative not found")
        return creative_dict(row)

    async def list_creatives(
        self,
        principal: Principal,
        campaign_id: int,
        *,
        status: CreativeStatus | None,
        limit: int,
        after: int,
    ) -> PageResult:
        visible = self._campaign_scope(
            select(_CAMPAIGN_COLUMNS.id).where(_CAMPAIGN_COLUMNS.id == campaign_id), principal
        )
        stmt = (
            select(Creative.__table__)
            .where(_CREATIVE_COLUMNS.campaign_id == campaign_id, _CREATIVE_COLUMNS.id > after)
            .order_by(_CREATIVE_COLUMNS.id)
            .limit(limit + 1)
        )
        if status is not None:
            stmt = stmt.where(_CREATIVE_COLUMNS.status == status.value)
        async with self.engine.connect() as connection:
            if (await connection.execute(visible)).first() is None:
                raise NotFound("campaign not found")
            rows = (await connection.execute(stmt)).all()
        return _page(rows, limit, creative_dict)

    async def create_creative(
        self, principal: Principal, campaign_id: int, data: CreativeCreate
    ) -> dict[str, Any]:
        raise_if_any(rules.creative_violations(markup=data.markup, image_url=data.image_url))
        async with self.write(outbox=True) as session:
            campaign = await self._lock_campaign(session, principal, campaign_id)
            rules.check_campaign_editable(CampaignStatus(campaign.status))
            existing = await session.scalar(
                select(func.count())
                .select_from(Creative)
                .where(Creative.campaign_id == campaign.id, Creative.status != "archived")
            )
            if (existing or 0) >= MAX_CREATIVES_PER_CAMPAIGN:
                raise Conflict(
                    f"a campaign may have at most {MAX_CREATIVES_PER_CAMPAIGN} creatives",
                    code="too_many_creatives",
                    details={"field": "campaign_id"},
                )
            now = _now()
            creative = _new_creative(campaign, data, now)
            session.add(creative)
            campaign.version += 1
            campaign.updated_at = now
            await session.flush()
            await self._emit(session, campaign)
        return creative_dict(creative)

    async def _lock_creative(
        self, session: AsyncSession, principal: Principal, creative_id: int
    ) -> tuple[Campaign, Creative]:
        """Locks in the order campaign, then creative (as every writer does): no deadlock."""
        stmt = select(Creative.campaign_id).where(Creative.id == creative_id)
        if not principal.is_admin:
            stmt = stmt.where(Creative.advertiser_id == principal.advertiser_id)
        campaign_id = await session.scalar(stmt)
        if campaign_id is None:
            raise NotFound("creative not found")
        campaign = await self._lock_campaign(session, principal, campaign_id)
        creative = await session.scalar(
            select(Creative).where(Creative.id == creative_id).with_for_update()
        )
        if creative is None:
            raise NotFound("creative not found")
        return campaign, creative

    async def update_creative(
        self,
        principal: Principal,
        creative_id: int,
        patch: CreativePatch,
        if_match: IfMatch | None,
    ) -> dict[str, Any]:
        async with self.write(outbox=True) as session:
            campaign, creative = await self._lock_creative(session, principal, creative_id)
            check_version(creative.version, if_match, patch.version)
            changes = patch.model_dump(exclude_unset=True, exclude={"version"})
            changes = {k: v for k, v in changes.items() if getattr(creative, k) != v}
            current = CreativeStatus(creative.status)
            target = CreativeStatus(changes.pop("status", current))
            if current == CreativeStatus.ARCHIVED and changes:
                raise rules.ReadOnly("an archived creative can no longer be changed")
            transition = rules.check_creative_transition(current, target)
            if not changes and not transition:
                return creative_dict(creative)
            rules.check_campaign_editable(CampaignStatus(campaign.status))
            raise_if_any(
                rules.creative_violations(
                    markup=changes.get("markup", creative.markup),
                    image_url=changes.get("image_url", creative.image_url),
                )
            )
            now = _now()
            for key, value in changes.items():
                setattr(creative, key, value)
            creative.status = target.value
            creative.version += 1
            creative.updated_at = now
            campaign.version += 1
            campaign.updated_at = now
            await session.flush()
            await self._emit(session, campaign)
        return creative_dict(creative)

    async def archive_creative(
        self, principal: Principal, creative_id: int, if_match: IfMatch | None
    ) -> dict[str, Any]:
        patch = CreativePatch.model_construct({"status"}, status=CreativeStatus.ARCHIVED)
        return await self.update_creative(principal, creative_id, patch, if_match)

    # ------------------------------------------------------------------- outbox

    async def outbox_position(self) -> int:
        async with self.engine.connect() as connection:
            value = await connection.scalar(select(func.max(OutboxRow.id)))
        return int(value or 0)

    async def mark_all_outbox_sent(self) -> None:
        """For tools that load data with the relay deliberately bypassed."""
        async with self.write(outbox=False) as session:
            await session.execute(
                update(OutboxRow).where(OutboxRow.sent_at.is_(None)).values(sent_at=_now())
            )


_EDITABLE_FIELDS: Final = (
    "name",
    "total_budget_micros",
    "daily_budget_micros",
    "max_bid_cpm_micros",
    "pacing",
    "flight_start",
    "flight_end",
    "frequency_cap_impressions",
    "frequency_cap_window_seconds",
    "targeting",
)


def _campaign_changes(campaign: Campaign, patch: CampaignPatch) -> dict[str, Any]:
    """Column values the patch actually changes (so an identical PATCH is a no-op that
    neither bumps the version nor emits an event)."""
    given = patch.model_dump(exclude_unset=True, exclude={"version"}, mode="python")
    changes: dict[str, Any] = {}
    for name, value in given.items():
        if name == "frequency_cap":
            changes["frequency_cap_impressions"] = value["impressions"] if value else None
            changes["frequency_cap_window_seconds"] = value["window_seconds"] if value else None
        elif name == "targeting":
            assert patch.targeting is not None
            provided = patch.targeting.model_dump(
                mode="json", include=patch.targeting.model_fields_set
            )
            changes["targeting"] = {**full_targeting(campaign.targeting), **provided}
        elif name in ("status", "pacing"):
            changes[name] = str(value.value if hasattr(value, "value") else value)
        else:
            changes[name] = value
    return {k: v for k, v in changes.items() if k == "status" or getattr(campaign, k) != v}


def _new_creative(campaign: Campaign, data: CreativeCreate, now: datetime) -> Creative:
    return Creative(
        campaign_id=campaign.id,
        advertiser_id=campaign.advertiser_id,
        name=data.name,
        width=data.width,
        height=data.height,
        markup=data.markup,
        image_url=data.image_url,
        click_url=data.click_url,
        adomain=data.adomain,
        iab_category=data.iab_category,
        status=data.status,
        version=1,
        created_at=now,
        updated_at=now,
    )
