"""The service app factory: what every adplatform service has in common.

`create_service_app` gives a Starlette (or FastAPI) app:

- `/health/live` (the process answers; no dependency is checked, so a slow database
  never gets a healthy pod killed) and `/health/ready` (every registered readiness
  check passes: dependencies reachable, caches warm); optional `/health` and `/ready`
  aliases for the bidder's exchange-facing probes;
- the request metrics middleware and the metrics server on `METRICS_PORT`;
- the shared JSON error format for `ApiError`, HTTP errors, validation errors and bugs;
- a request body size limit.

Services add their routes and register readiness checks on `app.state.readiness`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Lifespan, Message, Receive, Scope, Send

from adplatform import __version__
from adplatform.core.config import Settings
from adplatform.core.errors import HTTP_STATUS_CODES, ApiError, error_response
from adplatform.core.logging import get_logger
from adplatform.core.metrics import SERVICE_INFO, RequestMetricsMiddleware, start_metrics_server

log = get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[object]]
"""Raises (or returns False) when the dependency is not ready."""

AppT = TypeVar("AppT", bound=Starlette)

DEFAULT_MAX_BODY_BYTES = 1_048_576


@dataclass
class CheckResult:
    ok: bool
    error: str | None = None


class Readiness:
    """Named readiness checks, run concurrently with a per-check timeout."""

    def __init__(self, timeout_seconds: float = 2.0) -> None:
        self.timeout_seconds = timeout_seconds
        self._checks: dict[str, ReadinessCheck] = {}
        self.draining = False

    def add(self, name: str, check: ReadinessCheck) -> None:
        self._checks[name] = check

    async def _run(self, check: ReadinessCheck) -> CheckResult:
        try:
            result = await asyncio.wait_for(check(), self.timeout_seconds)
        except TimeoutError:
            return CheckResult(False, f"timed out after {self.timeout_seconds:g}s")
        except Exception as exc:
            return CheckResult(False, f"{type(exc).__name__}: {exc}"[:300])
        if result is False:
            return CheckResult(False, "not ready")
        return CheckResult(True)

    async def evaluate(self) -> tuple[bool, dict[str, CheckResult]]:
        names = list(self._checks)
        results = await asyncio.gather(*(self._run(self._checks[n]) for n in names))
        by_name = dict(zip(names, results, strict=True))
        if self.draining:
            by_name["draining"] = CheckResult(False, "shutting down")
        return all(r.ok for r in by_name.values()), by_name


class BodySizeLimitMiddleware:
    """Reject request bodies over a limit with 413 before a handler buffers them."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_large = int(value) > self.max_body_bytes
                except ValueError:
                    too_large = False
                if too_large:
                    await self._reject(scope, receive, send)
                    return
                break
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise HTTPException(413, f"request body over {self.max_body_bytes} bytes")
            return message

        await self.app(scope, limited_receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413, "payload_too_large", f"request body over {self.max_body_bytes} bytes"
        )
        await response(scope, receive, send)


async def _api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)


async def _http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code < 400:
        return Response(status_code=exc.status_code, headers=exc.headers)
    code = HTTP_STATUS_CODES.get(exc.status_code, "error")
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, code, str(exc.detail), None, headers)


async def _unhandled_error_handler(request: Request, exc: Exception) -> Response:
    log.error("unhandled_error", path=request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


def _validation_error_handler() -> tuple[type[Exception], Callable[..., Awaitable[Response]]]:
    """FastAPI's request validation error, as 400 (malformed JSON) or 422 naming the fields."""
    from fastapi.exceptions import RequestValidationError

    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        details = [
            {
                "field": ".".join(str(part) for part in err.get("loc", ()) if part != "body")
                or "body",
                "message": str(err.get("msg", "invalid")),
                "type": str(err.get("type", "invalid")),
            }
            for err in errors
        ]
        if any(err.get("type") == "json_invalid" for err in errors):
            return error_response(400, "malformed_json", "request body is not valid JSON", details)
        return error_response(422, "validation_error", "request is invalid", details)

    return RequestValidationError, handler


def create_service_app(
    service: str,
    settings: Settings,
    *,
    app_class: type[AppT] = Starlette,  # type: ignore[assignment]
    routes: Sequence[BaseRoute] = (),
    lifespan: Callable[[AppT], contextlib.AbstractAsyncContextManager[None]] | None = None,
    probe_aliases: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    **app_kwargs: Any,
) -> AppT:
    """Build a service app with health, metrics, error handling and a body limit."""
    readiness = Readiness()

    async def live(request: Request) -> Response:
        return JSONResponse({"status": "ok", "service": service})

    async def ready(request: Request) -> Response:
        ok, results = await readiness.evaluate()
        body = {
            "status": "ready" if ok else "not_ready",
            "service": service,
            "checks": {n: {"ok": r.ok, "error": r.error} for n, r in results.items()},
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    health_routes: list[BaseRoute] = [
        Route("/health/live", live, methods=["GET"], include_in_schema=False),
        Route("/health/ready", ready, methods=["GET"], include_in_schema=False),
    ]
    if probe_aliases:
        health_routes += [
            Route("/health", live, methods=["GET"], include_in_schema=False),
            Route("/ready", ready, methods=["GET"], include_in_schema=False),
        ]

    @contextlib.asynccontextmanager
    async def app_lifespan(app: AppT) -> AsyncIterator[None]:
        if settings.metrics_enabled and settings.metrics_port:
            start_metrics_server(settings.metrics_port)
        SERVICE_INFO.labels(service, __version__).set(1)
        log.info("service_starting", service=service, environment=settings.environment.value)
        try:
            if lifespan is None:
                yield
            else:
                async with lifespan(app):
                    yield
        finally:
            readiness.draining = True
            log.info("service_stopped", service=service)

    app = app_class(
        routes=[*health_routes, *routes],
        lifespan=app_lifespan,  # type: ignore[arg-type]
        **app_kwargs,
    )
    app.state.service = service
    app.state.settings = settings
    app.state.readiness = readiness

    app.add_exception_handler(ApiError, _api_error_handler)
    app.add_exception_handler(HTTPException, _http_error_handler)
    app.add_exception_handler(Exception, _unhandled_error_handler)
    if issubclass(app_class, _fastapi_class()):
        exc_class, handler = _validation_error_handler()
        app.add_exception_handler(exc_class, handler)

    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=max_body_bytes)
    app.add_middleware(RequestMetricsMiddleware, service=service, routes=app.router.routes)
    return app


def _fastapi_class() -> type[Starlette]:
    from fastapi import FastAPI

    return FastAPI


def readiness_of(app: Starlette) -> Readiness:
    readiness: Readiness = app.state.readiness
    return readiness


__all__ = ["Lifespan", "Readiness", "ReadinessCheck", "create_service_app", "readiness_of"]
