"""Signed tracking URLs: win (`nurl`), billing (`burl`), loss (`lurl`), impression
pixel and click redirect.

A URL carries everything its notice needs (auction, imp, campaign, creative, the bid
and its currency, the reservation's day, an expiry) as `d` = base64url(msgspec JSON),
and `s` = a truncated HMAC-SHA256 of `d` under `TRACKING_SECRET`. Any replica can
verify and settle a notice without a look-up, and a forged, altered or expired URL is
refused before it touches Redis. The five URLs of a bid share one payload and one
HMAC (one per bid on the hot path), but not one signature: the win, billing and loss
URLs, which only the exchange sees, carry the first half of the MAC, and the pixel and
click URLs, which sit in the ad markup on the publisher's page, carry the second. Who
sees the page can then not move its `d` and `s` to `/t/win?p=0` (settling the
impression at nothing before the exchange's notice) or to `/t/loss` (giving the
reservation back); one half tells nothing about the other. The pixel and click also
take the notices' half (whoever has that is the exchange, which sees the markup
anyway). Click URLs also carry the landing page, `u`, signed with the creative id in
`k` (computed once per creative), so the redirect can never be pointed elsewhere.
Repeats are recognised by deterministic event ids in the budget store.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from dataclasses import dataclass
from typing import Final

import msgspec

WIN: Final = "win"
BILLING: Final = "billing"
IMPRESSION: Final = "impression"
CLICK: Final = "click"
LOSS: Final = "loss"
KINDS: Final = (WIN, BILLING, IMPRESSION, CLICK, LOSS)
PRICE_MACRO: Final = "${AUCTION_PRICE}"
SIGNATURE_BYTES: Final = 16
MAX_PARAM: Final = 8192


class TrackingData(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """What a notice needs, signed into its URL (short field names: URL length)."""

    a: str
    """auction (bid request) id"""
    i: str
    """imp id"""
    c: int
    """campaign id"""
    v: int
    """advertiser id"""
    r: int
    """creative id"""
    b: int
    """bid, USD micros per impression (what was reserved)"""
    p: float
    """bid price as sent: CPM in currency `u`"""
    u: str
    """bid currency"""
    d: int
    """UTC day of the reservation"""
    x: int
    """expiry, Unix seconds"""


class TrackingError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(slots=True)
class BidUrls:
    """A bid's tracking URLs (not frozen: a frozen dataclass costs a microsecond more
    to build, once per bid)."""

    nurl: str
    burl: str
    lurl: str
    impression: str
    click: str

    @property
    def impression_html(self) -> str:
        return quote_url(self.impression)

    @property
    def click_html(self) -> str:
        return quote_url(self.click)


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(TrackingData)


_SHA256_BLOCK: Final = 64
_PRICE_PARAM: Final = "&p=" + PRICE_MACRO
_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")


def _b64(data: bytes) -> str:
    """Unpadded base64url (binascii directly: the base64 module's wrappers cost more)."""
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Tracker:
    def __init__(self, secret: bytes, base_url: str, ttl_seconds: int) -> None:
        if not secret:
            raise ValueError("tracking secret is empty")
        self._secret = secret
        # HMAC-SHA256 (RFC 2104) with the key's inner and outer hash states computed
        # once: a MAC is then two copies and two updates, under half the cost of
        # `hmac.digest`, which sets the key up again on every call.
        key = hashlib.sha256(secret).digest() if len(secret) > _SHA256_BLOCK else secret
        key = key.ljust(_SHA256_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
        self.base = base_url.rstrip("/") + "/t/"
        self.ttl_seconds = ttl_seconds
        # Prefixes built once: a bid's five URLs are then plain concatenations.
        self._win = self.base + "win?"
        self._billing = self.base + "billing?"
        self._loss = self.base + "loss?"
        self._impression = self.base + "imp?"
        self._click = self.base + "click?"

    def _digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def _mac(self, message: bytes) -> str:
        return _b64(self._digest(message)[:SIGNATURE_BYTES])

    def landing_params(self, creative_id: int, landing: str) -> str:
        """`&u=...&k=...` for a creative's click URLs (computed once per creative)."""
        encoded = _b64(landing.encode("utf-8", "surrogatepass"))
        signature = self._mac(f"landing\n{creative_id}\n{encoded}".encode())
        return f"&u={encoded}&k={signature}"

    def bid_urls(self, data: TrackingData, landing_params: str) -> BidUrls:
        payload = _b64(_encoder.encode(data))
        digest = self._digest(payload.encode())
        head = "d=" + payload + "&s="
        query = head + _b64(digest[:SIGNATURE_BYTES])
        shown = head + _b64(digest[SIGNATURE_BYTES:])
        return BidUrls(
            nurl=self._win + query + _PRICE_PARAM,
            burl=self._billing + query + _PRICE_PARAM,
            lurl=self._loss + query,
            impression=self._impression + shown,
            click=self._click + shown + landing_params,
        )

    def verify(
        self, payload: str | None, signature: str | None, now: float, *, shown: bool = False
    ) -> TrackingData:
        """The signed data, or `TrackingError` (400 malformed, 403 forged, 410 expired).
        `shown`: a pixel or click URL (from the ad markup); the win, billing and loss
        notices take only the signature the markup does not carry."""
        if not payload or not signature:
            raise TrackingError(400, "malformed_url", "tracking URL lacks its d or s parameter")
        if len(payload) > MAX_PARAM or len(signature) > 64:
            raise TrackingError(400, "malformed_url", "tracking URL parameters are too long")
        digest = self._digest(payload.encode("utf-8", "replace"))
        given = signature.encode("utf-8", "replace")
        if not hmac.compare_digest(_b64(digest[:SIGNATURE_BYTES]).encode(), given) and not (
            shown and hmac.compare_digest(_b64(digest[SIGNATURE_BYTES:]).encode(), given)
        ):
            raise TrackingError(403, "bad_signature", "tracking URL signature does not match")
        try:
            data = _decoder.decode(_unb64(payload))
        except (binascii.Error, ValueError, msgspec.DecodeError):
            raise TrackingError(
                400, "malformed_url", "tracking URL payload is unreadable"
            ) from None
        if data.x < now:
            raise TrackingError(410, "expired", "tracking URL has expired")
        return data

    def verify_landing(self, data: TrackingData, encoded: str | None, signature: str | None) -> str:
        """The click's landing page, checked against the creative it was signed for."""
        if not encoded or not signature or len(encoded) > MAX_PARAM or len(signature) > 64:
            raise TrackingError(400, "malformed_url", "click URL lacks its landing page")
        expected = self._mac(f"landing\n{data.r}\n{encoded}".encode("utf-8", "replace"))
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            raise TrackingError(403, "bad_signature", "landing page signature does not match")
        try:
            landing = _unb64(encoded).decode()
        except (binascii.Error, ValueError):
            raise TrackingError(400, "malformed_url", "landing page is unreadable") from None
        if not landing.startswith(("https://", "http://")):
            raise TrackingError(400, "bad_landing_page", "landing page is not an http(s) URL")
        return landing


def clearing_micros(data: TrackingData, price: str | None) -> int:
    """The clearing price of a win/billing notice in USD micros per impression.

    `price` is the exchange's `${AUCTION_PRICE}` (CPM in the bid's currency). Absent or
    left unsubstituted, the bid itself is charged (the most it can have cost). Above
    the bid, or not a finite number >= 0, is a `TrackingError`.
    """
    if price is None or price == "" or price == PRICE_MACRO:
        return data.b
    try:
        value = float(price)
    except ValueError:
        raise TrackingError(400, "bad_price", "clearing price is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise TrackingError(400, "bad_price", "clearing price must be a finite number >= 0")
    if value > data.p * (1 + 1e-9):
        raise TrackingError(400, "price_above_bid", "clearing price is above the bid")
    if data.p <= 0:
        return 0
    return min(data.b, round(value / data.p * data.b))


def quote_url(url: str) -> str:
    """A URL made safe for an HTML attribute (the adm's href and src)."""
    return url.replace("&", "&amp;").replace('"', "%22")


__all__ = [
    "BILLING",
    "CLICK",
    "IMPRESSION",
    "LOSS",
    "WIN",
    "BidUrls",
    "Tracker",
    "TrackingData",
    "TrackingError",
    "clearing_micros",
    "quote_url",
]
