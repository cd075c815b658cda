"""`event_consumer_lag_messages` holds one live series per partition of a group.

The alerts read it as "unconsumed data" (AnalyticsCommitsStalled fires only while
there is some, so an idle platform stays silent) and AnalyticsConsumerLagHigh sums it
per group: a series a consumer left behind after a rebalance, or after it was closed
and rebuilt, would be counted twice and never go back to 0. Real consumers of the
in-process bus (the same `report_lag` the Kafka consumer uses) show it does not.
"""

from __future__ import annotations

import uuid

from adplatform.core.bus import InMemoryBroker, InMemoryConsumer
from adplatform.core.metrics import REGISTRY

PARTITIONS = 4


def lag_series(group: str, topic: str) -> dict[int, float]:
    found = {}
    for metric in REGISTRY.collect():
        if metric.name != "event_consumer_lag_messages":
            continue
        for sample in metric.samples:
            if sample.labels["group"] == group and sample.labels["topic"] == topic:
                found[int(sample.labels["partition"])] = sample.value
    return found


async def test_each_partition_is_reported_by_its_current_owner_only() -> None:
    topic, group = f"lag-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    broker = InMemoryBroker(partitions=PARTITIONS)
    broker.create_topic(topic)
    for _ in range(10):
        broker.append(topic, None, b"x")
    ends = {p: broker.end_offset((topic, p)) for p in range(PARTITIONS)}
    first = InMemoryConsumer(broker, group, [topic])
    await first.start()
    await first.poll(max_messages=0, timeout=0)
    await first.report_lag(group)
    assert lag_series(group, topic) == {p: float(ends[p]) for p in range(PARTITIONS)}

    # a second member joins: after the rebalance each partition is reported once
    second = InMemoryConsumer(broker, group, [topic])
    await second.start()
    await first.poll(max_messages=0, timeout=0)
    await second.poll(max_messages=0, timeout=0)
    kept = set(dict(await first.report_lag(group)))
    assert len(kept) == PARTITIONS // 2
    assert set(lag_series(group, topic)) == {p for _, p in kept}, "revoked partitions linger"
    await second.report_lag(group)
    assert lag_series(group, topic) == {p: float(ends[p]) for p in range(PARTITIONS)}
    assert sum(lag_series(group, topic).values()) == sum(ends.values())

    # the second one is closed (a rebuilt consumer, a stopped pod in dev mode): its
    # series stay readable until the next report takes them over, then they go
    await second.close()
    assert len(lag_series(group, topic)) == PARTITIONS
    await first.report_lag(group)
    assert set(lag_series(group, topic)) == {p for _, p in kept}
    await first.poll(max_messages=0, timeout=0)  # rebalance: all partitions are first's
    await first.report_lag(group)
    assert lag_series(group, topic) == {p: float(ends[p]) for p in range(PARTITIONS)}

    # consumed to the end: every series is 0 (the idle platform the alerts stay quiet on)
    while await first.poll(max_messages=1000, timeout=0):
        pass
    await first.report_lag(group)
    assert lag_series(group, topic) == dict.fromkeys(range(PARTITIONS), 0.0)
    await first.close()
