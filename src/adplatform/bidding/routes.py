"""HTTP: the raw-ASGI bid endpoint, tracking notices and the test-only fault switch.

`POST /openrtb2/bid` does not go through Starlette's routing, middleware or request
objects: `BidderApp` hands it straight to `BidEndpoint`, which reads the body, decodes
it with msgspec and writes the answer itself, and records the shared HTTP metrics
(`http_requests_total`, `http_request_duration_seconds`) the way the core middleware
would. Everything else is an ordinary Starlette route.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import time
import zlib
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from prometheus_client import Counter, Histogram
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from adplatform.bidding import metrics
from adplatform.bidding.auction import BID, Auction
from adplatform.bidding.budget import StoreUnavailable
from adplatform.bidding.notices import Notices
from adplatform.bidding.openrtb import InvalidBidRequest, decode_bid_request
from adplatform.bidding.tracking import BILLING, CLICK, IMPRESSION, LOSS, WIN, TrackingError
from adplatform.core.auth import INTERNAL_KEY_HEADER
from adplatform.core.config import Environment, Settings
from adplatform.core.errors import ApiError, NotFound, Unauthorized, error_body, error_response
from adplatform.core.logging import get_logger
from adplatform.core.metrics import HTTP_REQUEST_DURATION, HTTP_REQUESTS

log = get_logger(__name__)

BID_PATH: Final = "/openrtb2/bid"
SERVICE: Final = "bidding"
MAX_BID_BODY: Final = 256 * 1024
"""The most a bid request body may hold, compressed or (with gzip) decompressed."""
PIXEL: Final = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")

_encoder: Final = msgspec.json.Encoder()
_JSON_HEADERS: Final = [
    (b"content-type", b"application/json"),
    (b"x-openrtb-version", b"2.6"),
]
_NO_CONTENT: Final = {
    "type": "http.response.start",
    "status": 204,
    "headers": [(b"x-openrtb-version", b"2.6"), (b"content-length", b"0")],
}
_EMPTY_BODY: Final = {"type": "http.response.body", "body": b""}


@dataclass
class Faults:
    """Injected failures (development and test only) for alert tests."""

    error_rate: float = 0.0
    delay_ms: int = 0


class FaultSpec(msgspec.Struct, forbid_unknown_fields=True):
    error_rate: float = 0.0
    delay_ms: int = 0


class BidEndpoint:
    """`POST /openrtb2/bid` as a raw ASGI handler."""

    def __init__(self, auction: Auction, *, ready: asyncio.Event) -> None:
        self.auction = auction
        self.ready = ready
        self.faults = Faults()
        self._http: dict[int, Counter] = {}
        self._duration: Histogram = HTTP_REQUEST_DURATION.labels(SERVICE, BID_PATH)
        self._outcome = metrics.OUTCOME
        self._bid_duration = metrics.BID_REQUEST_DURATION

    def _count(self, status: int) -> Counter:
        counter = self._http.get(status)
        if counter is None:
            counter = self._http[status] = HTTP_REQUESTS.labels(
                SERVICE, "POST", BID_PATH, str(status)
            )
        return counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.monotonic()
        status = 500
        outcome = "error"
        try:
            status, outcome = await self._handle(scope, receive, send, started)
        except Exception as exc:  # a bug: logged, answered 500, counted as error
            log.error("bid_failed", exc_info=exc)
            await _send_json(send, 500, error_body("internal_error", "internal server error"))
        finally:
            elapsed = time.monotonic() - started
            self._outcome[outcome].inc()
            self._bid_duration.observe(elapsed)
            self._count(status).inc()
            self._duration.observe(elapsed)

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, started: float
    ) -> tuple[int, str]:
        if scope["method"] != "POST":
            await _send_json(
                send,
                405,
                error_body("method_not_allowed", "use POST"),
                [(b"allow", b"POST")],
            )
            return 405, "invalid"
        body = await _read_body(receive, MAX_BID_BODY)
        if body is None:
            await _send_json(
                send,
                413,
                error_body("payload_too_large", f"bid request over {MAX_BID_BODY} bytes"),
            )
            return 413, "invalid"
        if body[:1] != b"{":  # plain JSON (the usual case) needs no header scan
            try:
                body = _decoded_body(scope, body)
            except _Refused as refused:
                await _send_json(send, refused.status, refused.body, refused.headers)
                return refused.status, "invalid"
        faults = self.faults
        if faults.delay_ms:
            await asyncio.sleep(faults.delay_ms / 1000)
        if faults.error_rate and random.random() < faults.error_rate:
            await _send_json(send, 500, error_body("injected_fault", "injected fault"))
            return 500, "error"
        try:
            request = decode_bid_request(body)
        except InvalidBidRequest as exc:
            await _send_json(send, 400, error_body("invalid_bid_request", str(exc)[:500]))
            return 400, "invalid"
        if not self.ready.is_set():
            await send(_NO_CONTENT)
            await send(_EMPTY_BODY)
            return 204, "nobid"
        outcome, payload = await self.auction.run(request, started)
        if outcome == BID and payload is not None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": payload})
            return 200, outcome
        await send(_NO_CONTENT)
        await send(_EMPTY_BODY)
        return 204, outcome


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None when it is over `limit` bytes."""
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body if len(body) <= limit else None
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


class _Refused(Exception):
    """A body the endpoint will not decode: the status and error to answer with."""

    def __init__(
        self, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]]
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(code, message)
        self.headers = headers


_GZIP_CODINGS: Final = frozenset({"gzip", "x-gzip"})


def _decoded_body(scope: Scope, body: bytes) -> bytes:
    """The body with its `Content-Encoding` undone: gzip is accepted (OpenRTB
    recommends it), up to `MAX_BID_BODY` bytes decompressed; another coding is a 415.

    Only called for a body that does not start with `{`: plain JSON is taken as it is
    whatever the header says (a gzip stream starts with 1f 8b), so the usual request
    pays one byte comparison, not a scan of its headers."""
    codings: list[str] = []
    for name, value in scope["headers"]:
        if name == b"content-encoding":
            codings += value.decode("latin-1").lower().split(",")
    codings = [c for c in (c.strip() for c in codings) if c and c != "identity"]
    if not codings:
        return body
    if len(codings) > 1 or codings[0] not in _GZIP_CODINGS:
        given = ", ".join(codings)
        raise _Refused(
            415,
            "unsupported_media_type",
            f"Content-Encoding {given!r} is not supported (gzip or none)",
            [(b"accept-encoding", b"gzip")],
        )
    return _gunzip(body, MAX_BID_BODY)


def _gunzip(data: bytes, limit: int) -> bytes:
    """Decompress gzip (one or more members) into at most `limit` bytes: a zip bomb
    stops at `limit + 1` bytes of output, never inflated further."""
    out: list[bytes] = []
    size = 0
    try:
        while True:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            chunk = inflater.decompress(data, limit + 1 - size)
            size += len(chunk)
            if size > limit:
                raise _Refused(
                    413,
                    "payload_too_large",
                    f"bid request over {limit} bytes once decompressed",
                    [],
                )
            out.append(chunk)
            if not inflater.eof:
                raise _Refused(400, "invalid_bid_request", "corrupt gzip body: truncated", [])
            data = inflater.unused_data
            if not data:
                return b"".join(out)
    except zlib.error as exc:
        raise _Refused(400, "invalid_bid_request", f"corrupt gzip body: {exc}", []) from None


async def _send_json(
    send: Send, status: int, body: Any, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = _encoder.encode(body)
    headers = [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class BidderApp(Starlette):
    """Starlette with the bid path short-circuited to a raw ASGI handler."""

    bid_endpoint: BidEndpoint | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.bid_endpoint
        if endpoint is not None and scope["type"] == "http" and scope["path"] == BID_PATH:
            await endpoint(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


# ---------------------------------------------------------------------- tracking


def _tracking_error(exc: TrackingError) -> Response:
    return error_response(exc.status, exc.code, exc.message)


def tracking_routes(notices: Notices) -> list[BaseRoute]:
    def params(request: Request) -> tuple[str | None, str | None]:
        return request.query_params.get("d"), request.query_params.get("s")

    async def settle(request: Request, kind: str) -> Response:
        try:
            data = notices.verify(kind, *params(request))
            await notices.settle(kind, data, request.query_params.get("p"))
        except TrackingError as exc:
            return _tracking_error(exc)
        except StoreUnavailable:
            return _unavailable()
        return Response(status_code=204)

    async def win(request: Request) -> Response:
        return await settle(request, WIN)

    async def billing(request: Request) -> Response:
        return await settle(request, BILLING)

    async def impression(request: Request) -> Response:
        try:
            data = notices.verify(IMPRESSION, *params(request))
            if request.method != "HEAD":  # a link checker's HEAD shows no ad
                await notices.count(IMPRESSION, data)
        except TrackingError as exc:
            return _tracking_error(exc)
        except StoreUnavailable:
            return _unavailable()
        return Response(
            PIXEL,
            media_type="image/gif",
            headers={"cache-control": "no-store, max-age=0"},
        )

    async def click(request: Request) -> Response:
        query = request.query_params
        try:
            data = notices.verify(CLICK, query.get("d"), query.get("s"))
            landing = notices.landing(data, query.get("u"), query.get("k"))
        except TrackingError as exc:
            return _tracking_error(exc)
        # Without the store the user still gets to the landing page, uncounted; a HEAD
        # (a crawler or link checker following the URL) is no click.
        if request.method != "HEAD":
            with contextlib.suppress(StoreUnavailable):
                await notices.count(CLICK, data)
        return RedirectResponse(landing, status_code=302, headers={"cache-control": "no-store"})

    async def loss(request: Request) -> Response:
        try:
            data = notices.verify(LOSS, *params(request))
            await notices.loss(data)
        except TrackingError as exc:
            return _tracking_error(exc)
        except StoreUnavailable:
            return _unavailable()
        return Response(status_code=204)

    return [
        Route("/t/win", win, methods=["GET", "POST"]),
        Route("/t/billing", billing, methods=["GET", "POST"]),
        Route("/t/imp", impression, methods=["GET"]),
        Route("/t/click", click, methods=["GET"]),
        Route("/t/loss", loss, methods=["GET", "POST"]),
    ]


def _unavailable() -> Response:
    return error_response(
        503,
        "unavailable",
        "budget store unavailable; retry the notice",
        headers={"retry-after": "1"},
    )


# ------------------------------------------------------------------------ faults


def fault_routes(endpoint: BidEndpoint, settings: Settings) -> list[BaseRoute]:
    """`/internal/faults`: 404 unless ENVIRONMENT is development or test."""
    enabled = settings.environment in (Environment.DEVELOPMENT, Environment.TEST)
    key = settings.internal_api_key.get_secret_value() if settings.internal_api_key else None

    def check(request: Request) -> None:
        if not enabled:
            raise NotFound("not found")
        given = request.headers.get(INTERNAL_KEY_HEADER)
        if key is None or given is None or not _same(given, key):
            raise Unauthorized(f"missing or invalid {INTERNAL_KEY_HEADER}")

    def current() -> JSONResponse:
        return JSONResponse(
            {"error_rate": endpoint.faults.error_rate, "delay_ms": endpoint.faults.delay_ms}
        )

    async def get_faults(request: Request) -> Response:
        check(request)
        return current()

    async def put_faults(request: Request) -> Response:
        check(request)
        try:
            spec = msgspec.json.decode(await request.body(), type=FaultSpec)
        except msgspec.MsgspecError as exc:
            raise ApiError(f"invalid faults: {exc}", code="invalid_faults") from None
        if not 0.0 <= spec.error_rate <= 1.0:
            raise ApiError("error_rate must be within 0..1", code="invalid_faults")
        if not 0 <= spec.delay_ms <= 5000:
            raise ApiError("delay_ms must be within 0..5000", code="invalid_faults")
        endpoint.faults = Faults(spec.error_rate, spec.delay_ms)
        log.warning("faults_injected", error_rate=spec.error_rate, delay_ms=spec.delay_ms)
        return current()

    return [
        Route("/internal/faults", get_faults, methods=["GET"]),
        Route("/internal/faults", put_faults, methods=["PUT"]),
    ]


def _same(given: str, expected: str) -> bool:
    import hmac

    return hmac.compare_digest(given.encode(), expected.encode())
