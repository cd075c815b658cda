"""Session fixtures for the real servers; loaded by the root conftest.

Each server starts on first use and stops at the end of the session. Tests that need
isolation ask for the function-scoped helpers (a fresh database, flushed Redis,
uniquely named topics) rather than new servers.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.infra.kafka import KafkaBroker
from tests.infra.postgres import PostgresServer
from tests.infra.redis import RedisCluster, RedisServer


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def redis_clean(redis_server: RedisServer) -> RedisServer:
    redis_server.command("FLUSHALL")
    return redis_server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    cluster = RedisCluster().start()
    yield cluster
    cluster.cleanup()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    broker = KafkaBroker().start()
    yield broker
    broker.cleanup()


@pytest.fixture
def topic_suffix() -> str:
    """Tests on the shared broker use their own topic names (and consumer groups)."""
    return uuid.uuid4().hex[:10]
