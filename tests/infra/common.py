"""Ports, processes and waiting: what every server fixture needs."""

from __future__ import annotations

import contextlib
import functools
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

# The kernel hands out 32768-60999 as ephemeral ports here; servers get ports below
# that range so a client's outgoing connection cannot take a port a server is about
# to bind. The choice is random, so parallel runs rarely collide, and every caller
# retries on a bind failure anyway.
PORT_RANGE = (20000, 32000)
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ServerStartError(RuntimeError):
    pass


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(path_or_name: str, install_hint: str) -> str:
    """The binary's path, or skip (locally) / fail (in CI) saying how to install it."""
    found = path_or_name if os.path.exists(path_or_name) else shutil.which(path_or_name)
    if found:
        return found
    message = f"{path_or_name} not found; install it with: {install_hint}"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(exclude: Sequence[int] = ()) -> int:
    for _ in range(200):
        port = random.randint(*PORT_RANGE)
        if port not in exclude and port_is_free(port):
            return port
    raise ServerStartError("no free port found")


def free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        ports.append(free_port(exclude=ports))
    return ports


def wait_for(
    condition: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.1,
    what: str = "condition",
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerStartError(f"{what}: process exited with {process.returncode}{tail(log)}")
        try:
            if condition():
                return
        except Exception:  # noqa: S110 - still starting
            pass
        time.sleep(interval)
    raise ServerStartError(f"{what}: not ready after {timeout}s{tail(log)}")


def tail(log: Path | None, lines: int = 30) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return "\n--- " + str(log) + " ---\n" + "\n".join(text)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def stop_process(
    process: subprocess.Popen[bytes] | None,
    timeout: float = 20.0,
    sig: signal.Signals = signal.SIGTERM,
) -> None:
    """`sig` (SIGTERM), then SIGKILL after `timeout`; waits for the process to be gone."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def kill_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL: the crash a resilience test wants."""
    if process is None or process.poll() is not None:
        return
    process.kill()
    process.wait(10)


def free_port_run(count: int) -> int:
    """The first of `count` consecutive free ports (`adplatform dev` takes a run)."""
    for _ in range(50):
        base = free_port()
        if all(port_is_free(base + offset) for offset in range(1, count)):
            return base
    raise ServerStartError(f"no {count} consecutive free ports")


@contextlib.contextmanager
def serving(
    argv: Callable[[int], Sequence[str]],
    env: Callable[[int], Mapping[str, str]],
    *,
    ready: Callable[[int], bool],
    log: Path,
    what: str,
    ports: int = 1,
    timeout: float = 90.0,
    attempts: int = 3,
) -> Iterator[int]:
    """A server process on `ports` consecutive free loopback ports, once `ready(port)`.

    `argv` and `env` get the first port. A port can be taken between choosing and
    binding it, so "address already in use" is retried on other ports; any other
    failure to start is raised with the log's tail. Yields the first port and stops the
    process (SIGTERM, then SIGKILL) afterwards.
    """
    for _ in range(attempts):
        port = free_port_run(ports) if ports > 1 else free_port()
        with open(log, "wb") as out:
            process = subprocess.Popen(
                list(argv(port)), stdout=out, stderr=subprocess.STDOUT, env=dict(env(port))
            )
        try:
            wait_for(
                functools.partial(ready, port),
                timeout=timeout,
                what=what,
                process=process,
                log=log,
            )
        except ServerStartError:
            stop_process(process)
            if "address already in use" in log.read_text(errors="replace").lower():
                continue
            raise
        try:
            yield port
        finally:
            stop_process(process)
        return
    raise ServerStartError(f"{what}: could not bind free ports in {attempts} attempts")
