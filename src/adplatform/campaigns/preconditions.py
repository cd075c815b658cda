"""Optimistic concurrency: versions, ETags and the two ways a client states what it read.

- `If-Match: "<version>"` (the ETag of the read): a stale one is **412 Precondition
  Failed**, as HTTP specifies for conditional requests.
- `"version": <n>` in the body: a stale one is **409 Conflict** (code
  `version_conflict`), for clients that cannot set headers.

Either, both or neither may be sent; without them a write is unconditional.
"""

from __future__ import annotations

from dataclasses import dataclass

from adplatform.core.errors import Conflict, PreconditionFailed


def etag(version: int) -> str:
    return f'"{version}"'


@dataclass(frozen=True, slots=True)
class IfMatch:
    any: bool
    versions: frozenset[int]

    @classmethod
    def parse(cls, header: str | None) -> IfMatch | None:
        """`*`, `"3"`, `W/"3"` or a comma-separated list; tokens that are not our ETags
        simply never match (so a garbled header is a 412, never a silent overwrite)."""
        if header is None:
            return None
        versions: set[int] = set()
        for raw in header.split(","):
            token = raw.strip()
            if token == "*":  # noqa: S105 - the HTTP wildcard, not a secret
                return cls(any=True, versions=frozenset())
            token = token.removeprefix("W/").strip('"')
            if token.isascii() and token.isdigit() and len(token) <= 10:
                versions.add(int(token))
        return cls(any=False, versions=frozenset(versions))

    def matches(self, version: int) -> bool:
        return self.any or version in self.versions


def check_version(current: int, if_match: IfMatch | None, body_version: int | None) -> None:
    if if_match is not None and not if_match.matches(current):
        raise PreconditionFailed(
            "If-Match does not match the current version: read it again and retry",
            details={"field": "If-Match", "current_version": current},
            headers={"ETag": etag(current)},
        )
    if body_version is not None and body_version != current:
        raise Conflict(
            f"version {body_version} is stale; the current version is {current}",
            code="version_conflict",
            details={"field": "version", "current_version": current},
            headers={"ETag": etag(current)},
        )
