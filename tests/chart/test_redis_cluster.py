"""The chart's Redis Cluster pieces on real Redis servers: six nodes started by the
chart's own redis-start.sh and redis.conf (password, AOF, cluster bus port), formed by
its cluster Job script, which must also be idempotent and heal a node that lost its data."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chart.conftest import CHART
from tests.infra.common import free_ports, require, stop_process, wait_for

FILES = CHART / "files"
PASSWORD = "cluster-test-password"
INSTALL_HINT = "scripts/install-system.sh (Debian package redis-server)"


class Node:
    def __init__(self, root: Path, port: int, bus_port: int) -> None:
        self.root, self.port, self.bus_port = root, port, bus_port
        self.data = root / "data"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        conf = (FILES / "redis.conf").read_text()
        conf = conf.replace("/run/redis/auth.conf", str(self.root / "auth.conf"))
        conf = conf.replace("/data", str(self.data))
        (self.root / "redis.conf").write_text(conf)
        env = {
            "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
            "REDIS_CONF": str(self.root / "redis.conf"),
            "REDIS_AUTH_FILE": str(self.root / "auth.conf"),
            "REDIS_PASSWORD": PASSWORD,
            "REDIS_PORT": str(self.port),
            "REDIS_BUS_PORT": str(self.bus_port),
            "REDIS_NODE_TIMEOUT_MS": "2000",
            "REDIS_APPENDFSYNC": "everysec",
            "REDIS_MAXMEMORY": "64mb",
        }
        log = open(self.root / "redis.log", "ab")  # noqa: SIM115 - the server writes it
        self.process = subprocess.Popen(
            ["sh", str(FILES / "redis-start.sh"), "--bind", "127.0.0.1", "--logfile", ""],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: self.cli("ping") == "PONG", timeout=20, what="redis", process=self.process)

    def cli(self, *args: str, auth: bool = True) -> str:
        env = {"PATH": "/usr/bin:/bin", **({"REDISCLI_AUTH": PASSWORD} if auth else {})}
        result = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True, text=True, env=env, timeout=10,
        )  # fmt: skip
        return result.stdout.strip()

    def info(self) -> dict[str, str]:
        lines = self.cli("cluster", "info").splitlines()
        return dict(line.strip().split(":", 1) for line in lines if ":" in line)

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[Node]]:
    require("redis-server", INSTALL_HINT)
    require("redis-cli", INSTALL_HINT)
    ports = free_ports(12)
    started = [Node(tmp_path / f"node{i}", ports[2 * i], ports[2 * i + 1]) for i in range(6)]
    try:
        for node in started:
            node.start()
        yield started
    finally:
        for node in started:
            node.stop()


def form(nodes: list[Node]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(FILES / "redis-cluster-init.sh")],
        env={
            "PATH": "/usr/bin:/bin",
            "REDIS_NODES": " ".join(node.address for node in nodes),
            "REDIS_REPLICAS": "1",
            "REDISCLI_AUTH": PASSWORD,
            "WAIT_SECONDS": "60",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


def roles(nodes: list[Node]) -> list[str]:
    return sorted(node.cli("role").splitlines()[0] for node in nodes)


@pytest.mark.integration
def test_cluster_job_forms_heals_and_is_idempotent(nodes: list[Node]) -> None:
    first = nodes[0]
    assert first.cli("ping", auth=False).startswith("NOAUTH"), "the password must be required"
    assert first.cli("config", "get", "appendonly").splitlines() == ["appendonly", "yes"]
    assert first.cli("config", "get", "cluster-port").splitlines()[1] == str(first.bus_port)

    created = form(nodes)
    assert created.returncode == 0, created.stdout + created.stderr
    assert "creating a cluster of 6 nodes" in created.stdout
    info = first.info()
    assert info["cluster_state"] == "ok"
    assert info["cluster_slots_assigned"] == "16384"
    assert info["cluster_known_nodes"] == "6"
    assert roles(nodes) == ["master"] * 3 + ["slave"] * 3
    assert first.cli("-c", "set", "{campaign-1}:spent", "42") == "OK"

    again = form(nodes)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "creating" not in again.stdout
    assert "adding" not in again.stdout
    assert "cluster ok with 6 nodes" in again.stdout

    # A replica loses its volume: it comes back empty and must rejoin as a replica,
    # and the identity it had must not linger as a failed seventh node.
    replica = next(node for node in nodes if node.cli("role").splitlines()[0] == "slave")
    replica.stop()
    shutil.rmtree(replica.data)
    replica.start()
    assert replica.info()["cluster_known_nodes"] == "1"
    healed = form(nodes)
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert f"{replica.address} is not in the cluster; adding it as a replica" in healed.stdout
    wait_for(
        lambda: all(node.info().get("cluster_known_nodes") == "6" for node in nodes),
        timeout=30,
        what="every node knowing exactly 6 nodes",
    )
    assert roles(nodes) == ["master"] * 3 + ["slave"] * 3
    assert first.cli("-c", "get", "{campaign-1}:spent") == "42"
