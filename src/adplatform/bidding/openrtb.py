"""OpenRTB 2.6 types: the subset a display bidder reads, decoded by msgspec.

Unknown fields (and every `ext`) are skipped by the decoder, and enumerations are
plain integers, so new exchange fields and unknown enum values are tolerated as the
specification requires. The structs are `gc=False`: they never hold a reference
cycle, so the garbage collector need not track the dozens each request allocates.
Structural errors (wrong types, missing `id`/`imp`) are
`msgspec.ValidationError`s; `validate()` adds the semantic rules a bidder needs
(an imp must have a banner, ids are bounded) and names what is wrong.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

MAX_ID_LENGTH: Final = 256
MAX_IMPS: Final = 64

# Bounds on what targeting normalizes and caches: far above anything an exchange sends,
# low enough that one request cannot make the bidder do (or keep) unbounded work.
# msgspec checks them while decoding, in C; a request over them is a 400.
Token = Annotated[str, msgspec.Meta(max_length=128)]
"""A code or short name: category, currency, seat, OS."""
Host = Annotated[str, msgspec.Meta(max_length=1024)]
"""A domain or app bundle (a real host name is at most 253 characters)."""
Url = Annotated[str, msgspec.Meta(max_length=8192)]
MAX_LIST: Final = 512
"""The most entries any list of a bid request may hold."""
Tokens = Annotated[list[Token], msgspec.Meta(max_length=MAX_LIST)]
Hosts = Annotated[list[Host], msgspec.Meta(max_length=MAX_LIST)]
Ints = Annotated[list[int], msgspec.Meta(max_length=MAX_LIST)]


class Format(msgspec.Struct, kw_only=True, gc=False):
    w: int | None = None
    h: int | None = None


Formats = Annotated[list[Format], msgspec.Meta(max_length=MAX_LIST)]


class Banner(msgspec.Struct, kw_only=True, gc=False):
    w: int | None = None
    h: int | None = None
    format: Formats | None = None
    pos: int | None = None
    btype: Ints | None = None
    battr: Ints | None = None


class Imp(msgspec.Struct, kw_only=True, gc=False):
    id: str
    banner: Banner | None = None
    bidfloor: float | None = 0.0
    """None (an explicit `null`) is read as no floor; `validate()` makes it 0.0."""
    bidfloorcur: Token | None = "USD"
    tagid: str | None = None
    secure: int | None = None
    instl: int | None = None


class Publisher(msgspec.Struct, kw_only=True, gc=False):
    id: str | None = None
    name: str | None = None
    domain: Host | None = None
    cat: Tokens | None = None


class Site(msgspec.Struct, kw_only=True, gc=False):
    id: str | None = None
    name: str | None = None
    domain: Host | None = None
    page: Url | None = None
    cat: Tokens | None = None
    sectioncat: Tokens | None = None
    pagecat: Tokens | None = None
    publisher: Publisher | None = None


class App(msgspec.Struct, kw_only=True, gc=False):
    id: str | None = None
    name: str | None = None
    bundle: Host | None = None
    domain: Host | None = None
    storeurl: str | None = None
    cat: Tokens | None = None
    sectioncat: Tokens | None = None
    pagecat: Tokens | None = None
    publisher: Publisher | None = None


class Geo(msgspec.Struct, kw_only=True, gc=False):
    country: str | None = None
    region: str | None = None
    city: str | None = None
    lat: float | None = None
    lon: float | None = None
    type: int | None = None
    utcoffset: int | None = None


class Device(msgspec.Struct, kw_only=True, gc=False):
    ua: str | None = None
    ip: str | None = None
    devicetype: int | None = None
    make: str | None = None
    model: str | None = None
    os: Token | None = None
    osv: str | None = None
    ifa: str | None = None
    lmt: int | None = None
    dnt: int | None = None
    geo: Geo | None = None


class User(msgspec.Struct, kw_only=True, gc=False):
    id: str | None = None
    buyeruid: str | None = None
    yob: int | None = None
    geo: Geo | None = None


class Regs(msgspec.Struct, kw_only=True, gc=False):
    coppa: int | None = None
    gdpr: int | None = None
    us_privacy: str | None = None


class Source(msgspec.Struct, kw_only=True, gc=False):
    fd: int | None = None
    tid: str | None = None
    pchain: str | None = None


class BidRequest(msgspec.Struct, kw_only=True, gc=False):
    id: str
    imp: list[Imp]
    site: Site | None = None
    app: App | None = None
    device: Device | None = None
    user: User | None = None
    regs: Regs | None = None
    source: Source | None = None
    test: int | None = 0
    at: int | None = 2
    tmax: int | None = None
    cur: Tokens | None = None
    bcat: Tokens | None = None
    badv: Hosts | None = None
    bapp: Hosts | None = None
    wseat: Tokens | None = None
    bseat: Tokens | None = None


# ------------------------------------------------------------------------ response


class Bid(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    id: str
    impid: str
    price: float
    adm: str | None = None
    nurl: str | None = None
    burl: str | None = None
    lurl: str | None = None
    adomain: list[str] | None = None
    crid: str | None = None
    cid: str | None = None
    cat: list[str] | None = None
    w: int | None = None
    h: int | None = None


class SeatBid(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    bid: list[Bid]
    seat: str | None = None


class BidResponse(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    id: str
    seatbid: list[SeatBid]
    cur: str = "USD"
    bidid: str | None = None


_decoder: Final = msgspec.json.Decoder(BidRequest)
_encoder: Final = msgspec.json.Encoder()


class InvalidBidRequest(ValueError):
    """The body is not a bid request this bidder can answer; the message says why."""


def decode_bid_request(body: bytes) -> BidRequest:
    """Decode and validate, raising `InvalidBidRequest` with a short reason."""
    if not body:
        raise InvalidBidRequest("empty body")
    try:
        request = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidBidRequest(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise InvalidBidRequest(f"malformed JSON: {exc}") from None
    except RecursionError:  # an `ext` nested thousands deep
        raise InvalidBidRequest("JSON nested too deeply") from None
    validate(request)
    return request


def validate(request: BidRequest) -> None:
    """The semantic rules msgspec's types cannot say."""
    if not request.id:
        raise InvalidBidRequest("`id` is empty")
    if len(request.id) > MAX_ID_LENGTH:
        raise InvalidBidRequest(f"`id` is longer than {MAX_ID_LENGTH} characters")
    if not request.imp:
        raise InvalidBidRequest("`imp` is empty")
    if len(request.imp) > MAX_IMPS:
        raise InvalidBidRequest(f"more than {MAX_IMPS} imps")
    seen: set[str] = set()
    for index, imp in enumerate(request.imp):
        where = f"`imp[{index}]`"
        if not imp.id:
            raise InvalidBidRequest(f"{where}.id is empty")
        if len(imp.id) > MAX_ID_LENGTH:
            raise InvalidBidRequest(f"{where}.id is longer than {MAX_ID_LENGTH} characters")
        if imp.id in seen:
            raise InvalidBidRequest(f"{where}.id {imp.id!r} is not unique")
        seen.add(imp.id)
        if imp.banner is None:
            raise InvalidBidRequest(f"{where} has no banner (this bidder buys display only)")
        if imp.bidfloor is None:
            imp.bidfloor = 0.0
        elif not imp.bidfloor >= 0:  # also rejects NaN
            raise InvalidBidRequest(f"{where}.bidfloor must be >= 0")
    _check_text(request)


def _check_text(request: BidRequest) -> None:
    """Ids end up in URLs, Redis keys and Kafka events: they must be encodable text."""
    try:
        request.id.encode()
        for imp in request.imp:
            imp.id.encode()
    except UnicodeEncodeError:
        raise InvalidBidRequest("ids must be valid Unicode text") from None


def encode_response(response: BidResponse) -> bytes:
    return _encoder.encode(response)
