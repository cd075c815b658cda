"""The outbox relay with several replicas: one leader publishes, in id order; failover."""

from __future__ import annotations

import asyncio

import pytest

from adplatform.campaigns.outbox import OUTBOX_OLDEST_AGE, OUTBOX_PENDING, RelayConfig
from adplatform.core.bus import EventBus
from adplatform.core.events import CAMPAIGN_UPDATES_TOPIC, decode_campaign_update
from tests.integration.campaigns.support import Service, creative_body, running_service

pytestmark = pytest.mark.integration

FAST = RelayConfig(poll_interval=0.05, metrics_interval=0.05, min_backoff=0.05, max_backoff=0.2)


def _seqs(bus: EventBus) -> list[int]:
    assert bus.memory is not None
    messages = bus.memory.messages(CAMPAIGN_UPDATES_TOPIC)
    return sorted(decode_campaign_update(m.value).seq for m in messages)


async def _settle(service: Service) -> None:
    for _ in range(200):
        if (await service.app.state.relay.pending())[0] == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("outbox did not drain")


async def test_one_replica_relays_and_another_takes_over(campaign_db: str) -> None:
    async with (
        running_service(campaign_db, relay_config=FAST) as first,
        running_service(campaign_db, relay_config=FAST) as second,
    ):
        advertiser_id = await first.advertiser()
        for i in range(5):
            await first.campaign(advertiser_id, f"via first {i}")
            await second.campaign(advertiser_id, f"via second {i}")
        await _settle(first)
        published = [_seqs(first.bus), _seqs(second.bus)]
        leader, follower = (first, second) if published[0] else (second, first)
        assert _seqs(leader.bus) == list(range(1, 11))  # everything, once, in order
        assert _seqs(follower.bus) == []
        if leader is first:
            await first.app.state.relay.stop()  # the leader goes away
        else:
            await second.app.state.relay.stop()
        await follower.campaign(advertiser_id, "after failover")
        await _settle(follower)
        assert _seqs(follower.bus) == [11]


async def test_pending_metrics_and_recovery_when_the_bus_is_down(campaign_db: str) -> None:
    async with running_service(campaign_db, relay_config=FAST) as service:
        assert service.bus.memory is not None
        service.bus.memory.available = False
        advertiser_id = await service.advertiser()
        for i in range(3):
            await service.campaign(advertiser_id, f"C{i}", creatives=[creative_body()])
        await asyncio.sleep(0.5)
        assert (await service.app.state.relay.pending())[0] == 3
        assert OUTBOX_PENDING._value.get() == 3
        assert OUTBOX_OLDEST_AGE._value.get() > 0.2
        service.bus.memory.available = True
        await _settle(service)
        assert _seqs(service.bus) == [1, 2, 3]
        await asyncio.sleep(0.2)
        assert OUTBOX_PENDING._value.get() == 0
        assert OUTBOX_OLDEST_AGE._value.get() == 0


async def test_relay_wakes_on_commit_not_on_the_poll(campaign_db: str) -> None:
    slow_poll = RelayConfig(poll_interval=30.0)
    async with running_service(campaign_db, relay_config=slow_poll) as service:
        await asyncio.sleep(0.3)  # the relay is now idle, waiting up to 30 s
        advertiser_id = await service.advertiser()
        started = asyncio.get_running_loop().time()
        await service.campaign(advertiser_id)
        while not _seqs(service.bus):
            await asyncio.sleep(0.01)
            assert asyncio.get_running_loop().time() - started < 2.0
