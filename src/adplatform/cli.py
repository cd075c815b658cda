"""The `adplatform` command.

adplatform dev                 the whole platform in one process (SQLite, in-process
                               cache and bus, demo data, exchange simulator)
adplatform serve <service>     one service in production mode (real dependencies)
adplatform migrate             apply database migrations
adplatform seed                demo advertisers, campaigns and creatives
adplatform simulate            send OpenRTB traffic to a bidder
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Annotated

import typer

from adplatform.core.bus import EventBus
from adplatform.core.config import MissingSettingError, Settings, get_settings
from adplatform.core.db import DEFAULT_SQLITE_PATH
from adplatform.core.logging import configure_logging
from adplatform.core.server import (
    SERVICES,
    Listener,
    available_services,
    load_service,
    run,
    serve_all,
)

app = typer.Typer(
    name="adplatform",
    help="Advertising platform: campaigns, OpenRTB bidding and analytics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DEV_ADMIN_KEY = "dev-admin-key"
DEV_INTERNAL_KEY = "dev-internal-key"
DEV_PORTS = {"campaigns": 8080, "bidding": 8081, "analytics": 8082}


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICES)}.")],
) -> None:
    """Run one service in production mode; refuses to start without its dependencies."""
    if service not in SERVICES:
        raise _fail(f"unknown service {service!r}; choose one of {', '.join(SERVICES)}")
    try:
        settings = get_settings()
    except Exception as exc:  # pydantic's message names the bad variable
        raise _fail(f"invalid settings: {exc}") from exc
    configure_logging(settings.log_level.value, service=service)
    module = load_service(service)
    try:
        settings.require(*module.REQUIRED_SETTINGS, service=service)
        service_app = module.create_app(settings)  # may refuse a setting's value too
    except MissingSettingError as exc:
        raise _fail(str(exc)) from exc
    listener = Listener(service_app, settings.http_host, settings.http_port)
    run(lambda: serve_all([listener], log_level=settings.log_level.value))


@app.command()
def migrate(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Apply database migrations to DATABASE_URL (the embedded SQLite file when unset)."""
    from adplatform.migrations import upgrade

    settings = get_settings()
    configure_logging(settings.log_level.value, service="migrate")
    upgrade(settings.database_url, revision)
    typer.echo(f"database migrated to {revision}")


@app.command()
def seed(
    campaigns: Annotated[
        int,
        typer.Option(
            min=0,
            max=1_000_000,
            help="How many campaigns to create (0: the demo set).",
        ),
    ] = 0,
    advertisers: Annotated[
        int, typer.Option(min=0, max=100_000, help="How many advertisers (0: one per 10).")
    ] = 0,
    fresh_only: Annotated[
        bool, typer.Option("--if-empty", help="Do nothing when campaigns already exist.")
    ] = False,
) -> None:
    """Create demo advertisers, campaigns and creatives (load data with --campaigns N)."""
    from adplatform.campaigns.seed import DEMO_CAMPAIGNS, seed_database

    settings = get_settings()
    configure_logging("WARNING", json=False)
    result = asyncio.run(
        seed_database(
            settings.database_url,
            campaigns=campaigns or DEMO_CAMPAIGNS,
            advertisers=advertisers or None,
            only_if_empty=fresh_only,
            show_progress=True,
        )
    )
    typer.echo(result.describe())


@app.command()
def simulate(
    bidder_url: Annotated[str, typer.Option(help="The bidder's base URL.")] = (
        f"http://127.0.0.1:{DEV_PORTS['bidding']}"
    ),
    rate: Annotated[float, typer.Option(min=0.1, help="Bid requests per second.")] = 50.0,
    duration: Annotated[
        float, typer.Option(min=0, help="Seconds to run; 0 runs until interrupted.")
    ] = 0.0,
    concurrency: Annotated[int, typer.Option(min=1, max=1000)] = 32,
) -> None:
    """Send realistic OpenRTB traffic and fire win/impression/click notices."""
    from adplatform.bidding.simulator import simulate as run_simulator

    configure_logging("WARNING", json=False)
    stats = asyncio.run(
        run_simulator(
            bidder_url,
            rate=rate,
            duration=duration or None,
            concurrency=concurrency,
            show_progress=True,
        )
    )
    typer.echo(stats.describe())


@app.command("analytics-rollup")
def analytics_rollup(
    older_than_days: Annotated[
        int | None,
        typer.Option(
            min=1, help="Roll up minutes older than this (ANALYTICS_MINUTE_RETENTION_DAYS)."
        ),
    ] = None,
    prune: Annotated[
        bool,
        typer.Option(help="Also forget event ids older than ANALYTICS_DEDUP_RETENTION_HOURS."),
    ] = True,
) -> None:
    """Roll analytics minute buckets older than N days into hourly ones (totals unchanged)."""
    from adplatform.analytics.retention import run_retention

    try:
        settings = get_settings()
    except Exception as exc:  # pydantic's message names the bad variable
        raise _fail(f"invalid settings: {exc}") from exc
    configure_logging(settings.log_level.value, service="analytics-rollup")
    typer.echo(asyncio.run(run_retention(settings, older_than_days=older_than_days, prune=prune)))


@app.command()
def dev(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port_base: Annotated[
        int, typer.Option(help="Campaigns on this port, bidding +1, analytics +2.")
    ] = DEV_PORTS["campaigns"],
    metrics_port: Annotated[int, typer.Option(help="Prometheus metrics port (0: off).")] = 9090,
    database: Annotated[Path, typer.Option(help="SQLite file.")] = DEFAULT_SQLITE_PATH,
    fresh: Annotated[bool, typer.Option(help="Start from an empty database.")] = False,
    demo_data: Annotated[bool, typer.Option(help="Seed demo data into an empty database.")] = True,
    simulate_traffic: Annotated[
        bool, typer.Option("--simulate/--no-simulate", help="Run the exchange simulator.")
    ] = True,
    rate: Annotated[float, typer.Option(min=0.1, help="Simulated bid requests per second.")] = 20.0,
) -> None:
    """Run the whole platform in one process on embedded adapters, with demo data."""
    from adplatform.migrations import upgrade

    configure_logging("INFO", json=False)
    database.parent.mkdir(parents=True, exist_ok=True)
    if fresh and database.exists():
        database.unlink()
    database_url = f"sqlite:///{database}"
    upgrade(database_url)

    services = available_services()
    ports = {name: port_base + offset for offset, name in enumerate(SERVICES)}
    env = get_settings()
    settings = env.model_copy(
        update={
            "database_url": database_url,
            "redis_host": None,
            "kafka_brokers": [],
            "metrics_port": metrics_port,
            "metrics_enabled": metrics_port > 0,
            "admin_api_key": env.admin_api_key or _secret(DEV_ADMIN_KEY),
            "internal_api_key": env.internal_api_key or _secret(DEV_INTERNAL_KEY),
            "tracking_secret": env.tracking_secret or _secret(secrets.token_urlsafe(32)),
            "campaign_service_url": f"http://{host}:{ports['campaigns']}",
            "public_bidding_url": f"http://{host}:{ports['bidding']}",
        }
    )

    demo_keys: list[str] = []
    if demo_data:
        from adplatform.campaigns.seed import DEMO_CAMPAIGNS, seed_database

        result = asyncio.run(
            seed_database(
                database_url, campaigns=DEMO_CAMPAIGNS, only_if_empty=True, show_progress=False
            )
        )
        demo_keys = result.api_keys[:1]

    bus = EventBus.from_brokers([])
    listeners = []
    for name in services:
        module = load_service(name)
        service_settings = settings.model_copy(update={"http_port": ports[name]})
        listeners.append(Listener(module.create_app(service_settings, bus=bus), host, ports[name]))

    background = []
    if simulate_traffic and "bidding" in services:
        from adplatform.bidding.simulator import simulate as run_simulator

        async def simulator() -> None:
            await asyncio.sleep(2.0)  # let the bidder load its snapshot
            await run_simulator(
                settings.public_bidding_url, rate=rate, duration=None, show_progress=False
            )

        background.append(simulator)

    _print_banner(host, ports, services, settings, demo_keys)
    run(lambda: serve_all(listeners, log_level="INFO", background=background))


def _secret(value: str) -> object:
    from pydantic import SecretStr

    return SecretStr(value)


def _print_banner(
    host: str, ports: dict[str, int], services: list[str], settings: Settings, keys: list[str]
) -> None:
    admin = settings.admin_api_key.get_secret_value() if settings.admin_api_key else "-"
    lines = ["", "adplatform dev — the whole platform in one process", ""]
    urls = {
        "campaigns": "/docs",
        "bidding": "/openrtb2/bid",
        "analytics": "/analytics/dashboard",
    }
    for name in services:
        lines.append(f"  {name:<10} http://{host}:{ports[name]}{urls[name]}")
    if settings.metrics_enabled:
        lines.append(f"  {'metrics':<10} http://{host}:{settings.metrics_port}/metrics")
    lines += ["", f"  admin key: {admin}  (header X-API-Key)"]
    if keys:
        lines.append(f"  demo advertiser key: {keys[0]}")
    lines.append("")
    typer.echo("\n".join(lines))


if __name__ == "__main__":
    app()
