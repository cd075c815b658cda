"""Signed tracking URLs: win (`nurl`), billing (`burl`), loss (`lurl`), impression
pixel and click redirect.

A URL carries everything its notice needs (auction, imp, campaign, creative, the bid
and its currency, the reservation's day, an expiry, and for clicks the landing page),
as `d` = base64url(msgspec JSON), and `s` = a truncated HMAC-SHA256 over the notice
type and `d` with `TRACKING_SECRET`. Any replica can therefore verify and settle a
notice without looking anything up, and a forged, altered, re-typed or expired URL is
refused before it touches Redis. Repeats are recognised by their deterministic event
ids (see `core.events.ad_event_id`) in the budget store.
"""

from __future__ import annotations

import base64
import binascii
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
PATHS: Final = {WIN: "win", BILLING: "billing", IMPRESSION: "imp", CLICK: "click", LOSS: "loss"}
PRICE_MACRO: Final = "${AUCTION_PRICE}"
SIGNATURE_BYTES: Final = 16


class TrackingData(msgspec.Struct, array_like=True, frozen=True):
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
    l: str = ""  # noqa: E741 - a wire name, kept short on purpose
    """landing page (click URLs only)"""


class TrackingError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class BidUrls:
    nurl: str
    burl: str
    lurl: str
    impression: str
    click: str


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(TrackingData)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Tracker:
    def __init__(self, secret: bytes, base_url: str, ttl_seconds: int) -> None:
        if not secret:
            raise ValueError("tracking secret is empty")
        self._secret = secret
        self.base = base_url.rstrip("/") + "/t/"
        self.ttl_seconds = ttl_seconds

    def _sign(self, kind: str, payload: str) -> str:
        mac = hmac.digest(self._secret, f"{kind}\n{payload}".encode(), "sha256")
        return _b64(mac[:SIGNATURE_BYTES])

    def url(self, kind: str, data: TrackingData) -> str:
        payload = _b64(_encoder.encode(data))
        return f"{self.base}{PATHS[kind]}?d={payload}&s={self._sign(kind, payload)}"

    def bid_urls(self, data: TrackingData, landing: str) -> BidUrls:
        """All five URLs of one bid: one payload for four of them, one for the click."""
        payload = _b64(_encoder.encode(data))
        base = self.base
        sign = self._sign
        click_payload = _b64(_encoder.encode(_with_landing(data, landing)))
        return BidUrls(
            nurl=f"{base}win?d={payload}&s={sign(WIN, payload)}&p={PRICE_MACRO}",
            burl=f"{base}billing?d={payload}&s={sign(BILLING, payload)}&p={PRICE_MACRO}",
            lurl=f"{base}loss?d={payload}&s={sign(LOSS, payload)}",
            impression=f"{base}imp?d={payload}&s={sign(IMPRESSION, payload)}",
            click=f"{base}click?d={click_payload}&s={sign(CLICK, click_payload)}",
        )

    def verify(
        self, kind: str, payload: str | None, signature: str | None, now: float
    ) -> TrackingData:
        """The signed data, or `TrackingError` (400 malformed, 403 forged, 410 expired)."""
        if not payload or not signature:
            raise TrackingError(400, "malformed_url", "tracking URL lacks its d or s parameter")
        if len(payload) > 8192 or len(signature) > 64:
            raise TrackingError(400, "malformed_url", "tracking URL parameters are too long")
        expected = self._sign(kind, payload)
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
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


def _with_landing(data: TrackingData, landing: str) -> TrackingData:
    return msgspec.structs.replace(data, l=landing)


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
