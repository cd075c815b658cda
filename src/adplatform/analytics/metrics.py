"""analytics-service metrics (the monitoring rules alert on these exact names).

`events_consumed_total{topic}` and `event_consumer_lag_messages{group,topic,partition}`
come from `core.metrics`; no label here carries a campaign or advertiser id.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

from adplatform.core.metrics import REGISTRY

FRESHNESS_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)

EVENT_LAG = Histogram(
    "analytics_event_lag_seconds",
    "Now minus the event's time when its aggregate was committed (a sample per batch).",
    buckets=FRESHNESS_BUCKETS,
    registry=REGISTRY,
)
DUPLICATE_EVENTS = Counter(
    "analytics_duplicate_events_total",
    "Events skipped because their id had already been counted.",
    registry=REGISTRY,
)
INVALID_EVENTS = Counter(
    "analytics_invalid_events_total",
    "Messages on ad-events that are not a valid AdEvent (logged and skipped).",
    registry=REGISTRY,
)
BATCH_DURATION = Histogram(
    "analytics_batch_duration_seconds",
    "Time to decode a batch and commit it (aggregates, ids, offsets) to the database.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
LAST_COMMIT = Gauge(
    "analytics_last_commit_timestamp_seconds",
    "Unix time of the last committed batch.",
    registry=REGISTRY,
)
OFFSET_CONFLICTS = Counter(
    "analytics_offset_conflicts_total",
    "Batches rolled back because another consumer had committed the partition first.",
    registry=REGISTRY,
)
CONSUMER_RESTARTS = Counter(
    "analytics_consumer_restarts_total",
    "Times the consumer was torn down and rebuilt after an error (database, broker).",
    registry=REGISTRY,
)
ROLLED_UP_ROWS = Counter(
    "analytics_rolled_up_minute_rows_total",
    "Minute rows moved into hourly rows by the retention job.",
    registry=REGISTRY,
)
SEEN_ID_BATCHES = Counter(
    "analytics_batches_with_seen_ids_total",
    "Batches holding an id counted in an earlier batch that the consumer had not cached "
    "(applied by the slower ON CONFLICT path).",
    registry=REGISTRY,
)
