from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adplatform.core.app import create_service_app, readiness_of
from adplatform.core.config import Settings
from adplatform.core.errors import Conflict
from adplatform.core.metrics import REGISTRY

SETTINGS = Settings(metrics_enabled=False)


async def item(request: Request) -> Response:
    item_id = int(request.path_params["item_id"])
    if item_id == 409:
        raise Conflict("item is busy", details={"field": "item_id"})
    if item_id == 500:
        raise RuntimeError("boom with internal detail")
    return JSONResponse({"id": item_id})


def starlette_app() -> Starlette:
    return create_service_app(
        "unit", SETTINGS, routes=[Route("/items/{item_id:int}", item)], max_body_bytes=64
    )


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = starlette_app()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


async def test_liveness_needs_no_dependency(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live")
    assert response.status_code == 200
    assert response.json()["service"] == "unit"


async def test_readiness_reports_each_check() -> None:
    app = starlette_app()
    state = {"db": True}

    async def database() -> bool:
        return state["db"]

    async def cache() -> None:
        raise ConnectionError("cache refused")

    readiness_of(app).add("database", database)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        response = await c.get("/health/ready")
        assert response.status_code == 200
        assert response.json()["checks"]["database"] == {"ok": True, "error": None}
        readiness_of(app).add("cache", cache)
        response = await c.get("/health/ready")
        assert response.status_code == 503
        assert response.json()["checks"]["cache"]["error"] == "ConnectionError: cache refused"
        state["db"] = False
        response = await c.get("/health/ready")
        assert response.json()["checks"]["database"]["ok"] is False


async def test_readiness_ok_when_all_checks_pass() -> None:
    app = starlette_app()

    async def ok() -> None:
        return None

    readiness_of(app).add("ok", ok)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/health/ready")).status_code == 200


async def test_api_error_uses_the_shared_body(client: httpx.AsyncClient) -> None:
    response = await client.get("/items/409")
    assert response.status_code == 409
    assert response.json() == {
        "error": {"code": "conflict", "message": "item is busy", "details": {"field": "item_id"}}
    }


async def test_unknown_route_and_method_are_json_errors(client: httpx.AsyncClient) -> None:
    response = await client.get("/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    response = await client.post("/items/1")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


async def test_bug_is_a_500_without_internals(client: httpx.AsyncClient) -> None:
    response = await client.get("/items/500")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "boom" not in response.text


async def test_body_over_limit_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post("/items/1", content=b"x" * 65)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_request_metrics_use_route_templates(client: httpx.AsyncClient) -> None:
    await client.get("/items/12345")
    await client.get("/items/409")
    await client.get("/random/path/98765")
    text = generate_latest(REGISTRY).decode()
    assert (
        'http_requests_total{method="GET",route="/items/{item_id:int}",service="unit",status="200"}'
        in text
    )
    assert 'route="/items/{item_id:int}",service="unit",status="409"' in text
    assert 'route="<unmatched>",service="unit",status="404"' in text
    assert "/items/12345" not in text
    assert "/random/path/98765" not in text
    assert 'http_request_duration_seconds_bucket{le="0.005",route="/items/{item_id:int}"' in text


class Thing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=5)
    budget_micros: int = Field(ge=0)


def fastapi_app() -> FastAPI:
    app = create_service_app("unit-fastapi", SETTINGS, app_class=FastAPI)

    @app.post("/things")
    async def create(thing: Thing) -> Thing:
        return thing

    return app


async def test_fastapi_validation_errors_name_the_field() -> None:
    transport = httpx.ASGITransport(app=fastapi_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        response = await c.post("/things", json={"name": "toolong", "budget_micros": -1, "x": 1})
        assert response.status_code == 422
        body = response.json()["error"]
        assert body["code"] == "validation_error"
        fields = {d["field"] for d in body["details"]}
        assert fields == {"name", "budget_micros", "x"}

        response = await c.post(
            "/things", content=b'{"name": ', headers={"content-type": "application/json"}
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "malformed_json"

        ok = await c.post("/things", json={"name": "ok", "budget_micros": 5})
        assert ok.status_code == 200


async def test_routes_of_included_fastapi_routers_get_their_template() -> None:
    from fastapi import APIRouter

    app = create_service_app("unit-included", SETTINGS, app_class=FastAPI)
    router = APIRouter(prefix="/reports")

    @router.get("/{report_id}")
    async def report(report_id: int) -> dict[str, int]:
        return {"id": report_id}

    app.include_router(router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/reports/777")).status_code == 200
    text = generate_latest(REGISTRY).decode()
    assert 'route="/reports/{report_id}",service="unit-included",status="200"' in text
    assert "/reports/777" not in text
