"""The outbox against real Kafka: with the broker stopped writes still succeed, and when
it is back every event arrives, in order per campaign, with nothing lost."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import pytest
from sqlalchemy import select

from adplatform.campaigns.models import OutboxRow
from adplatform.campaigns.outbox import OUTBOX_PENDING, RelayConfig
from adplatform.core.bus import EventBus, KafkaConsumer, ensure_topics
from adplatform.core.events import CAMPAIGN_UPDATES_TOPIC, CampaignUpdate, decode_campaign_update
from tests.infra.kafka import KafkaBroker
from tests.integration.campaigns.support import Service, creative_body, running_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RELAY = RelayConfig(
    poll_interval=0.1,
    metrics_interval=0.1,
    min_backoff=0.2,
    max_backoff=1.0,
    delivery_timeout_ms=3_000,  # fail fast while the broker is down, then retry
)


async def _wait_drained(service: Service, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await service.app.state.relay.pending())[0] == 0:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"outbox not drained after {timeout}s")


async def _consume(
    broker: KafkaBroker, group: str, tag: str, expected: int
) -> list[CampaignUpdate]:
    consumer = KafkaConsumer([broker.bootstrap], group, [CAMPAIGN_UPDATES_TOPIC])
    await consumer.start()
    received: list[CampaignUpdate] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len({u.seq for u in received}) < expected:
            for message in await consumer.poll(1000, 0.5):
                update = decode_campaign_update(message.value)
                if tag in update.campaign.name:  # the topic is shared with other tests
                    received.append(update)
    finally:
        await consumer.close()
    return received


async def test_writes_survive_a_broker_outage_and_arrive_in_order(
    campaign_db: str, kafka_broker: KafkaBroker, topic_suffix: str
) -> None:
    await asyncio.to_thread(ensure_topics, [kafka_broker.bootstrap], {CAMPAIGN_UPDATES_TOPIC: 6})
    tag = f"[{topic_suffix}]"
    bus = EventBus.from_brokers([kafka_broker.bootstrap])
    async with running_service(campaign_db, bus=bus, relay_config=RELAY) as service:
        advertiser_id = await service.advertiser()
        campaigns = [
            await service.campaign(
                advertiser_id, f"{tag} C{i}", status="active", creatives=[creative_body()]
            )
            for i in range(3)
        ]
        await _wait_drained(service, 30)

        await asyncio.to_thread(kafka_broker.stop)
        try:
            started = time.monotonic()
            for round_number in range(6):
                for campaign in campaigns:
                    url = f"/campaigns/{campaign['id']}"
                    response = await service.client.patch(
                        url, json={"max_bid_cpm_micros": 1_000_000 + round_number}
                    )
                    assert response.status_code == 200, response.text
                    if round_number == 2:
                        response = await service.client.post(
                            f"{url}/creatives", json=creative_body()
                        )
                        assert response.status_code == 201
                    if round_number == 4:
                        response = await service.client.post(
                            f"{url}/status", json={"status": "paused"}
                        )
                        assert response.status_code == 200
            assert time.monotonic() - started < 10  # writes never waited for Kafka
            await asyncio.sleep(4)  # at least one delivery timeout: the relay is retrying
            pending, age = await service.app.state.relay.pending()
            assert pending == 3 * 6 + 3 + 3
            assert age > 3
            assert OUTBOX_PENDING._value.get() == pending
        finally:
            await asyncio.to_thread(kafka_broker.start)

        await _wait_drained(service, 90)
        async with service.app.state.store.sessions() as session:
            rows = (await session.scalars(select(OutboxRow).order_by(OutboxRow.id))).all()
        final = {
            c["id"]: (await service.client.get(f"/campaigns/{c['id']}")).json() for c in campaigns
        }

    expected_seqs: dict[int, list[int]] = defaultdict(list)
    for row in rows:
        expected_seqs[row.campaign_id].append(row.id)
    received = await _consume(kafka_broker, f"g-{topic_suffix}", tag, len(rows))

    arrivals: dict[int, list[int]] = defaultdict(list)
    first_seen: dict[int, list[int]] = defaultdict(list)
    states: dict[int, CampaignUpdate] = {}
    for update in received:
        campaign_id = update.campaign.id
        arrivals[campaign_id].append(update.seq)
        if update.seq not in first_seen[campaign_id]:
            first_seen[campaign_id].append(update.seq)
        states[campaign_id] = update
    assert dict(first_seen) == dict(expected_seqs)  # nothing lost, per campaign in order
    for campaign_id, seqs in arrivals.items():
        assert seqs == sorted(seqs), f"campaign {campaign_id} events out of order: {seqs}"
    for campaign_id, update in states.items():
        assert update.campaign.version == final[campaign_id]["version"]
        assert update.campaign.status == "paused"
        assert update.campaign.max_bid_cpm_micros == 1_000_005
        assert len(update.campaign.creatives) == 2
