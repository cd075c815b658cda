"""Throwaway Redis servers from Debian's packages: a single node, or a cluster of
masters and replicas with an explicit cluster bus port (the default, port + 10000,
can run past 65535 or into another server's port)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.infra.common import (
    ServerStartError,
    free_port,
    free_ports,
    kill_process,
    port_open,
    require,
    stop_process,
    wait_for,
)

INSTALL_HINT = "scripts/install-system.sh (Debian package redis-server)"


class RedisServer:
    def __init__(self, root: Path | None = None, *, cluster: bool = False) -> None:
        self.binary = require("redis-server", INSTALL_HINT)
        self.cli = require("redis-cli", INSTALL_HINT)
        self.root = root or Path(tempfile.mkdtemp(prefix="adplatform-redis-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.cluster = cluster
        self.port = 0
        self.bus_port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.root / "redis.log"

    def start(self, retries: int = 5) -> RedisServer:
        last: Exception | None = None
        for _ in range(retries):
            if not self.port:
                self.port = free_port()
                self.bus_port = free_port(exclude=[self.port]) if self.cluster else 0
            try:
                self._start_once()
                return self
            except ServerStartError as exc:
                last = exc
                stop_process(self.process)
                self.port = 0
        raise ServerStartError(f"Redis did not start: {last}")

    def _start_once(self) -> None:
        args = [
            self.binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.root),
            "--save",
            "",
            "--appendonly",
            "yes" if self.cluster else "no",
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            "",
        ]
        if self.cluster:
            args += [
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                str(self.bus_port),
                "--cluster-config-file",
                str(self.root / "nodes.conf"),
                "--cluster-node-timeout",
                "2000",
            ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.ping(), timeout=15, what="Redis", process=self.process, log=self.log)

    def command(self, *args: str) -> str:
        result = subprocess.run(
            [self.cli, "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return result.stdout.strip()

    def ping(self) -> bool:
        return port_open(self.port) and self.command("PING") == "PONG"

    def stop(self) -> None:
        stop_process(self.process)

    def kill(self) -> None:
        kill_process(self.process)

    def restart(self) -> None:
        self.stop()
        self._start_once()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class RedisCluster:
    """`masters` masters with `replicas` replicas each (3 + 3 by default)."""

    def __init__(self, masters: int = 3, replicas: int = 1) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="adplatform-redis-cluster-"))
        self.masters = masters
        self.replicas = replicas
        self.nodes: list[RedisServer] = []

    def start(self) -> RedisCluster:
        count = self.masters * (1 + self.replicas)
        ports = free_ports(count * 2)
        for index in range(count):
            node = RedisServer(self.root / f"node-{index}", cluster=True)
            node.port, node.bus_port = ports[2 * index], ports[2 * index + 1]
            node.start()
            self.nodes.append(node)
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        result = subprocess.run(
            [
                self.nodes[0].cli,
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise ServerStartError(
                f"redis-cli --cluster create failed: {result.stdout}{result.stderr}"
            )
        wait_for(self.is_ok, timeout=30, what="Redis cluster state ok")
        return self

    def is_ok(self) -> bool:
        return all(
            "cluster_state:ok" in node.command("CLUSTER", "INFO")
            for node in self.nodes
            if node.process is not None and node.process.poll() is None
        )

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", node.port) for node in self.nodes]

    def master_nodes(self) -> list[RedisServer]:
        return [node for node in self.nodes if "role:master" in node.command("INFO", "replication")]

    def cleanup(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)
