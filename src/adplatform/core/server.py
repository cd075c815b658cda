"""Running service apps under uvicorn: one in production, several in `adplatform dev`.

Several apps share one event loop (uvloop) in dev mode, each on its own port, so the
embedded platform is the production topology folded into one process.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final, Protocol

import uvicorn
from starlette.applications import Starlette

from adplatform.core.bus import EventBus
from adplatform.core.config import Settings

SERVICES: Final = {
    "campaigns": "adplatform.campaigns.main",
    "bidding": "adplatform.bidding.main",
    "analytics": "adplatform.analytics.main",
}
"""Service name (CLI argument, metrics `service` label, chart key) -> its entry module."""


class ServiceModule(Protocol):
    """What every `adplatform.<service>.main` module provides."""

    SERVICE: str
    REQUIRED_SETTINGS: tuple[str, ...]

    def create_app(self, settings: Settings, *, bus: EventBus | None = None) -> Starlette: ...


def load_service(name: str) -> ServiceModule:
    try:
        module: ModuleType = importlib.import_module(SERVICES[name])
    except KeyError:
        raise ValueError(f"unknown service {name!r}; choose one of {', '.join(SERVICES)}") from None
    return module  # type: ignore[return-value,unused-ignore]  # a module is the protocol


def available_services() -> list[str]:
    """Services whose package exists in this build (dev mode runs all of them)."""
    found = []
    for name, module in SERVICES.items():
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                continue
            raise
        found.append(name)
    return found


@dataclass
class Listener:
    app: Starlette
    host: str
    port: int


def uvicorn_config(listener: Listener, *, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        listener.app,
        host=listener.host,
        port=listener.port,
        loop="none",
        http="httptools",
        lifespan="on",
        log_config=None,
        log_level=log_level.lower(),
        access_log=False,
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=20,
        backlog=4096,
    )


async def serve_all(
    listeners: Sequence[Listener],
    *,
    log_level: str = "INFO",
    background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
) -> None:
    """Serve every listener until one stops (SIGINT/SIGTERM stop them all)."""
    servers = [uvicorn.Server(uvicorn_config(item, log_level=log_level)) for item in listeners]
    # Each server captures SIGINT/SIGTERM and passes it on when it exits, so one
    # signal stops them all; background jobs (simulator, relays) are then cancelled.
    server_tasks = [asyncio.create_task(server.serve()) for server in servers]
    job_tasks = [asyncio.create_task(job()) for job in background]
    try:
        done, _ = await asyncio.wait(
            [*server_tasks, *job_tasks], return_when=asyncio.FIRST_COMPLETED
        )
        for task in done:
            error = task.exception()
            if error is not None:
                raise error
    finally:
        for server in servers:
            server.should_exit = True
        for task in job_tasks:
            task.cancel()
        await asyncio.gather(*server_tasks, *job_tasks, return_exceptions=True)


def run(coro_factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run on uvloop, the platform's event loop."""
    import uvloop

    uvloop.run(coro_factory())
