"""A throwaway Apache Kafka broker in KRaft mode (combined broker + controller), run
from the Maven Central jars `scripts/install-kafka.sh` puts in `.cache/kafka/libs`.

`stop()` and `start()` keep the data directory and the ports, so a test can take the
broker away and bring the same one back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from tests.infra.common import (
    PROJECT_ROOT,
    ServerStartError,
    free_ports,
    kill_process,
    port_open,
    require,
    stop_process,
    wait_for,
)

LIBS = PROJECT_ROOT / ".cache" / "kafka" / "libs"
LOG4J_CONFIG = PROJECT_ROOT / "scripts" / "kafka" / "log4j2.yaml"
INSTALL_HINT = "scripts/install-kafka.sh (Kafka jars from Maven Central)"


class KafkaBroker:
    def __init__(self, *, partitions: int = 6, heap: str = "512m") -> None:
        self.java = require("java", "a Java 17 runtime (the machine's OpenJDK)")
        if not any(LIBS.glob("kafka_2.13-*.jar")):
            require(str(LIBS / "kafka_2.13.jar"), INSTALL_HINT)
        self.root = Path(tempfile.mkdtemp(prefix="adplatform-kafka-"))
        self.data = self.root / "data"
        self.log = self.root / "broker.log"
        self.partitions = partitions
        self.heap = heap
        self.port = 0
        self.controller_port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._formatted = False
        self._started = False  # once it has run, its ports and data are kept for restarts

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _classpath(self) -> str:
        return str(LIBS / "*")

    def _write_config(self) -> Path:
        config = self.root / "server.properties"
        config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    f"log.dirs={self.data}",
                    f"num.partitions={self.partitions}",
                    "auto.create.topics.enable=true",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=6",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "log.flush.interval.messages=9223372036854775807",
                    "",
                ]
            )
        )
        return config

    def _java(self, main: str, *args: str, wait: bool) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "KAFKA_HEAP_OPTS": f"-Xmx{self.heap}",
        }
        command = [
            self.java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            "-cp",
            self._classpath(),
            main,
            *args,
        ]
        with open(self.log, "ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        if wait:
            process.wait(120)
        return process

    def start(self, retries: int = 4) -> KafkaBroker:
        """Start the broker. Until it has run once, a failed start (a port taken between
        choosing and binding it) is retried on new ports with freshly formatted storage;
        after that, a start keeps the ports and data a restarting test expects."""
        last: Exception | None = None
        for _ in range(retries):
            if not self.port:
                self.port, self.controller_port = free_ports(2)
            try:
                self._start_once()
                return self
            except ServerStartError as exc:
                last = exc
                kill_process(self.process)
                if self._started:
                    break  # same data dir, keep the ports a restarting test expects
                self.port = self.controller_port = 0
                self._formatted = False  # the next attempt wipes and reformats
        raise ServerStartError(f"Kafka did not start: {last}")

    def _start_once(self) -> None:
        config = self._write_config()
        if not self._formatted:
            shutil.rmtree(self.data, ignore_errors=True)
            cluster_id = _random_cluster_id()
            formatter = self._java(
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(config),
                wait=True,
            )
            if formatter.returncode != 0:
                raise ServerStartError(f"kafka storage format failed{self._tail()}")
            self._formatted = True
        self.process = self._java("kafka.Kafka", str(config), wait=False)
        wait_for(
            self._ready, timeout=90, interval=0.25, what="Kafka", process=self.process, log=self.log
        )
        self._started = True

    def _tail(self) -> str:
        from tests.infra.common import tail

        return tail(self.log)

    def _ready(self) -> bool:
        if not port_open(self.port):
            return False
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        metadata = admin.list_topics(timeout=2)
        return bool(metadata.brokers)

    def stop(self) -> None:
        stop_process(self.process, timeout=30)

    def kill(self) -> None:
        kill_process(self.process)

    def restart(self) -> None:
        self.stop()
        self._start_once()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _random_cluster_id() -> str:
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
