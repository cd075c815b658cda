"""Property-based run of the OpenAPI schema (schemathesis) against the real service on
real PostgreSQL: valid and invalid requests alike, never a 5xx, and every response
conforms to the documented status codes, content types and schemas."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from adplatform.migrations import upgrade
from tests.infra.common import ServerStartError, free_port, stop_process, wait_for
from tests.infra.postgres import PostgresServer
from tests.integration.campaigns.support import (
    ADMIN_KEY,
    INTERNAL_KEY,
    campaign_body,
    creative_body,
    is_ready,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def campaign_server(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    database_url = postgres_server.create_database()
    upgrade(database_url)
    log = Path(tmp_path_factory.mktemp("schemathesis")) / "server.log"
    process = None
    for _ in range(3):
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "ADMIN_API_KEY": ADMIN_KEY,
            "INTERNAL_API_KEY": INTERNAL_KEY,
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(port),
            "METRICS_ENABLED": "false",
            "KAFKA_BROKERS": "",
            "LOG_LEVEL": "WARNING",
            "ENVIRONMENT": "test",
        }
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "adplatform", "serve", "campaigns"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(
                functools.partial(is_ready, url),
                timeout=60,
                what="campaign service",
                process=process,
                log=log,
            )
            break
        except ServerStartError:
            stop_process(process)
            process = None
    if process is None:
        raise ServerStartError(f"campaign service did not start (see {log})")
    # Existing resources, so generated ids hit real rows too (ids 1-3 exist).
    admin = {"X-API-Key": ADMIN_KEY}
    with httpx.Client(base_url=url, headers=admin, timeout=10) as client:
        for number in range(1, 4):
            advertiser = client.post("/advertisers", json={"name": f"Fuzz {number}"}).json()
            client.post(
                "/campaigns",
                json=campaign_body(advertiser["id"], f"Fuzz {number}", creatives=[creative_body()]),
            ).raise_for_status()
            client.post(f"/advertisers/{advertiser['id']}/api-keys").raise_for_status()
    try:
        yield url
    finally:
        stop_process(process)
        server_errors = [
            line
            for line in log.read_text(errors="replace").splitlines()
            if "unhandled_error" in line
        ]
        assert not server_errors, "\n".join(server_errors[:5])


def _openapi_document() -> dict[str, Any]:
    """The schema the service serves, built without a database (engines connect lazily)."""
    from adplatform.campaigns.main import create_app
    from tests.integration.campaigns.support import settings as service_settings

    document: dict[str, Any] = create_app(service_settings("sqlite://")).openapi()
    return document


schema = schemathesis.openapi.from_dict(_openapi_document())
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=100, database=None)
def test_api_never_fails_on_any_input(case: Any, campaign_server: str) -> None:
    case.call_and_validate(
        base_url=campaign_server,
        headers={"X-API-Key": ADMIN_KEY},
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )


def test_the_served_schema_is_the_tested_one(campaign_server: str) -> None:
    served = httpx.get(f"{campaign_server}/openapi.json", timeout=10).json()
    assert served == _openapi_document()
