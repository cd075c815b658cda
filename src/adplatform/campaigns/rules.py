"""The campaign rules: status lifecycle, budget, flight and targeting validation.

Pure functions with no I/O, so the rules are unit-tested on their own and the service
applies exactly the same checks to a new campaign and to the result of a PATCH (a
partial update is validated as the whole campaign it produces, not field by field).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any, Final
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from adplatform.campaigns.reference import (
    COUNTRIES,
    DEVICE_TYPES,
    IAB_CATEGORIES,
    OPERATING_SYSTEMS,
)
from adplatform.core.errors import Conflict, ValidationFailed

# ------------------------------------------------------------------------ limits

MAX_ID: Final = 2**31 - 1
"""Ids are PostgreSQL `integer`; anything larger cannot exist (and must not reach SQL)."""
MAX_BUDGET_MICROS: Final = 10**15
"""USD 1 billion: more is a typo (or an attack), not a campaign."""
MAX_BID_CPM_MICROS: Final = 10**9
"""USD 1,000 CPM."""
MAX_NAME_LENGTH: Final = 200
MAX_URL_LENGTH: Final = 2048
MAX_MARKUP_LENGTH: Final = 65_536
MAX_DOMAIN_LENGTH: Final = 253
MAX_DOMAINS: Final = 1000
MAX_LIST_ITEMS: Final = 300
MAX_CREATIVE_DIMENSION: Final = 10_000
MAX_FREQUENCY_IMPRESSIONS: Final = 10_000
MIN_FREQUENCY_WINDOW_SECONDS: Final = 60
MAX_FREQUENCY_WINDOW_SECONDS: Final = 30 * 86_400
MAX_FLIGHT: Final = timedelta(days=3660)
EARLIEST_FLIGHT: Final = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_FLIGHT: Final = datetime(2100, 1, 1, tzinfo=UTC)


# ------------------------------------------------------------------------ status


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    ARCHIVED = "archived"


class CreativeStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    ARCHIVED = "archived"


class Pacing(StrEnum):
    EVEN = "even"
    """Spread the daily budget over the day."""
    ASAP = "asap"
    """Spend as fast as bids win, until the daily budget is gone."""


CAMPAIGN_TRANSITIONS: Final[Mapping[CampaignStatus, frozenset[CampaignStatus]]] = {
    CampaignStatus.DRAFT: frozenset({CampaignStatus.ACTIVE, CampaignStatus.ARCHIVED}),
    CampaignStatus.ACTIVE: frozenset(
        {CampaignStatus.PAUSED, CampaignStatus.COMPLETED, CampaignStatus.ARCHIVED}
    ),
    CampaignStatus.PAUSED: frozenset(
        {CampaignStatus.ACTIVE, CampaignStatus.COMPLETED, CampaignStatus.ARCHIVED}
    ),
    CampaignStatus.COMPLETED: frozenset({CampaignStatus.ARCHIVED}),
    CampaignStatus.ARCHIVED: frozenset(),
}
"""draft -> active <-> paused -> completed; anything but archived -> archived."""

CREATIVE_TRANSITIONS: Final[Mapping[CreativeStatus, frozenset[CreativeStatus]]] = {
    CreativeStatus.ACTIVE: frozenset({CreativeStatus.PAUSED, CreativeStatus.ARCHIVED}),
    CreativeStatus.PAUSED: frozenset({CreativeStatus.ACTIVE, CreativeStatus.ARCHIVED}),
    CreativeStatus.ARCHIVED: frozenset(),
}

EDITABLE_CAMPAIGN_STATUSES: Final = frozenset(
    {CampaignStatus.DRAFT, CampaignStatus.ACTIVE, CampaignStatus.PAUSED}
)
"""Completed and archived campaigns are history: analytics refers to them as they were."""

INITIAL_CAMPAIGN_STATUSES: Final = frozenset({CampaignStatus.DRAFT, CampaignStatus.ACTIVE})


class IllegalTransition(Conflict):
    code = "illegal_transition"


class ReadOnly(Conflict):
    code = "read_only"


class NotReady(Conflict):
    code = "campaign_not_ready"


def check_campaign_transition(current: CampaignStatus, target: CampaignStatus) -> bool:
    """True if `target` is a change, False if it is the current status (a no-op, so a
    retried request is harmless); raises `IllegalTransition` (409) otherwise."""
    if current == target:
        return False
    if target not in CAMPAIGN_TRANSITIONS[current]:
        allowed = sorted(CAMPAIGN_TRANSITIONS[current])
        raise IllegalTransition(
            f"a campaign cannot go from {current} to {target}",
            details={"field": "status", "from": current, "to": target, "allowed": allowed},
        )
    return True


def check_creative_transition(current: CreativeStatus, target: CreativeStatus) -> bool:
    if current == target:
        return False
    if target not in CREATIVE_TRANSITIONS[current]:
        allowed = sorted(CREATIVE_TRANSITIONS[current])
        raise IllegalTransition(
            f"a creative cannot go from {current} to {target}",
            details={"field": "status", "from": current, "to": target, "allowed": allowed},
        )
    return True


def check_campaign_editable(status: CampaignStatus) -> None:
    if status not in EDITABLE_CAMPAIGN_STATUSES:
        raise ReadOnly(
            f"a {status} campaign can no longer be changed",
            details={"field": "status", "status": status},
        )


def check_activation(
    *, active_creatives: int, flight_end: datetime | None, now: datetime | None = None
) -> None:
    """A campaign may only go live if it can bid: a creative to show, a flight not over."""
    if active_creatives < 1:
        raise NotReady(
            "a campaign needs at least one active creative to be activated",
            details={"field": "creatives"},
        )
    now = now or datetime.now(UTC)
    if flight_end is not None and flight_end <= now:
        raise NotReady("the campaign's flight has already ended", details={"field": "flight_end"})


# ------------------------------------------------------------ whole-object checks


@dataclass(frozen=True, slots=True)
class Violation:
    field: str
    message: str
    type: str

    def as_detail(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message, "type": self.type}


class InvalidResource(ValidationFailed):
    """422 naming every field that breaks a rule."""

    def __init__(self, violations: Sequence[Violation]) -> None:
        first = violations[0]
        super().__init__(
            f"{first.field}: {first.message}",
            details=[violation.as_detail() for violation in violations],
        )


def raise_if_any(violations: Sequence[Violation]) -> None:
    if violations:
        raise InvalidResource(violations)


def budget_violations(
    *, total_budget_micros: int, daily_budget_micros: int, max_bid_cpm_micros: int
) -> list[Violation]:
    found: list[Violation] = []
    if daily_budget_micros > total_budget_micros:
        found.append(
            Violation(
                "daily_budget_micros",
                "the daily budget is larger than the total budget",
                "budget.daily_over_total",
            )
        )
    # One impression at the max bid costs max_bid_cpm / 1000; a daily budget below that
    # can never buy anything, which is always a units mistake (CPM vs per-impression).
    if max_bid_cpm_micros > daily_budget_micros * 1000:
        found.append(
            Violation(
                "max_bid_cpm_micros",
                "one impression at this CPM costs more than the daily budget",
                "budget.bid_over_daily",
            )
        )
    return found


def flight_violations(start: datetime | None, end: datetime | None) -> list[Violation]:
    if start is not None and end is not None:
        if end <= start:
            return [Violation("flight_end", "the flight ends before it starts", "flight.order")]
        if end - start > MAX_FLIGHT:
            return [Violation("flight_end", "a flight may last at most 10 years", "flight.length")]
    return []


def targeting_violations(targeting: Mapping[str, Any]) -> list[Violation]:
    found: list[Violation] = []
    allow = set(targeting.get("domains_allow") or ())
    block = set(targeting.get("domains_block") or ())
    both = sorted(allow & block)
    if both:
        found.append(
            Violation(
                "targeting.domains_block",
                f"domains both allowed and blocked: {', '.join(both[:5])}",
                "targeting.domain_conflict",
            )
        )
    return found


def creative_violations(*, markup: str | None, image_url: str | None) -> list[Violation]:
    if (markup is None) == (image_url is None):
        return [
            Violation(
                "markup",
                "give exactly one of markup (HTML) or image_url",
                "creative.content",
            )
        ]
    return []


# ------------------------------------------------------ single values (schemas)
# Each raises ValueError with a message for the client; pydantic puts it under the
# field's location, so the error body names e.g. `targeting.countries.2`.

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DOMAIN_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_SIZE = re.compile(r"^([1-9][0-9]{0,4})x([1-9][0-9]{0,4})$")


def clean_name(value: str) -> str:
    value = unicodedata.normalize("NFC", value).strip()
    if not value:
        raise ValueError("must not be blank")
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"must be at most {MAX_NAME_LENGTH} characters")
    return value


def country_code(value: str) -> str:
    code = value.strip().upper()
    if code not in COUNTRIES:
        raise ValueError(f"{value!r} is not an ISO-3166-1 alpha-3 country code")
    return code


def device_type(value: int) -> int:
    if value not in DEVICE_TYPES:
        raise ValueError(f"{value} is not an OpenRTB 2.6 device type (1-7)")
    return value


def operating_system(value: str) -> str:
    name = value.strip().lower()
    if name not in OPERATING_SYSTEMS:
        raise ValueError(
            f"unknown operating system {value!r}; use one of {sorted(OPERATING_SYSTEMS)}"
        )
    return name


def iab_category(value: str) -> str:
    code = value.strip().upper()
    if code not in IAB_CATEGORIES:
        raise ValueError(f"{value!r} is not an IAB Content Taxonomy 1.0 category (IAB1 .. IAB26-4)")
    return code


def domain_name(value: str) -> str:
    name = value.strip().lower().removesuffix(".")
    if name.startswith("www."):
        name = name[4:]
    labels = name.split(".")
    if (
        not name
        or len(name) > MAX_DOMAIN_LENGTH
        or len(labels) < 2
        or not all(_DOMAIN_LABEL.match(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise ValueError(f"{value!r} is not a domain name")
    return name


def banner_size(value: str) -> str:
    match = _SIZE.match(value.strip().lower())
    if match is None:
        raise ValueError(f"{value!r} is not a banner size WxH (like 300x250)")
    width, height = int(match[1]), int(match[2])
    if width > MAX_CREATIVE_DIMENSION or height > MAX_CREATIVE_DIMENSION:
        raise ValueError(f"{value!r}: width and height must be at most {MAX_CREATIVE_DIMENSION}")
    return f"{width}x{height}"


def hour_of_day(value: int) -> int:
    if not 0 <= value <= 23:
        raise ValueError(f"{value} is not an hour of day (0-23)")
    return value


@lru_cache(maxsize=1024)
def _zone_exists(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def timezone_name(value: str) -> str:
    name = value.strip()
    if not name or len(name) > 64 or not _zone_exists(name):
        raise ValueError(f"{value!r} is not an IANA time zone (like Europe/Berlin)")
    return name


def http_url(value: str) -> str:
    url = value.strip()
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"must be at most {MAX_URL_LENGTH} characters")
    if _CONTROL.search(url) or " " in url:
        raise ValueError("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        host = None
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"{value!r} is not an http(s) URL")
    return url


def unique(values: Iterable[Any]) -> list[Any]:
    """Keep the first of each value, in order (duplicates in a list mean nothing)."""
    return list(dict.fromkeys(values))


def utc(value: datetime) -> datetime:
    """Flight times must carry a zone (schemas ensure it); stored and compared in UTC."""
    try:
        moment = value.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 shifted past the calendar's ends
        raise ValueError("must be between 2000-01-01 and 2100-01-01") from None
    if not EARLIEST_FLIGHT <= moment < LATEST_FLIGHT:
        raise ValueError("must be between 2000-01-01 and 2100-01-01")
    return moment
