"""The Kafka fixture the outbox tests stand on: a port taken between choosing it and the
broker binding it must cost a retry on new ports, not the whole session's broker."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient

from tests.infra import kafka
from tests.infra.common import free_ports
from tests.infra.kafka import KafkaBroker

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port something else is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_first_start_on_a_taken_port_retries_on_new_ports(
    taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen: list[list[int]] = []

    def choose(count: int) -> list[int]:
        # The first choice hands the broker a port that is already taken (what a race
        # with another process looks like); later choices are the real thing.
        ports = free_ports(count)
        if not chosen:
            ports[0] = taken_port
        chosen.append(ports)
        return ports

    monkeypatch.setattr(kafka, "free_ports", choose)
    broker = KafkaBroker(partitions=1, heap="256m")
    try:
        broker.start()
        assert len(chosen) >= 2, "the first start should have failed on the taken port"
        assert broker.port != taken_port
        assert [broker.port, broker.controller_port] == chosen[-1]
        assert broker.log.read_text(errors="replace").count("Formatting") >= 2  # fresh storage
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        assert admin.list_topics(timeout=10).brokers  # it really serves
    finally:
        broker.cleanup()
