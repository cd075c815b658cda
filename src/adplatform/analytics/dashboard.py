"""`/analytics/dashboard`: the built front end (`frontend/` -> `static/`), no CDN.

The page calls the same `/analytics/...` API with an `X-API-Key` the user types once
(kept in the browser's localStorage). Only in development with the well-known dev
admin key (`adplatform dev`) is that key written into the page, so the dashboard works
out of the box there; a real deployment never embeds a key.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Final

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from adplatform.core.config import Environment, Settings
from adplatform.core.errors import error_response

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
DEV_ADMIN_KEY: Final = "dev-admin-key"
"""The key `adplatform dev` uses; public, so embedding it reveals nothing."""
DEV_KEY_PLACEHOLDER: Final = 'name="adp-dev-key" content=""'

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def dev_key(settings: Settings) -> str | None:
    """The key to prefill, only for the embedded platform's public dev key."""
    key = settings.admin_api_key.get_secret_value() if settings.admin_api_key else None
    if settings.environment == Environment.DEVELOPMENT and key == DEV_ADMIN_KEY:
        return key
    return None


def dashboard_routes(settings: Settings) -> list[Route | Mount]:
    index = STATIC_DIR / "index.html"
    prefill = dev_key(settings)

    async def dashboard(request: Request) -> Response:
        if not index.exists():
            return error_response(
                503,
                "unavailable",
                "dashboard not built: run `make dashboard` (needs npm)",
            )
        page = index.read_text()
        if prefill:
            page = page.replace(
                DEV_KEY_PLACEHOLDER, f'name="adp-dev-key" content="{html.escape(prefill)}"'
            )
        return HTMLResponse(
            page,
            headers={
                "Content-Security-Policy": CONTENT_SECURITY_POLICY,
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )

    routes: list[Route | Mount] = [
        Route("/analytics/dashboard", dashboard, methods=["GET"], include_in_schema=False)
    ]
    if STATIC_DIR.is_dir():
        routes.append(
            Mount("/analytics/static", StaticFiles(directory=STATIC_DIR), name="analytics-static")
        )
    return routes
