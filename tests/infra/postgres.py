"""A throwaway PostgreSQL server from Debian's packages.

PostgreSQL refuses to run as root, so when the tests run as root the server runs as
the `postgres` user, with its data in a temporary directory that user owns.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path

from tests.infra.common import (
    ServerStartError,
    free_port,
    kill_process,
    port_open,
    require,
    stop_process,
    wait_for,
)

INSTALL_HINT = "scripts/install-system.sh (Debian package postgresql)"
RUN_AS = "postgres" if os.geteuid() == 0 else None


def postgres_bin_dir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), reverse=True)
    path = candidates[0] if candidates else "/usr/lib/postgresql/15/bin/postgres"
    return Path(require(path, INSTALL_HINT)).parent


class PostgresServer:
    def __init__(self, *, fast: bool = True) -> None:
        self.bin = postgres_bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="adplatform-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = 0
        self.fast = fast
        self.process: subprocess.Popen[bytes] | None = None
        if RUN_AS:
            shutil.chown(self.root, RUN_AS, RUN_AS)

    def _run(self, *args: str) -> None:
        subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            user=RUN_AS,
            cwd=self.root,
        )

    def initdb(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def start(self, retries: int = 5) -> PostgresServer:
        if not self.data.exists():
            self.initdb()
        last: Exception | None = None
        for _ in range(retries):
            self.port = self.port or free_port()
            try:
                self._start_once()
                return self
            except ServerStartError as exc:
                last = exc
                stop_process(self.process)
                self.port = 0
        raise ServerStartError(f"PostgreSQL did not start: {last}")

    def _start_once(self) -> None:
        settings = [
            "listen_addresses=127.0.0.1",
            f"port={self.port}",
            f"unix_socket_directories={self.root}",
            "max_connections=300",
            "shared_buffers=128MB",
        ]
        if self.fast:
            settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        args = [str(self.bin / "postgres"), "-D", str(self.data)]
        for setting in settings:
            args += ["-c", setting]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, user=RUN_AS, cwd=self.root
            )
        wait_for(
            lambda: port_open(self.port) and self._accepts(),
            timeout=30,
            what="PostgreSQL",
            process=self.process,
            log=self.log,
        )

    def _accepts(self) -> bool:
        result = subprocess.run(
            [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
            capture_output=True,
        )
        return result.returncode == 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [
                str(self.bin / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-Atc",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout.strip()

    def create_database(self, name: str | None = None, template: str | None = None) -> str:
        """A new empty (or templated) database; returns its URL."""
        name = name or f"test_{uuid.uuid4().hex[:12]}"
        clause = f" TEMPLATE {template}" if template else ""
        self.psql(f'CREATE DATABASE "{name}"{clause}')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: SIGTERM ("smart") waits for every
        # idle pooled client to disconnect first.
        stop_process(self.process, sig=signal.SIGINT)

    def kill(self) -> None:
        kill_process(self.process)

    def restart(self) -> None:
        self.stop()
        self._start_once()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
