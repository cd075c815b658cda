"""The bidder's Prometheus metrics, on the shared registry.

The alert rules and dashboards in `deploy/monitoring/` query exactly these names and
label values. Labels are low-cardinality by construction: never a campaign or user id.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from typing import Final

from prometheus_client import Counter, Gauge
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from adplatform.core.metrics import REGISTRY

BID_LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
)

OUTCOMES: Final = ("bid", "nobid", "invalid", "timeout", "error")
SETTLEMENT_RESULTS: Final = ("settled", "duplicate", "rejected")
TRACKING_TYPES: Final = ("win", "billing", "impression", "click")
TRACKING_RESULTS: Final = ("counted", "duplicate", "invalid")


class FastHistogram(Collector):
    """A label-less histogram for the event loop's hot path.

    `prometheus_client.Histogram.observe` takes a lock per bucket update; the bid path
    observes from one thread, so a bisect and two additions do (the metrics server's
    thread only reads). Exposed exactly like a `Histogram`.
    """

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = list(buckets)
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        REGISTRY.register(self)

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def collect(self) -> Iterator[HistogramMetricFamily]:
        counts = list(self.counts)
        cumulative: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip([*self.bounds, math.inf], counts, strict=True):
            total += count
            cumulative.append(("+Inf" if bound == math.inf else repr(bound), total))
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=cumulative, sum_value=self.sum
        )

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation)


BID_REQUEST_DURATION = FastHistogram(
    "bid_request_duration_seconds",
    "Time from receiving a bid request to the end of its answer.",
    BID_LATENCY_BUCKETS,
)
BID_REQUESTS = Counter(
    "bid_requests_total",
    "Bid requests answered, by outcome (bid, nobid, invalid, timeout, error).",
    ["outcome"],
    registry=REGISTRY,
)
BID_RESERVATIONS_EXPIRED = Counter(
    "bid_reservations_expired_total",
    "Budget reservations released unsettled because no win notice came in time.",
    registry=REGISTRY,
)
BID_RESERVATIONS_UNCONFIRMED = Counter(
    "bid_reservations_unconfirmed_total",
    "Budget reservations not bid on because Redis could not confirm them (their write "
    "did not reach REDIS_WAIT_REPLICAS replicas in time, or their shard did not answer).",
    registry=REGISTRY,
)
BID_SETTLEMENTS = Counter(
    "bid_settlements_total",
    "Win/billing settlements, by result (settled, duplicate, rejected).",
    ["result"],
    registry=REGISTRY,
)
TRACKING_EVENTS = Counter(
    "tracking_events_total",
    "Tracking notices received, by type and result (counted, duplicate, invalid).",
    ["type", "result"],
    registry=REGISTRY,
)
INDEX_CAMPAIGNS = Gauge(
    "bidder_index_campaigns",
    "Active campaigns in the bidder's targeting index.",
    registry=REGISTRY,
)
INDEX_LAST_UPDATE = Gauge(
    "bidder_index_last_update_timestamp_seconds",
    "Unix time the index last applied a snapshot or a campaign update.",
    registry=REGISTRY,
)
BUDGET_STORE_UP = Gauge(
    "bidder_budget_store_up",
    "1 when the budget store (Redis) answered its last call, else 0.",
    registry=REGISTRY,
)

# Children resolved once: the hot path pays an attribute look-up, not a label hash.
OUTCOME: Final = {name: BID_REQUESTS.labels(name) for name in OUTCOMES}
SETTLEMENT: Final = {name: BID_SETTLEMENTS.labels(name) for name in SETTLEMENT_RESULTS}
TRACKING: Final = {
    (kind, result): TRACKING_EVENTS.labels(kind, result)
    for kind in TRACKING_TYPES
    for result in TRACKING_RESULTS
}
