"""HTTP routes of campaign-service (FastAPI; the OpenAPI docs are served at `/docs`).

Handlers stay thin: parse, call the store, encode. Bodies are encoded with msgspec
straight from dicts (the response models document them), and every single-resource
response carries `ETag: "<version>"` for `If-Match`.
"""

from __future__ import annotations

import asyncio
import gzip
from typing import Annotated, Any, Final

import msgspec
from fastapi import APIRouter, Depends, Header, Path, Query, Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from adplatform.campaigns import rules, schemas
from adplatform.campaigns.paging import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor
from adplatform.campaigns.preconditions import IfMatch, etag
from adplatform.campaigns.rules import CampaignStatus, CreativeStatus
from adplatform.campaigns.service import CampaignStore, PageResult
from adplatform.campaigns.snapshot import read_snapshot
from adplatform.core.auth import (
    API_KEY_HEADER,
    INTERNAL_KEY_HEADER,
    Caller,
    Principal,
    secret_matches,
)
from adplatform.core.errors import Unauthorized
from adplatform.core.events import encode

_encoder = msgspec.json.Encoder()

ERROR_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    code: {"model": schemas.ErrorBody, "description": description}
    for code, description in {
        400: "Malformed JSON or request",
        401: "Missing or invalid API key",
        403: "Needs the admin key",
        404: "Not found (or not yours)",
        409: "Conflict: illegal status change, duplicate name, stale body `version`",
        412: "Stale `If-Match`",
        413: "Body too large",
        422: "Invalid field (the body names it)",
        503: "Database unavailable",
    }.items()
}


async def _store(request: Request) -> CampaignStore:
    # async on purpose: FastAPI runs a sync dependency in a worker thread per request
    store: CampaignStore = request.app.state.store
    return store


Store = Annotated[CampaignStore, Depends(_store)]
IfMatchHeader = Annotated[
    str | None,
    Header(
        alias="If-Match",
        max_length=512,
        description='The ETag you read (`"3"`); if it is stale the write is a 412.',
    ),
]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size.")]
Cursor = Annotated[
    str | None, Query(max_length=200, description="`next_cursor` of the previous page.")
]
AdvertiserId = Annotated[int, Path(ge=1, le=rules.MAX_ID)]
CampaignId = Annotated[int, Path(ge=1, le=rules.MAX_ID)]
CreativeId = Annotated[int, Path(ge=1, le=rules.MAX_ID)]
KeyId = Annotated[int, Path(ge=1, le=rules.MAX_ID)]


def _json(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        _encoder.encode(body), status_code=status, media_type="application/json", headers=headers
    )


def _resource(body: dict[str, Any], *, status: int = 200, location: str | None = None) -> Response:
    headers = {"ETag": etag(body["version"])}
    if location:
        headers["Location"] = location
    return _json(body, status=status, headers=headers)


def _page(result: PageResult) -> Response:
    return _json({"items": result.items, "next_cursor": result.next_cursor})


router = APIRouter(responses=ERROR_RESPONSES)

# Hot routes first: the router tries routes in order.

# ------------------------------------------------------------------- campaigns


@router.post(
    "/campaigns",
    status_code=201,
    response_model=schemas.CampaignOut,
    tags=["campaigns"],
    summary="Create a campaign (optionally with its creatives, in one transaction)",
)
async def create_campaign(
    body: schemas.CampaignCreate, principal: Caller, store: Store
) -> Response:
    campaign = await store.create_campaign(principal, body)
    return _resource(campaign, status=201, location=f"/campaigns/{campaign['id']}")


@router.get(
    "/campaigns",
    response_model=schemas.Page[schemas.CampaignOut],
    tags=["campaigns"],
    summary="List campaigns, oldest first, with stable cursor pagination",
)
async def list_campaigns(
    principal: Caller,
    store: Store,
    status: Annotated[CampaignStatus | None, Query(description="Only this status.")] = None,
    advertiser_id: Annotated[
        int | None, Query(ge=1, le=rules.MAX_ID, description="Only this advertiser's.")
    ] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    result = await store.list_campaigns(
        principal,
        status=status,
        advertiser_id=advertiser_id,
        limit=limit,
        after=decode_cursor(cursor),
    )
    return _page(result)


@router.get(
    "/campaigns/{campaign_id}",
    response_model=schemas.CampaignOut,
    tags=["campaigns"],
    summary="Get a campaign",
)
async def get_campaign(campaign_id: CampaignId, principal: Caller, request: Request) -> Response:
    # The hottest route: one dependency (the caller) instead of two.
    store: CampaignStore = request.app.state.store
    return _resource(await store.get_campaign(principal, campaign_id))


@router.patch(
    "/campaigns/{campaign_id}",
    response_model=schemas.CampaignOut,
    tags=["campaigns"],
    summary="Change some fields (and/or the status) of a campaign",
)
async def update_campaign(
    campaign_id: CampaignId,
    body: schemas.CampaignPatch,
    principal: Caller,
    store: Store,
    if_match: IfMatchHeader = None,
) -> Response:
    campaign = await store.update_campaign(principal, campaign_id, body, IfMatch.parse(if_match))
    return _resource(campaign)


@router.post(
    "/campaigns/{campaign_id}/status",
    response_model=schemas.CampaignOut,
    tags=["campaigns"],
    summary="Change a campaign's status (draft → active ⇄ paused → completed; → archived)",
)
async def change_campaign_status(
    campaign_id: CampaignId,
    body: schemas.StatusChange,
    principal: Caller,
    store: Store,
    if_match: IfMatchHeader = None,
) -> Response:
    campaign = await store.change_campaign_status(
        principal,
        campaign_id,
        body.status,
        if_match=IfMatch.parse(if_match),
        version=body.version,
    )
    return _resource(campaign)


@router.delete(
    "/campaigns/{campaign_id}",
    response_model=schemas.CampaignOut,
    tags=["campaigns"],
    summary="Archive a campaign (it stops bidding; the record stays for reporting)",
)
async def archive_campaign(
    campaign_id: CampaignId, principal: Caller, store: Store, if_match: IfMatchHeader = None
) -> Response:
    campaign = await store.change_campaign_status(
        principal,
        campaign_id,
        CampaignStatus.ARCHIVED,
        if_match=IfMatch.parse(if_match),
        version=None,
    )
    return _resource(campaign)


# ------------------------------------------------------------------- creatives


@router.post(
    "/campaigns/{campaign_id}/creatives",
    status_code=201,
    response_model=schemas.CreativeOut,
    tags=["creatives"],
    summary="Add a creative to a campaign",
)
async def create_creative(
    campaign_id: CampaignId, body: schemas.CreativeCreate, principal: Caller, store: Store
) -> Response:
    creative = await store.create_creative(principal, campaign_id, body)
    return _resource(creative, status=201, location=f"/creatives/{creative['id']}")


@router.get(
    "/campaigns/{campaign_id}/creatives",
    response_model=schemas.Page[schemas.CreativeOut],
    tags=["creatives"],
    summary="List a campaign's creatives",
)
async def list_creatives(
    campaign_id: CampaignId,
    principal: Caller,
    store: Store,
    status: Annotated[CreativeStatus | None, Query(description="Only this status.")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    result = await store.list_creatives(
        principal, campaign_id, status=status, limit=limit, after=decode_cursor(cursor)
    )
    return _page(result)


@router.get(
    "/creatives/{creative_id}",
    response_model=schemas.CreativeOut,
    tags=["creatives"],
    summary="Get a creative",
)
async def get_creative(creative_id: CreativeId, principal: Caller, request: Request) -> Response:
    store: CampaignStore = request.app.state.store
    return _resource(await store.get_creative(principal, creative_id))


@router.patch(
    "/creatives/{creative_id}",
    response_model=schemas.CreativeOut,
    tags=["creatives"],
    summary="Change some fields (and/or the status: active ⇄ paused) of a creative",
)
async def update_creative(
    creative_id: CreativeId,
    body: schemas.CreativePatch,
    principal: Caller,
    store: Store,
    if_match: IfMatchHeader = None,
) -> Response:
    creative = await store.update_creative(principal, creative_id, body, IfMatch.parse(if_match))
    return _resource(creative)


@router.delete(
    "/creatives/{creative_id}",
    response_model=schemas.CreativeOut,
    tags=["creatives"],
    summary="Archive a creative (it stops serving)",
)
async def archive_creative(
    creative_id: CreativeId, principal: Caller, store: Store, if_match: IfMatchHeader = None
) -> Response:
    creative = await store.archive_creative(principal, creative_id, IfMatch.parse(if_match))
    return _resource(creative)


# ----------------------------------------------------------------- advertisers


@router.post(
    "/advertisers",
    status_code=201,
    response_model=schemas.AdvertiserOut,
    tags=["advertisers"],
    summary="Create an advertiser (admin)",
)
async def create_advertiser(
    body: schemas.AdvertiserCreate, principal: Caller, store: Store
) -> Response:
    advertiser = await store.create_advertiser(principal, body)
    return _resource(advertiser, status=201, location=f"/advertisers/{advertiser['id']}")


@router.get(
    "/advertisers",
    response_model=schemas.Page[schemas.AdvertiserOut],
    tags=["advertisers"],
    summary="List advertisers (an advertiser key sees itself)",
)
async def list_advertisers(
    principal: Caller, store: Store, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Response:
    return _page(await store.list_advertisers(principal, limit=limit, after=decode_cursor(cursor)))


@router.get(
    "/advertisers/{advertiser_id}",
    response_model=schemas.AdvertiserOut,
    tags=["advertisers"],
    summary="Get an advertiser",
)
async def get_advertiser(advertiser_id: AdvertiserId, principal: Caller, store: Store) -> Response:
    return _resource(await store.get_advertiser(principal, advertiser_id))


@router.patch(
    "/advertisers/{advertiser_id}",
    response_model=schemas.AdvertiserOut,
    tags=["advertisers"],
    summary="Update an advertiser (admin)",
)
async def update_advertiser(
    advertiser_id: AdvertiserId,
    body: schemas.AdvertiserPatch,
    principal: Caller,
    store: Store,
    if_match: IfMatchHeader = None,
) -> Response:
    advertiser = await store.update_advertiser(
        principal, advertiser_id, body, IfMatch.parse(if_match)
    )
    return _resource(advertiser)


@router.post(
    "/advertisers/{advertiser_id}/api-keys",
    status_code=201,
    response_model=schemas.IssuedApiKeyOut,
    tags=["api keys"],
    summary="Issue an API key for the advertiser (admin); the key is shown only here",
)
async def issue_api_key(advertiser_id: AdvertiserId, principal: Caller, store: Store) -> Response:
    issued = await store.issue_api_key(principal, advertiser_id)
    return _json(issued, status=201, headers={"Cache-Control": "no-store"})


@router.get(
    "/advertisers/{advertiser_id}/api-keys",
    response_model=schemas.Page[schemas.ApiKeyOut],
    tags=["api keys"],
    summary="List the advertiser's keys (prefixes only)",
)
async def list_api_keys(advertiser_id: AdvertiserId, principal: Caller, store: Store) -> Response:
    keys = await store.list_api_keys(principal, advertiser_id)
    return _json({"items": keys, "next_cursor": None})


@router.delete(
    "/advertisers/{advertiser_id}/api-keys/{key_id}",
    response_model=schemas.ApiKeyOut,
    tags=["api keys"],
    summary="Revoke a key (admin)",
)
async def revoke_api_key(
    advertiser_id: AdvertiserId, key_id: KeyId, request: Request, principal: Caller, store: Store
) -> Response:
    revoked = await store.revoke_api_key(principal, advertiser_id, key_id)
    request.app.state.authenticator.forget()
    return _json(revoked)


# -------------------------------------------------------------------- internal


@router.get("/internal/snapshot", include_in_schema=False)
async def snapshot(
    request: Request,
    store: Store,
    internal_key: Annotated[str | None, Header(alias=INTERNAL_KEY_HEADER)] = None,
) -> Response:
    """All active campaigns and the outbox position, for the bidder's start-up."""
    if not secret_matches(request.app.state.settings.internal_api_key, internal_key):
        raise Unauthorized(
            f"missing or invalid {INTERNAL_KEY_HEADER} header",
            headers={"WWW-Authenticate": f'ApiKey header="{INTERNAL_KEY_HEADER}"'},
        )
    result = await read_snapshot(store)
    gzipped = "gzip" in request.headers.get("accept-encoding", "")

    def render() -> bytes:
        body = encode(result)
        return gzip.compress(body, compresslevel=1) if gzipped else body

    body = await asyncio.to_thread(render)  # 100k campaigns take a while to encode
    headers = {
        "Cache-Control": "no-store",
        "Vary": "Accept-Encoding",
        "X-Outbox-Position": str(result.position),
    }
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type="application/json", headers=headers)


# ------------------------------------------------------------------ fast route


class FastCampaignRead(Route):
    """`GET /campaigns/{id}` as a plain Starlette route, tried before the FastAPI one.

    This read carries the 1,000 req/s target, and FastAPI's per-request dependency and
    parameter machinery costs more CPU than the database read itself. The route only
    claims requests it answers exactly as the FastAPI route would (GET/HEAD with an id
    in range); anything else, a bad id included, falls through to the FastAPI route,
    which also documents the operation in OpenAPI. Auth, errors, body and ETag are the
    same code: `Authenticator`, the app's error handlers, `CampaignStore`, `_resource`.
    """

    def __init__(self) -> None:
        super().__init__(
            "/campaigns/{campaign_id}", self.endpoint, methods=["GET"], include_in_schema=False
        )

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match != Match.FULL:
            return Match.NONE, {}  # never PARTIAL: PATCH/DELETE belong to FastAPI
        raw = child["path_params"]["campaign_id"]
        if not (
            raw.isascii() and raw.isdigit() and len(raw) <= 10 and 1 <= int(raw) <= rules.MAX_ID
        ):
            return Match.NONE, {}
        return match, child

    @staticmethod
    async def endpoint(request: Request) -> Response:
        principal: Principal = await request.app.state.authenticator.authenticate(
            request.headers.get(API_KEY_HEADER)
        )
        store: CampaignStore = request.app.state.store
        campaign_id = int(request.path_params["campaign_id"])
        return _resource(await store.get_campaign(principal, campaign_id))
