"""The exchange simulator drives a real bidder server end to end."""

from __future__ import annotations

import asyncio
import time

import msgspec
import uvicorn

from adplatform.bidding.openrtb import decode_bid_request
from adplatform.bidding.pacing import utc_day
from adplatform.bidding.simulator import TrafficGenerator, simulate
from adplatform.core.bus import EventBus
from adplatform.core.events import AD_EVENTS_TOPIC, AdEventType, decode_ad_event
from tests.infra.common import free_port
from tests.unit.bidding.factories import (
    SnapshotServer,
    bidder_settings,
    campaign,
    creative,
    running_bidder,
    snapshot,
)


def test_generated_traffic_is_valid_and_varied() -> None:
    generator = TrafficGenerator(3)
    requests = [decode_bid_request(msgspec.json.encode(generator.request())) for _ in range(500)]
    countries = {r.device.geo.country for r in requests if r.device and r.device.geo}
    assert len(countries) >= 8
    assert any(r.app is not None for r in requests)
    assert any(r.site is not None for r in requests)
    assert any(len(r.imp) > 1 for r in requests)
    assert any(r.imp[0].bidfloorcur == "EUR" for r in requests)
    assert any(r.imp[0].banner is not None and r.imp[0].banner.format for r in requests)
    assert len({r.id for r in requests}) == 500


async def test_simulator_plays_whole_auctions_against_a_bidder() -> None:
    campaigns = [
        campaign(700 + i, cpm=(i + 1) * 1_000_000, creatives=[creative(w=w, h=h)])
        for i, (w, h) in enumerate([(300, 250), (728, 90), (320, 50), (300, 600), (160, 600)])
    ]
    server = await SnapshotServer(snapshot(campaigns)).start()
    port = free_port()
    bus = EventBus.from_brokers([])
    settings = bidder_settings(
        server.url, public_bidding_url=f"http://127.0.0.1:{port}", bid_currency_rates={"EUR": 1.1}
    )
    async with running_bidder(settings, bus=bus) as bidder:
        config = uvicorn.Config(
            bidder.app,
            host="127.0.0.1",
            port=port,
            lifespan="off",
            log_config=None,
            log_level="warning",
        )
        http = uvicorn.Server(config)
        serving = asyncio.create_task(http.serve())
        for _ in range(250):
            if http.started:
                break
            await asyncio.sleep(0.02)
        try:
            stats = await simulate(
                f"http://127.0.0.1:{port}",
                rate=150,
                duration=2.5,
                concurrency=16,
                show_progress=False,
            )
        finally:
            http.should_exit = True
            await serving
        producer = bidder.bidder.auction.producer
        assert producer is not None
        await producer.flush()
        spent = 0
        for item in campaigns:
            spent += (await bidder.bidder.store.view(item.id, utc_day(time.time()))).spent
    await server.stop()
    assert stats.requests >= 100
    assert stats.errors == 0
    assert stats.invalid == 0
    assert stats.notice_errors == 0
    assert stats.bids > 50
    assert stats.wins > 0
    assert stats.impressions > 0
    assert stats.losses > 0
    assert stats.nobids > 0
    assert bus.memory is not None
    kinds = [decode_ad_event(m.value).type for m in bus.memory.messages(AD_EVENTS_TOPIC)]
    assert kinds.count(AdEventType.WIN) == stats.wins
    assert kinds.count(AdEventType.IMPRESSION) == stats.impressions
    assert 0 < spent <= sum(1 for k in kinds if k is AdEventType.BID) * 6000
    text = stats.describe()
    assert "bid requests" in text
    assert "wins / losses" in text
