"""The fixtures themselves: each real server starts, answers and keeps its data."""

from __future__ import annotations

import asyncio

import pytest
import redis as redis_lib
from sqlalchemy import text

from adplatform.core.bus import KafkaConsumer, KafkaProducer, ensure_topics
from adplatform.core.db import create_engine
from tests.infra.kafka import KafkaBroker
from tests.infra.postgres import PostgresServer
from tests.infra.redis import RedisCluster, RedisServer

pytestmark = pytest.mark.integration


async def test_postgres_answers_over_asyncpg(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    async with engine.connect() as connection:
        version = (await connection.execute(text("SHOW server_version"))).scalar_one()
    await engine.dispose()
    assert version.startswith("15")


def test_postgres_databases_are_isolated(postgres_server: PostgresServer) -> None:
    first = postgres_server.create_database()
    second = postgres_server.create_database()
    assert first != second
    assert (
        int(postgres_server.psql("SELECT count(*) FROM pg_database WHERE datname LIKE 'test_%'"))
        >= 2
    )


def test_redis_single_node(redis_clean: RedisServer) -> None:
    client = redis_lib.Redis(host="127.0.0.1", port=redis_clean.port)
    client.set("k", "v")
    assert client.get("k") == b"v"


def test_redis_cluster_has_three_masters_and_is_ok(redis_cluster: RedisCluster) -> None:
    assert redis_cluster.is_ok()
    assert len(redis_cluster.master_nodes()) == 3
    startup_nodes = [
        # redis-py's sync ClusterNode.__init__ has no annotations (and no stub covers redis 8)
        redis_lib.cluster.ClusterNode(h, p)  # type: ignore[no-untyped-call]
        for h, p in redis_cluster.startup_nodes
    ]
    client = redis_lib.RedisCluster(startup_nodes=startup_nodes)
    for i in range(50):
        client.set(f"{{c{i}}}:spent", i)
    assert client.get("{c7}:spent") == b"7"
    client.close()


async def test_kafka_round_trip_in_order(kafka_broker: KafkaBroker, topic_suffix: str) -> None:
    topic = f"infra-{topic_suffix}"
    ensure_topics([kafka_broker.bootstrap], {topic: 3})
    producer = KafkaProducer([kafka_broker.bootstrap])
    for i in range(100):
        await producer.publish(topic, "same-key", str(i).encode())
    await producer.close()

    consumer = KafkaConsumer([kafka_broker.bootstrap], f"g-{topic_suffix}", [topic])
    await consumer.start()
    received: list[int] = []
    for _ in range(60):
        received += [int(m.value) for m in await consumer.poll(500, 0.5)]
        if len(received) >= 100:
            break
    await consumer.close()
    assert received == list(range(100))


async def test_kafka_broker_restart_keeps_data(
    kafka_broker: KafkaBroker, topic_suffix: str
) -> None:
    topic = f"restart-{topic_suffix}"
    ensure_topics([kafka_broker.bootstrap], {topic: 1})
    producer = KafkaProducer([kafka_broker.bootstrap])
    await producer.publish(topic, None, b"before")
    await producer.close()
    await asyncio.to_thread(kafka_broker.restart)
    consumer = KafkaConsumer([kafka_broker.bootstrap], f"g-{topic_suffix}", [topic])
    await consumer.start()
    values: list[bytes] = []
    for _ in range(60):
        values += [m.value for m in await consumer.poll(10, 0.5)]
        if values:
            break
    await consumer.close()
    assert values == [b"before"]
