"""The committed dashboard bundle is built from the committed front-end sources.

Running needs no npm because the built bundle is committed; this catches a source
change committed without `make dashboard`, which would serve the old page.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import adplatform.analytics

PACKAGE = Path(adplatform.analytics.__file__).parent
FRONTEND = PACKAGE / "frontend"
STATIC = PACKAGE / "static"


def sources_digest() -> str:
    """What `make dashboard` stamps: every front-end file but node_modules, in byte
    order of their paths, concatenated."""
    files = sorted(
        "./" + path.relative_to(FRONTEND).as_posix()
        for path in FRONTEND.rglob("*")
        if path.is_file() and "node_modules" not in path.relative_to(FRONTEND).parts
    )
    digest = hashlib.sha256()
    for name in files:
        digest.update((FRONTEND / name).read_bytes())
    return digest.hexdigest()


def test_the_bundle_was_built_from_the_current_sources() -> None:
    stamped = (STATIC / "SOURCES.sha256").read_text().strip()
    assert stamped == sources_digest(), (
        "the dashboard sources changed since the bundle was built: run `make dashboard` "
        "and commit src/adplatform/analytics/static"
    )


def test_the_page_loads_only_bundled_assets() -> None:
    page = (STATIC / "index.html").read_text()
    references = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert references, page
    for reference in references:
        if reference.startswith("data:"):  # inline (the empty favicon): no request
            continue
        assert reference.startswith("/analytics/static/assets/"), reference  # no CDN
        assert (STATIC / reference.removeprefix("/analytics/static/")).is_file(), reference
