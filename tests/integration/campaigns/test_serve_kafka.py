"""`adplatform serve campaigns` in production mode, as its own process: with KAFKA_BROKERS
set, a write made over HTTP reaches `campaign-updates` on a real Kafka broker (keyed by
campaign id, in order), and the process logs JSON lines stamped with its service."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adplatform.core.bus import KafkaConsumer, ensure_topics
from adplatform.core.events import CAMPAIGN_UPDATES_TOPIC, CampaignUpdate, decode_campaign_update
from tests.infra.common import serving
from tests.infra.kafka import KafkaBroker
from tests.integration.campaigns.support import (
    ADMIN_KEY,
    INTERNAL_KEY,
    campaign_body,
    creative_body,
    is_ready,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def served(
    campaign_db: str, kafka_broker: KafkaBroker, tmp_path: Path
) -> Iterator[tuple[str, Path]]:
    """The service's base URL and its log file."""
    ensure_topics([kafka_broker.bootstrap], {CAMPAIGN_UPDATES_TOPIC: 6})
    log = tmp_path / "campaigns.log"
    env = {
        **os.environ,
        "DATABASE_URL": campaign_db,
        "ADMIN_API_KEY": ADMIN_KEY,
        "INTERNAL_API_KEY": INTERNAL_KEY,
        "KAFKA_BROKERS": kafka_broker.bootstrap,
        "HTTP_HOST": "127.0.0.1",
        "METRICS_ENABLED": "false",
        "LOG_LEVEL": "INFO",
        "ENVIRONMENT": "test",
    }
    with serving(
        lambda _: [sys.executable, "-m", "adplatform", "serve", "campaigns"],
        lambda port: {**env, "HTTP_PORT": str(port)},
        ready=lambda port: is_ready(f"http://127.0.0.1:{port}"),
        log=log,
        what="adplatform serve campaigns",
        timeout=60,
    ) as port:
        yield f"http://127.0.0.1:{port}", log


async def _updates_of(
    broker: KafkaBroker, group: str, campaign_id: int, version: int
) -> list[tuple[bytes | None, CampaignUpdate]]:
    """This campaign's messages (the topic is shared), until one carries `version`."""
    consumer = KafkaConsumer([broker.bootstrap], group, [CAMPAIGN_UPDATES_TOPIC])
    await consumer.start()
    received: list[tuple[bytes | None, CampaignUpdate]] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for message in await consumer.poll(1000, 0.5):
                update = decode_campaign_update(message.value)
                if update.campaign.id == campaign_id and update.campaign.name.startswith("Serve"):
                    received.append((message.key, update))
            if any(update.campaign.version >= version for _, update in received):
                break
    finally:
        await consumer.close()
    return received


async def test_a_write_over_http_reaches_campaign_updates(
    served: tuple[str, Path], kafka_broker: KafkaBroker, topic_suffix: str
) -> None:
    url, log = served
    name = f"Serve {topic_suffix}"
    async with httpx.AsyncClient(
        base_url=url, headers={"X-API-Key": ADMIN_KEY}, timeout=10
    ) as client:
        advertiser = await client.post("/advertisers", json={"name": f"Advertiser {topic_suffix}"})
        assert advertiser.status_code == 201, advertiser.text
        created = await client.post(
            "/campaigns",
            json=campaign_body(advertiser.json()["id"], name, creatives=[creative_body()]),
        )
        assert created.status_code == 201, created.text
        campaign_id = created.json()["id"]
        changed = await client.patch(
            f"/campaigns/{campaign_id}", json={"max_bid_cpm_micros": 4_200_000}
        )
        assert changed.status_code == 200, changed.text
        version = changed.json()["version"]

    received = await _updates_of(kafka_broker, f"g-serve-{topic_suffix}", campaign_id, version)
    assert received, f"nothing for campaign {campaign_id} on {CAMPAIGN_UPDATES_TOPIC}"
    assert {key for key, _ in received} == {str(campaign_id).encode()}  # keyed by campaign
    seqs = [update.seq for _, update in received]
    assert seqs == sorted(seqs)
    latest = received[-1][1].campaign
    assert latest.version == version
    assert latest.max_bid_cpm_micros == 4_200_000
    assert latest.name == name
    assert len(latest.creatives) == 1

    # Production logs: JSON lines on stdout, each stamped with the service.
    records = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    assert records, log.read_text(errors="replace")[-2000:]
    assert all(record.get("service") == "campaigns" for record in records), records[:5]
