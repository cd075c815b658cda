"""What a tracking notice does: verify, settle or deduplicate, publish the event.

- win / billing: the first of the two settles the reservation at the clearing price
  (`spend_micros` is set on that event only, so summed events equal Redis's spend);
  the other is counted with no spend; the same notice again is a duplicate.
- impression / click: counted once per auction and imp.
- loss: gives the reservation back at once.

A repeated notice is counted once. Its event is published again only when the repeat
comes within `REPUBLISH_WINDOW_MS` of the first: that is how a retry looks when the
first attempt's store reply was lost (a Redis timeout after the script ran), so its
event may never have gone out; analytics counts the deterministic event id once (its
dedup memory, `ANALYTICS_DEDUP_RETENTION_HOURS`, is at least an hour). Later repeats
publish nothing.

With `REDIS_WAIT_REPLICAS` a settlement is acknowledged (204) only once it reached the
replicas. If the master settled it but the replicas did not confirm in time, the
event is still published (the master probably keeps it) and the notice answered 503:
should a failover lose the settlement, the exchange's retry settles it again on the
new master, and analytics counts the repeated event id once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from adplatform.bidding import metrics
from adplatform.bidding.budget import (
    BudgetStore,
    Settlement,
    SettleOutcome,
    SettleResult,
    StoreUnavailable,
    WriteUnconfirmed,
    reservation_id,
)
from adplatform.bidding.index import TargetingIndex
from adplatform.bidding.pacing import NO_LIMIT, utc_day
from adplatform.bidding.tracking import (
    BILLING,
    CLICK,
    IMPRESSION,
    LOSS,
    WIN,
    Tracker,
    TrackingData,
    TrackingError,
    clearing_micros,
)
from adplatform.core.bus import EventProducer
from adplatform.core.events import AD_EVENTS_TOPIC, AdEvent, AdEventType, ad_event_id, encode

COUNTED: Final = "counted"
DUPLICATE: Final = "duplicate"
INVALID: Final = "invalid"
MARKER_SLACK_SECONDS: Final = 3600
"""Dedup markers outlive the URLs they protect by this much."""
REPUBLISH_WINDOW_MS: Final = 600_000
"""A repeated notice this soon after the first publishes its event again."""

_EVENT_TYPES: Final = {
    WIN: AdEventType.WIN,
    BILLING: AdEventType.BILLING,
    IMPRESSION: AdEventType.IMPRESSION,
    CLICK: AdEventType.CLICK,
}


@dataclass(frozen=True, slots=True)
class NoticeResult:
    result: str
    data: TrackingData
    spend_micros: int = 0


class Notices:
    def __init__(
        self,
        *,
        tracker: Tracker,
        store: BudgetStore,
        index: TargetingIndex,
    ) -> None:
        self.tracker = tracker
        self.store = store
        self.index = index
        self.producer: EventProducer | None = None

    @property
    def marker_ttl(self) -> int:
        return self.tracker.ttl_seconds + MARKER_SLACK_SECONDS

    def verify(self, kind: str, payload: str | None, signature: str | None) -> TrackingData:
        try:
            return self.tracker.verify(
                payload, signature, time.time(), shown=kind in (IMPRESSION, CLICK)
            )
        except TrackingError:
            if kind != LOSS:
                metrics.TRACKING[(kind, INVALID)].inc()
            raise

    async def settle(self, kind: str, data: TrackingData, price: str | None) -> NoticeResult:
        """A win or billing notice (`price` is the substituted `${AUCTION_PRICE}`)."""
        try:
            clearing = clearing_micros(data, price)
        except TrackingError as exc:
            metrics.TRACKING[(kind, INVALID)].inc()
            if exc.code == "price_above_bid":
                metrics.SETTLEMENT["rejected"].inc()
            raise
        now = time.time()
        event_type = _EVENT_TYPES[kind]
        campaign = self.index.get(data.c)
        # Budgets only matter when the reservation is gone (a late notice): a campaign
        # no longer in the index (paused, ended) cannot take new spend then.
        total = campaign.state.total_budget_micros if campaign is not None else 0
        daily = NO_LIMIT
        if campaign is not None and campaign.state.daily_budget_micros > 0:
            daily = campaign.state.daily_budget_micros
        try:
            outcome = await self.store.settle(
                Settlement(
                    campaign_id=data.c,
                    rid=reservation_id(data.a, data.i),
                    notice_id=ad_event_id(data.a, data.i, event_type),
                    clearing=clearing,
                    total_budget=total,
                    daily_budget=daily,
                    day=utc_day(now),
                    ttl=self.marker_ttl,
                ),
                int(now * 1000),
            )
        except WriteUnconfirmed as exc:
            self._settled(kind, event_type, data, now, exc.outcome)
            raise
        return self._settled(kind, event_type, data, now, outcome)

    def _settled(
        self,
        kind: str,
        event_type: AdEventType,
        data: TrackingData,
        now: float,
        outcome: SettleOutcome,
    ) -> NoticeResult:
        released = getattr(self.store, "last_released", 0)
        if released:
            metrics.BID_RESERVATIONS_EXPIRED.inc(released)
        if outcome.result is SettleResult.DUPLICATE_NOTICE:
            metrics.TRACKING[(kind, DUPLICATE)].inc()
            if _recent(outcome.first_ms, now):
                self._publish(event_type, data, now, outcome.amount)
            return NoticeResult(DUPLICATE, data)
        metrics.TRACKING[(kind, COUNTED)].inc()
        if outcome.result is SettleResult.SETTLED:
            metrics.SETTLEMENT["settled"].inc()
        elif outcome.result is SettleResult.ALREADY_SETTLED:
            metrics.SETTLEMENT["duplicate"].inc()
        else:
            metrics.SETTLEMENT["rejected"].inc()
        self._publish(event_type, data, now, outcome.amount)
        return NoticeResult(COUNTED, data, outcome.amount)

    async def count(self, kind: str, data: TrackingData) -> NoticeResult:
        """An impression or click: counted the first time only."""
        now = time.time()
        event_type = _EVENT_TYPES[kind]
        seen = await self.store.mark_once(
            data.c, ad_event_id(data.a, data.i, event_type), self.marker_ttl, int(now * 1000)
        )
        if seen is not None:
            metrics.TRACKING[(kind, DUPLICATE)].inc()
            if _recent(seen, now):
                self._publish(event_type, data, now, 0)
            return NoticeResult(DUPLICATE, data)
        metrics.TRACKING[(kind, COUNTED)].inc()
        self._publish(event_type, data, now, 0)
        return NoticeResult(COUNTED, data)

    def landing(self, data: TrackingData, encoded: str | None, signature: str | None) -> str:
        try:
            return self.tracker.verify_landing(data, encoded, signature)
        except TrackingError:
            metrics.TRACKING[(CLICK, INVALID)].inc()
            raise

    async def loss(self, data: TrackingData) -> bool:
        return await self.store.release(data.c, reservation_id(data.a, data.i))

    def _publish(self, event_type: AdEventType, data: TrackingData, now: float, spend: int) -> None:
        """The notice's event; a republished one has the same id (and spend)."""
        if self.producer is None:
            return
        event = AdEvent(
            id=ad_event_id(data.a, data.i, event_type),
            type=event_type,
            ts_ms=int(now * 1000),
            campaign_id=data.c,
            advertiser_id=data.v,
            creative_id=data.r,
            auction_id=data.a,
            imp_id=data.i,
            bid_micros=data.b,
            spend_micros=spend,
        )
        self.producer.send(AD_EVENTS_TOPIC, str(data.c), encode(event))


__all__ = ["COUNTED", "DUPLICATE", "Notices", "StoreUnavailable"]


def _recent(first_ms: int, now: float) -> bool:
    """Whether a repeat at `now` is soon enough after the first (0: not known) to
    publish the event again."""
    return first_ms > 0 and now * 1000 - first_ms <= REPUBLISH_WINDOW_MS
