"""The chart's Redis Cluster pieces on real Redis servers: six nodes started by the
chart's own redis-start.sh and redis.conf (password, AOF, cluster bus port), formed by
its cluster Job script, which must also be idempotent and heal a node that lost its data;
and a cluster whose six nodes all come back at new IP addresses must re-form by itself.

Like the StatefulSet's pods, the nodes share one port and differ by IP (loopback addresses
127.0.0.2 and up) and have stable DNS names; a `getent` placed first on the scripts' PATH
stands in for the headless Service's DNS, answering from a table the test rewrites when
the "pods" move."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.chart.conftest import CHART
from tests.infra.common import free_ports, require, stop_process, wait_for

FILES = CHART / "files"
PASSWORD = "cluster-test-password"
INSTALL_HINT = "scripts/install-system.sh (Debian package redis-server)"
NODE_TIMEOUT_MS = 2000
# The six "pods" start at HOSTS, then all move twice: to addresses no node ever had (every
# address in nodes.conf is dead), then each to an address another node had (IPs are reused
# in a cluster: the recorded address of a node now answers with another node's ID).
HOSTS = tuple(f"127.0.0.{2 + i}" for i in range(6))
MOVES = {
    "fresh addresses": tuple(f"127.0.0.{12 + i}" for i in range(6)),
    "addresses of other nodes": tuple(f"127.0.0.{12 + (i + 1) % 6}" for i in range(6)),
}
# A cluster of six whose every node moved must be ok again within this many seconds: a
# few meet rounds (1 s apart) plus the node timeouts Redis waits before it clears failures.
REFORM_WITHIN_S = 60


class Dns:
    """`getent hosts <name>` answered from a table: the pods' DNS names and current IPs."""

    def __init__(self, root: Path) -> None:
        self.bin = root / "bin"
        self.table = root / "hosts"
        self.bin.mkdir(parents=True)
        self.table.write_text("")
        getent = self.bin / "getent"
        getent.write_text(
            "#!/bin/sh\n"
            '[ "$1" = hosts ] || exec /usr/bin/getent "$@"\n'
            f"awk -v name=\"$2\" '$2 == name {{print; found = 1}} END {{exit (found ? 0 : 2)}}' "
            f"{self.table}\n"
        )
        getent.chmod(0o755)

    def publish(self, nodes: list[Node]) -> None:
        self.table.write_text("".join(f"{node.host} {node.name}\n" for node in nodes))

    @property
    def path(self) -> str:
        return f"{self.bin}:/usr/bin:/bin:/usr/sbin:/sbin"


class Node:
    def __init__(self, root: Path, index: int, host: str, port: int, bus_port: int) -> None:
        self.root, self.host, self.port, self.bus_port = root, host, port, bus_port
        self.name = f"redis-{index}.redis-headless.test.svc"
        self.data = root / "data"
        self.log = root / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def dns_address(self) -> str:
        return f"{self.name}:{self.port}"

    def start(self, dns: Dns, peers: list[Node]) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        conf = (FILES / "redis.conf").read_text()
        conf = conf.replace("/run/redis/auth.conf", str(self.root / "auth.conf"))
        conf = conf.replace("/data", str(self.data))
        (self.root / "redis.conf").write_text(conf)
        env = {
            "PATH": dns.path,
            "REDIS_CONF": str(self.root / "redis.conf"),
            "REDIS_AUTH_FILE": str(self.root / "auth.conf"),
            "REDIS_PASSWORD": PASSWORD,
            "REDIS_PORT": str(self.port),
            "REDIS_BUS_PORT": str(self.bus_port),
            "REDIS_NODE_TIMEOUT_MS": str(NODE_TIMEOUT_MS),
            "REDIS_APPENDFSYNC": "everysec",
            "REDIS_MAXMEMORY": "64mb",
            # What the StatefulSet passes: the pod's IP, every node's DNS name.
            "REDIS_POD_IP": self.host,
            "REDIS_NODES": " ".join(peer.dns_address for peer in peers),
            "REDIS_MEET_INTERVAL_S": "1",
        }
        log = open(self.log, "ab")  # noqa: SIM115 - the server writes it
        # One pod, one address: connections leave from the node's own address too (by
        # default the kernel would pick 127.0.0.1 for every loopback peer).
        options = ["--bind", self.host, "--bind-source-addr", self.host, "--logfile", ""]
        self.process = subprocess.Popen(
            ["sh", str(FILES / "redis-start.sh"), *options],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(
            lambda: self.cli("ping") == "PONG",
            timeout=20,
            what=f"redis at {self.address}",
            process=self.process,
            log=self.log,
        )

    def cli(self, *args: str, auth: bool = True) -> str:
        env = {"PATH": "/usr/bin:/bin", **({"REDISCLI_AUTH": PASSWORD} if auth else {})}
        result = subprocess.run(
            ["redis-cli", "-h", self.host, "-p", str(self.port), *args],
            capture_output=True, text=True, env=env, timeout=10,
        )  # fmt: skip
        return result.stdout.strip()

    def info(self) -> dict[str, str]:
        lines = self.cli("cluster", "info").splitlines()
        return dict(line.strip().split(":", 1) for line in lines if ":" in line)

    def cluster_nodes(self) -> list[list[str]]:
        return [line.split() for line in self.cli("cluster", "nodes").splitlines() if line]

    def stop(self) -> None:
        stop_process(self.process)


class Cluster:
    def __init__(self, root: Path, hosts: list[str], port: int, bus_port: int) -> None:
        self.dns = Dns(root)
        self.nodes = [
            Node(root / f"node{i}", i, host, port, bus_port) for i, host in enumerate(hosts)
        ]

    def start(self) -> None:
        self.dns.publish(self.nodes)
        for node in self.nodes:
            node.start(self.dns, self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _loopback_usable(host: str) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, 0))
        except OSError:
            return False
    return True


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    require("redis-server", INSTALL_HINT)
    require("redis-cli", INSTALL_HINT)
    if not all(map(_loopback_usable, (*HOSTS, *MOVES["fresh addresses"]))):
        pytest.skip("127.0.0.0/8 beyond 127.0.0.1 is not bindable here (not Linux?)")
    port, bus_port = free_ports(2)
    formed = Cluster(tmp_path, list(HOSTS), port, bus_port)
    try:
        formed.start()
        yield formed
    finally:
        formed.stop()


def form(nodes: list[Node], dns: Dns) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(FILES / "redis-cluster-init.sh")],
        env={
            "PATH": dns.path,
            "REDIS_NODES": " ".join(node.dns_address for node in nodes),
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
def test_cluster_job_forms_heals_and_is_idempotent(cluster: Cluster) -> None:
    nodes, dns = cluster.nodes, cluster.dns
    first = nodes[0]
    assert first.cli("ping", auth=False).startswith("NOAUTH"), "the password must be required"
    assert first.cli("config", "get", "appendonly").splitlines() == ["appendonly", "yes"]
    assert first.cli("config", "get", "cluster-port").splitlines()[1] == str(first.bus_port)

    created = form(nodes, dns)
    assert created.returncode == 0, created.stdout + created.stderr
    assert "creating a cluster of 6 nodes" in created.stdout
    info = first.info()
    assert info["cluster_state"] == "ok"
    assert info["cluster_slots_assigned"] == "16384"
    assert info["cluster_known_nodes"] == "6"
    assert roles(nodes) == ["master"] * 3 + ["slave"] * 3
    assert first.cli("-c", "set", "{campaign-1}:spent", "42") == "OK"

    again = form(nodes, dns)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "creating" not in again.stdout
    assert "adding" not in again.stdout
    assert "cluster ok with 6 nodes" in again.stdout

    # A replica loses its volume: it comes back empty and must rejoin as a replica,
    # and the identity it had must not linger as a failed seventh node.
    replica = next(node for node in nodes if node.cli("role").splitlines()[0] == "slave")
    replica.stop()
    shutil.rmtree(replica.data)
    replica.start(dns, nodes)
    assert replica.info()["cluster_known_nodes"] == "1"
    healed = form(nodes, dns)
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert f"{replica.address} is not in the cluster; adding it as a replica" in healed.stdout
    wait_for(
        lambda: all(node.info().get("cluster_known_nodes") == "6" for node in nodes),
        timeout=30,
        what="every node knowing exactly 6 nodes",
    )
    assert roles(nodes) == ["master"] * 3 + ["slave"] * 3
    assert first.cli("-c", "get", "{campaign-1}:spent") == "42"


def _logged(node: Node, text: str, offset: int) -> bool:
    return text.encode() in node.log.read_bytes()[offset:]


def _whole(nodes: list[Node]) -> bool:
    """Every node: cluster_state ok, six nodes known, each at its current address, none
    failing (the addresses clients get from CLUSTER SLOTS/NODES are the new ones)."""
    current = {node.address for node in nodes}
    for node in nodes:
        if node.info().get("cluster_state") != "ok":
            return False
        entries = node.cluster_nodes()
        if len(entries) != 6:
            return False
        for entry in entries:
            address, flags = entry[1].split("@")[0], entry[2].split(",")
            if address not in current or {"fail", "fail?", "noaddr", "handshake"} & set(flags):
                return False
    return True


@pytest.mark.integration
def test_cluster_reforms_when_every_node_comes_back_at_a_new_address(cluster: Cluster) -> None:
    """All six pods recreated at once (new IPs, same names and volumes): nodes.conf names
    only dead addresses, or addresses that now belong to other nodes. redis-start.sh
    rewrites each node's own entry and meets the peers it resolves by DNS; the cluster
    must be whole again within REFORM_WITHIN_S, with its data and three shards."""
    nodes, dns = cluster.nodes, cluster.dns
    created = form(nodes, dns)
    assert created.returncode == 0, created.stdout + created.stderr
    # The Job returns once the first node sees the cluster ok; the others follow shortly.
    wait_for(partial(_whole, nodes), timeout=30, what="the cluster agreeing before the moves")
    first = nodes[0]
    for i in range(20):
        assert first.cli("-c", "set", f"{{campaign-{i}}}:spent", str(i)) == "OK"

    for move, hosts in MOVES.items():
        cluster.stop()
        before = [node.address for node in nodes]
        for node, host in zip(nodes, hosts, strict=True):
            node.host = host
        assert all(node.address != old for node, old in zip(nodes, before, strict=True))
        logs = [len(node.log.read_bytes()) for node in nodes]
        started = time.monotonic()
        cluster.start()
        for node in nodes:  # each node's own entry already names its new address
            (myself,) = [entry for entry in node.cluster_nodes() if "myself" in entry[2]]
            assert myself[1].split("@")[0] == node.address, (move, myself)

        deadline = started + REFORM_WITHIN_S
        while not _whole(nodes):
            assert time.monotonic() < deadline, (
                f"{move}: not re-formed within {REFORM_WITHIN_S}s:\n"
                + "\n".join(f"{node.address}: {node.cli('cluster', 'nodes')}" for node in nodes)
            )
            time.sleep(0.5)
        print(f"{move}: re-formed {time.monotonic() - started:.1f}s after the restart")
        # Which node of a pair is the master may change (a replica that reached the other
        # masters first can be failed over to); three shards with a replica each remain.
        assert roles(nodes) == ["master"] * 3 + ["slave"] * 3, move
        for i in range(20):
            assert first.cli("-c", "get", f"{{campaign-{i}}}:spent") == str(i), move
        for node, offset in zip(nodes, logs, strict=True):  # every meet loop ended
            wait_for(
                partial(_logged, node, "redis-start: cluster_state:ok", offset),
                timeout=10,
                what=f"{move}: {node.address}'s meet loop ending",
            )
