"""Prometheus metrics shared by every service, and the HTTP middleware that feeds them.

The names and labels here are what the alert rules, the dashboards and the HPA's
prometheus-adapter rules query (`deploy/monitoring/`): change them together. Labels
stay low-cardinality: a route template, never a raw path, campaign id or user id.
Service-specific metrics (the bidder's) live in their service package on the same
registry.
"""

from __future__ import annotations

import threading
import time
from typing import Final

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REGISTRY: Final[CollectorRegistry] = DEFAULT_REGISTRY

# Latency buckets from 1 ms to 10 s: fine enough at the bidder's scale (tens of ms)
# and wide enough for slow database-bound calls.
LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests handled, by service, method, route template and status code.",
    ["service", "method", "route", "status"],
    registry=REGISTRY,
)
HTTP_REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from request start to the end of the response body, by route template.",
    ["service", "route"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
EVENTS_PUBLISHED = Counter(
    "events_published_total",
    "Events the broker acknowledged, by topic.",
    ["topic"],
    registry=REGISTRY,
)
EVENTS_PUBLISH_FAILURES = Counter(
    "events_publish_failures_total",
    "Events the broker did not acknowledge (they are retried or counted as dropped).",
    ["topic"],
    registry=REGISTRY,
)
EVENTS_DROPPED = Counter(
    "events_dropped_total",
    "Events given up on because the producer's bounded buffer was full.",
    ["topic"],
    registry=REGISTRY,
)
EVENTS_CONSUMED = Counter(
    "events_consumed_total",
    "Events a consumer processed, by topic.",
    ["topic"],
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "event_consumer_lag_messages",
    "Messages between a consumer group's position and the partition's end.",
    ["group", "topic", "partition"],
    registry=REGISTRY,
)
SERVICE_INFO = Gauge(
    "adplatform_service_info",
    "Always 1; labels say which service and version this process runs.",
    ["service", "version"],
    registry=REGISTRY,
)

UNMATCHED_ROUTE: Final = "<unmatched>"

_server_lock = threading.Lock()
_servers: dict[int, object] = {}


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104
    """Serve `/metrics` on its own port, once per process (dev mode shares one)."""
    with _server_lock:
        if port in _servers:
            return
        _servers[port] = start_http_server(port, addr=addr, registry=REGISTRY)


def route_template(routes: list[BaseRoute], scope: Scope) -> str:
    """The path pattern a request matched (`/v1/campaigns/{campaign_id}`), for labels."""
    for route in routes:
        match, child_scope = route.matches(scope)
        if match == Match.FULL:
            if isinstance(route, Mount):
                inner = route_template(route.routes, {**scope, **child_scope})
                return route.path + inner
            return str(getattr(route, "path", UNMATCHED_ROUTE))
    return UNMATCHED_ROUTE


class RequestMetricsMiddleware:
    """Pure ASGI middleware (no per-request task or body buffering) for request metrics.

    The route template is resolved once per (method, path) and cached, so a hot path
    pays two dictionary look-ups and two metric updates per request.
    """

    def __init__(self, app: ASGIApp, *, service: str, routes: list[BaseRoute]) -> None:
        self.app = app
        self.service = service
        self.routes = routes
        self._templates: dict[tuple[str, str], str] = {}
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self._observe(scope, status, time.perf_counter() - start)

    def _observe(self, scope: Scope, status: int, elapsed: float) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        key = (method, path)
        # FastAPI leaves the matched route in the scope (it sees inside included
        # routers, which plain matching cannot); Starlette does not, so match then.
        matched = scope.get("route")
        template = getattr(matched, "path", None) or self._templates.get(key)
        if template is None:
            template = route_template(self.routes, scope)
            # Only cache matched paths: unmatched ones are unbounded (scanners, typos).
            if template != UNMATCHED_ROUTE and len(self._templates) < 10_000:
                self._templates[key] = template
        child_key = (method, template, status)
        children = self._children.get(child_key)
        if children is None:
            children = (
                HTTP_REQUESTS.labels(self.service, method, template, str(status)),
                HTTP_REQUEST_DURATION.labels(self.service, template),
            )
            self._children[child_key] = children
        children[0].inc()
        children[1].observe(elapsed)
