"""The auction: from a decoded bid request to a bid response (or no-bid).

Per imp the index gives the best two eligible creatives of distinct campaigns (a
campaign bids at most once per request: no duplicate ads on a page). The first choice
of every imp is reserved in one batched store call; an imp whose first choice the store
refuses (budget, pacing, frequency cap) tries its second choice in a second call if the
deadline allows. A store that cannot be reached means no-bid (fail safe), and a
deadline that comes too close means no-bid rather than a late answer.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Final

from adplatform.bidding import metrics
from adplatform.bidding.budget import (
    Reservation,
    ReservationBatcher,
    ReserveResult,
    StoreUnavailable,
    cap_key,
    reservation_id,
)
from adplatform.bidding.index import (
    IndexedCreative,
    RequestContext,
    TargetingIndex,
    category_closure,
    domain_suffixes,
    normalize_domain,
    normalize_os,
    small_key_cache,
)
from adplatform.bidding.openrtb import Bid, BidRequest, BidResponse, Imp, SeatBid, encode_response
from adplatform.bidding.pacing import daily_limit, utc_day
from adplatform.bidding.tracking import Tracker, TrackingData
from adplatform.core.bus import EventProducer
from adplatform.core.events import AD_EVENTS_TOPIC, AdEvent, AdEventType, ad_event_id, encode
from adplatform.core.logging import get_logger

log = get_logger(__name__)

BID: Final = "bid"
NOBID: Final = "nobid"
TIMEOUT: Final = "timeout"

NO_BUDGET_BACKOFF: Final = 2.0
"""Seconds a campaign the store refused for its total budget is not asked again
(budget can come back when reservations expire, or with a campaign update)."""
DAILY_BACKOFF: Final = 1.0
"""Seconds a campaign at its daily or pacing limit is not asked again."""
SECOND_ROUND_MIN: Final = 0.002
"""A second reservation round needs at least this much time left (seconds)."""
STORE_RETRY_AFTER: Final = 0.5
_USD: Final = ("USD", 1.0)
_UNKNOWN: Final = ("", 0.0)


class StoreHealth:
    """Whether the budget store answers; after a failure the bid path does not try it
    again for `STORE_RETRY_AFTER` seconds (answering no-bid at once instead)."""

    def __init__(self) -> None:
        self.up = True
        self._retry_at = 0.0
        metrics.BUDGET_STORE_UP.set(1)

    def usable(self, mono: float) -> bool:
        return self.up or mono >= self._retry_at

    def failed(self, error: object = None) -> None:
        if self.up:
            log.error("budget_store_down", error=str(error))
        self.up = False
        self._retry_at = time.monotonic() + STORE_RETRY_AFTER
        metrics.BUDGET_STORE_UP.set(0)

    def ok(self) -> None:
        if not self.up:
            log.info("budget_store_up")
        self.up = True
        metrics.BUDGET_STORE_UP.set(1)


@dataclass(slots=True)
class _Choice:
    imp: Imp
    sizes: list[tuple[int, int]]
    floor: float
    entry: IndexedCreative
    won: bool = False
    reservation: Reservation | None = None


def _sizes(imp: Imp) -> list[tuple[int, int]]:
    banner = imp.banner
    if banner is None:
        return []
    if not banner.format:
        w, h = banner.w, banner.h
        return [(w, h)] if w and h and w > 0 and h > 0 else []
    # A dict removes duplicates in order, in linear time: `format` is the request's to
    # size (a list's `in` made 15,000 formats cost seconds).
    sizes: dict[tuple[int, int], None] = {}
    if banner.w and banner.h and banner.w > 0 and banner.h > 0:
        sizes[banner.w, banner.h] = None
    for fmt in banner.format:
        if fmt.w and fmt.h and fmt.w > 0 and fmt.h > 0:
            sizes[fmt.w, fmt.h] = None
    return list(sizes)


# Block lists repeat across requests (an exchange sends each publisher's lists with
# every request), so their normalized forms are cached by value: lists of up to 64
# codes (512 characters) or 32 domains (1,024), an entry (key and value) then 6 and
# 8 KB at most, each cache 6 and 8 MB (it kept lists of 128 entries of up to 128 and
# 1,024 characters: 52 and 93 KB each, 210 and 93 MB in all).
@small_key_cache(maxsize=1024, max_len=64, max_chars=512)
def _upper_set(values: tuple[str, ...]) -> frozenset[str]:
    return frozenset(v.strip().upper() for v in values if isinstance(v, str) and v.strip())


@small_key_cache(maxsize=1024, max_len=32, max_chars=1024)
def _domain_set(values: tuple[str, ...]) -> frozenset[str]:
    return frozenset(filter(None, (normalize_domain(d) for d in values)))


def request_context(request: BidRequest, now: float, mono: float) -> RequestContext:
    """Normalize what targeting reads from a request, once (cached look-ups: domains,
    categories and OS names repeat across requests)."""
    ctx = RequestContext(now=now, mono=mono)
    device = request.device
    user = request.user
    geo = device.geo if device is not None else None
    if (geo is None or not geo.country) and user is not None:
        geo = user.geo
    if geo is not None and geo.country:
        ctx.country = geo.country.strip().upper()
    if device is not None:
        ctx.device_type = device.devicetype
        if device.os:
            ctx.os = normalize_os(device.os)
    site = request.site
    if site is not None:
        ctx.domains = domain_suffixes(site.domain or site.page)
        if site.cat or site.sectioncat or site.pagecat:
            ctx.categories = category_closure(
                (site.cat or []) + (site.sectioncat or []) + (site.pagecat or [])
            )
    elif request.app is not None:
        app = request.app
        domains = domain_suffixes(app.domain)
        bundle = normalize_domain(app.bundle)
        ctx.domains = domains | {bundle} if bundle else domains
        if app.cat or app.sectioncat or app.pagecat:
            ctx.categories = category_closure(
                (app.cat or []) + (app.sectioncat or []) + (app.pagecat or [])
            )
    if request.bcat:
        ctx.bcat = _upper_set(tuple(request.bcat))
    if request.badv:
        ctx.badv = _domain_set(tuple(request.badv))
    if request.wseat:
        ctx.wseat = frozenset(request.wseat)
    if request.bseat:
        ctx.bseat = frozenset(request.bseat)
    ctx.has_user = bool((user is not None and user.id) or (device is not None and device.ifa))
    return ctx


def _user_key(request: BidRequest) -> str | None:
    """Whom a frequency cap counts: the exchange's user id, else the device's IFA."""
    if request.user is not None and request.user.id:
        return "u:" + request.user.id
    if request.device is not None and request.device.ifa:
        return "d:" + request.device.ifa
    return None


class Auction:
    """Runs bid requests against the index and the budget store."""

    def __init__(
        self,
        *,
        index: TargetingIndex,
        batcher: ReservationBatcher,
        health: StoreHealth,
        tracker: Tracker,
        timeout_ms: int,
        safety_margin_ms: int,
        reservation_timeout_s: int,
        pacing_ahead_s: int,
        currency_rates: dict[str, float],
    ) -> None:
        self.index = index
        self.batcher = batcher
        self.health = health
        self.tracker = tracker
        self.timeout_ms = timeout_ms
        self.safety_margin_ms = safety_margin_ms
        self.reservation_timeout_s = reservation_timeout_s
        self.pacing_ahead_s = pacing_ahead_s
        # USD is always 1.0 (the settings refuse a USD rate; it must not move USD floors).
        self.rates = {**{k.upper(): v for k, v in currency_rates.items()}, "USD": 1.0}
        self._currencies: dict[tuple[str, ...], tuple[str, float] | None] = {}
        """`cur` lists seen -> the currency to bid in (requests repeat a handful)."""
        self.producer: EventProducer | None = None
        self.recent: dict[int, float] = {}
        """Campaigns this process reserved on, and when (the sweeper's work list)."""

    # ------------------------------------------------------------------ entry

    async def run(self, request: BidRequest, started: float) -> tuple[str, bytes | None]:
        """(outcome, encoded BidResponse or None for no-bid)."""
        budget_ms = self.timeout_ms
        if request.tmax is not None and 0 < request.tmax < budget_ms:
            budget_ms = request.tmax
        deadline = started + (budget_ms - self.safety_margin_ms) / 1000
        mono = time.monotonic()
        if mono >= deadline:
            return TIMEOUT, None
        currency = _USD if not request.cur else self._bid_currency(tuple(request.cur))
        if currency is None:
            return NOBID, None
        now = time.time()
        ctx = request_context(request, now, mono)
        choices: list[_Choice] = []
        used: set[int] = set()
        index = self.index
        for imp in request.imp:
            floor = self._floor_cpm_micros(imp) if imp.bidfloor else 0.0
            if floor is None:
                continue
            sizes = _sizes(imp)
            if not sizes:
                continue
            entry = index.best(sizes, ctx, floor, used)
            if entry is not None:
                choices.append(_Choice(imp, sizes, floor, entry))
                used.add(entry.campaign.id)
        if not choices:
            return NOBID, None
        if not self.health.usable(mono):
            return NOBID, None

        user = _user_key(request)
        day = utc_day(now)
        now_ms = int(now * 1000)
        pending = choices
        for attempt in range(2):
            reservations = [
                self._reservation(request.id, c, user, now, day, now_ms) for c in pending
            ]
            outcome = await self._reserve(reservations, deadline)
            if outcome is None or isinstance(outcome, StoreUnavailable):
                if outcome is not None:
                    self.health.failed(outcome)
                if attempt:  # the first round's reservations still stand: bid them
                    break
                return (TIMEOUT if outcome is None else NOBID), None
            if not self.health.up:
                self.health.ok()
            refused: list[_Choice] = []
            mono = time.monotonic()
            for choice, reservation, result in zip(pending, reservations, outcome, strict=True):
                if result is ReserveResult.RESERVED:
                    choice.won = True
                    choice.reservation = reservation
                    continue
                campaign = choice.entry.campaign
                if result is ReserveResult.NO_BUDGET:
                    campaign.blocked_until = mono + NO_BUDGET_BACKOFF
                elif result is ReserveResult.DAILY_LIMIT:
                    campaign.blocked_until = mono + DAILY_BACKOFF
                elif result is ReserveResult.DUPLICATE:
                    continue  # this imp of this auction already bid: never twice
                elif result is ReserveResult.UNCONFIRMED:
                    # Redis could not vouch for it (replication lagging, shard away):
                    # no bid for this imp, and no second try that would wait again.
                    metrics.BID_RESERVATIONS_UNCONFIRMED.inc()
                    continue
                used.add(campaign.id)
                refused.append(choice)
            if attempt or not refused or deadline - mono < SECOND_ROUND_MIN:
                break
            # Second choices: the best campaign not refused and not bidding already.
            pending = []
            for choice in refused:
                entry = index.best(choice.sizes, ctx, choice.floor, used)
                if entry is not None:
                    choice.entry = entry
                    used.add(entry.campaign.id)
                    pending.append(choice)
            if not pending:
                break

        won = [c for c in choices if c.won]
        if not won:
            return NOBID, None
        return BID, self._respond(request, won, currency, now, day)

    # ------------------------------------------------------------------ pieces

    def _bid_currency(self, accepted: tuple[str, ...]) -> tuple[str, float] | None:
        """The currency to bid in: USD unless the request allows only others."""
        known = self._currencies.get(accepted, _UNKNOWN)
        if known is not _UNKNOWN:
            return known
        codes = [c.strip().upper() for c in accepted if isinstance(c, str)]
        choice: tuple[str, float] | None = None
        if "USD" in codes:
            choice = _USD
        else:
            for code in codes:
                rate = self.rates.get(code)
                if rate:
                    choice = (code, rate)
                    break
        # Bounded in number and size: requests choose these lists (`cur` may hold 512
        # codes; exchanges send one to three).
        if len(self._currencies) < 4096 and len(accepted) <= 16:
            self._currencies[accepted] = choice
        return choice

    def _floor_cpm_micros(self, imp: Imp) -> float | None:
        """The imp's floor in USD CPM micros, or None when its currency has no rate."""
        if not imp.bidfloor or imp.bidfloor <= 0:
            return 0.0
        rate = self.rates.get((imp.bidfloorcur or "USD").strip().upper())
        if rate is None:
            return None
        # Rounded to a thousandth of a micro: 4.03 * 1e6 is 4030000.0000000005 in
        # binary floating point, which would shut out a campaign bidding exactly 4.03.
        return round(imp.bidfloor * rate * 1_000_000, 3)

    def _reservation(
        self,
        auction_id: str,
        choice: _Choice,
        user: str | None,
        now: float,
        day: int,
        now_ms: int,
    ) -> Reservation:
        campaign = choice.entry.campaign
        state = campaign.state
        cap = state.frequency_cap
        reservation = Reservation(
            campaign_id=campaign.id,
            rid=reservation_id(auction_id, choice.imp.id),
            price=campaign.price_micros,
            total_budget=state.total_budget_micros,
            daily_limit=daily_limit(
                state.daily_budget_micros, state.pacing, now, self.pacing_ahead_s
            ),
            day=day,
            expires_ms=now_ms + self.reservation_timeout_s * 1000,
        )
        if cap is not None and cap.impressions > 0 and user is not None:
            reservation.cap_key = cap_key(user, cap.window_seconds, now)
            reservation.cap_limit = cap.impressions
            reservation.cap_ttl = cap.window_seconds + 60
        return reservation

    async def _reserve(
        self, reservations: list[Reservation], deadline: float
    ) -> list[ReserveResult] | StoreUnavailable | None:
        """Results, the store's error, or None when the deadline came first (what was
        reserved after that the batcher gives back as soon as the store answers)."""
        mono = time.monotonic()
        recent = self.recent
        for item in reservations:
            recent[item.campaign_id] = mono
        try:
            return await self.batcher.submit(reservations, deadline)
        except StoreUnavailable as exc:
            return exc
        except Exception as exc:  # a store bug must not become a bid: fail safe
            log.error("reservation_failed", error=repr(exc))
            return StoreUnavailable(str(exc))

    def _respond(
        self,
        request: BidRequest,
        won: list[_Choice],
        currency: tuple[str, float],
        now: float,
        day: int,
    ) -> bytes:
        code, rate = currency
        expires = int(now) + self.tracker.ttl_seconds
        ts_ms = int(now * 1000)
        producer = self.producer
        tracker = self.tracker
        auction_id = request.id
        bids: list[tuple[str, Bid]] = []
        for choice in won:
            entry = choice.entry
            campaign = entry.campaign
            static = entry.static
            if static is None:
                static = entry.static = _static(entry, tracker)
            imp_id = choice.imp.id
            price = static.price if rate == 1.0 else _price(campaign.price_cpm_micros, rate)
            urls = tracker.bid_urls(
                TrackingData(
                    a=auction_id,
                    i=imp_id,
                    c=campaign.id,
                    v=campaign.advertiser_id,
                    r=entry.id,
                    b=campaign.price_micros,
                    p=price,
                    u=code,
                    d=day,
                    x=expires,
                ),
                static.click_params,
            )
            bid = Bid(
                id=static.cid_dash + imp_id,
                impid=imp_id,
                price=price,
                adm=urls.click_html.join(entry.adm_parts)
                + _PIXEL_OPEN
                + urls.impression_html
                + _PIXEL_CLOSE,
                nurl=urls.nurl,
                burl=urls.burl,
                lurl=urls.lurl,
                adomain=static.adomain,
                crid=static.crid,
                cid=static.cid,
                cat=static.cat,
                w=entry.w,
                h=entry.h,
            )
            bids.append((campaign.seat, bid))
            if producer is not None:
                event = AdEvent(
                    id=ad_event_id(auction_id, imp_id, AdEventType.BID),
                    type=AdEventType.BID,
                    ts_ms=ts_ms,
                    campaign_id=campaign.id,
                    advertiser_id=campaign.advertiser_id,
                    creative_id=entry.id,
                    auction_id=auction_id,
                    imp_id=imp_id,
                    bid_micros=campaign.price_micros,
                )
                producer.send(AD_EVENTS_TOPIC, static.cid, encode(event))
        return encode_response(BidResponse(id=auction_id, seatbid=_seat_bids(bids), cur=code))


def _price(cpm_micros: int, rate: float) -> float:
    """A USD CPM in micros as a CPM in a currency worth `rate` USD, rounded up to the
    millionth (rounding down could put it under a floor it was checked against)."""
    return math.ceil(round(cpm_micros / rate, 6)) / 1_000_000


def _seat_bids(bids: list[tuple[str, Bid]]) -> list[SeatBid]:
    """Bids grouped by seat (the advertiser), in bid order."""
    if len(bids) == 1:  # the usual case: no grouping to do
        seat, bid = bids[0]
        return [SeatBid(bid=[bid], seat=seat)]
    seats: dict[str, list[Bid]] = {}
    for seat, bid in bids:
        seats.setdefault(seat, []).append(bid)
    return [SeatBid(bid=group, seat=seat) for seat, group in seats.items()]


_PIXEL_OPEN: Final = '<img src="'
_PIXEL_CLOSE: Final = '" width="1" height="1" alt="" style="display:none">'


@dataclass(frozen=True, slots=True)
class CreativeStatic:
    """The parts of a creative's bids that never change, computed on its first bid."""

    click_params: str
    adomain: list[str] | None
    crid: str
    cid: str
    cid_dash: str
    """`<campaign id>-`: a bid's id is this plus the imp id."""
    cat: list[str] | None
    price: float
    """The bid price in USD CPM."""


def _static(entry: IndexedCreative, tracker: Tracker) -> CreativeStatic:
    category = entry.state.iab_category
    campaign = entry.campaign
    return CreativeStatic(
        click_params=tracker.landing_params(entry.id, entry.state.click_url),
        adomain=[entry.adomain] if entry.adomain else None,
        crid=str(entry.id),
        cid=str(campaign.id),
        cid_dash=f"{campaign.id}-",
        cat=[category] if category else None,
        price=_price(campaign.price_cpm_micros, 1.0),
    )
