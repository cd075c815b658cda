"""Request and response bodies of the campaign API (pydantic; they are the OpenAPI docs).

Requests are strict where JSON is ambiguous: numbers must be JSON integers (no
`"100"`, no `1.5`, no `true`), unknown fields are rejected (`extra="forbid"`), strings
have length limits, and every code is checked against its reference list, so a bad
value is a 422 naming the field (`targeting.countries.2`) rather than a campaign that
silently never bids. Responses are built as plain dicts and encoded with msgspec; the
`*Out` models describe them (the schemathesis test checks responses against them).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    field_validator,
)

from adplatform.campaigns import rules
from adplatform.campaigns.rules import CampaignStatus, CreativeStatus, Pacing

T = TypeVar("T")


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------ value types

Id = Annotated[StrictInt, Field(ge=1, le=rules.MAX_ID)]
Name = Annotated[
    StrictStr,
    Field(min_length=1, max_length=rules.MAX_NAME_LENGTH),
    AfterValidator(rules.clean_name),
]
BudgetMicros = Annotated[
    StrictInt,
    Field(ge=1, le=rules.MAX_BUDGET_MICROS, description="Integer micros (1 USD = 1,000,000)."),
]
BidMicros = Annotated[
    StrictInt,
    Field(ge=1, le=rules.MAX_BID_CPM_MICROS, description="CPM (per 1000 impressions) in micros."),
]
FlightTime = Annotated[
    AwareDatetime,
    AfterValidator(rules.utc),
    Field(description="RFC 3339 with a UTC offset; stored in UTC."),
]
Country = Annotated[StrictStr, Field(max_length=8), AfterValidator(rules.country_code)]
DeviceType = Annotated[StrictInt, Field(ge=1, le=7), AfterValidator(rules.device_type)]
OperatingSystem = Annotated[StrictStr, Field(max_length=32), AfterValidator(rules.operating_system)]
Category = Annotated[StrictStr, Field(max_length=16), AfterValidator(rules.iab_category)]
Domain = Annotated[
    StrictStr, Field(max_length=rules.MAX_DOMAIN_LENGTH + 5), AfterValidator(rules.domain_name)
]
Size = Annotated[StrictStr, Field(max_length=16), AfterValidator(rules.banner_size)]
Hour = Annotated[StrictInt, Field(ge=0, le=23), AfterValidator(rules.hour_of_day)]
TimeZone = Annotated[StrictStr, Field(max_length=64), AfterValidator(rules.timezone_name)]
Url = Annotated[StrictStr, Field(max_length=rules.MAX_URL_LENGTH), AfterValidator(rules.http_url)]
Dimension = Annotated[StrictInt, Field(ge=1, le=rules.MAX_CREATIVE_DIMENSION)]
Markup = Annotated[StrictStr, Field(min_length=1, max_length=rules.MAX_MARKUP_LENGTH)]
Version = Annotated[
    StrictInt,
    Field(ge=1, le=rules.MAX_ID, description="The version you read; a stale one is a 409."),
]


def _unique(values: list[Any]) -> list[Any]:
    return rules.unique(values)


def _sorted_unique(values: list[int]) -> list[int]:
    return sorted(set(values))


# ------------------------------------------------------------------- targeting


class Targeting(Request):
    """Who may see the ads; an empty list does not restrict that dimension."""

    countries: Annotated[
        list[Country], Field(max_length=rules.MAX_LIST_ITEMS), AfterValidator(_unique)
    ] = Field(default_factory=list, description="ISO-3166-1 alpha-3 codes (`USA`, `DEU`).")
    device_types: Annotated[
        list[DeviceType], Field(max_length=7), AfterValidator(_sorted_unique)
    ] = Field(
        default_factory=list,
        description="OpenRTB 2.6 device types: 1 mobile/tablet, 2 PC, 3 connected TV, 4 phone, "
        "5 tablet, 6 connected device, 7 set-top box.",
    )
    os: Annotated[list[OperatingSystem], Field(max_length=32), AfterValidator(_unique)] = Field(
        default_factory=list, description="Lower-case OS names (`ios`, `android`, `windows`, ...)."
    )
    categories: Annotated[
        list[Category], Field(max_length=rules.MAX_LIST_ITEMS), AfterValidator(_unique)
    ] = Field(
        default_factory=list, description="IAB Content Taxonomy 1.0 codes (`IAB1`, `IAB19-6`)."
    )
    domains_allow: Annotated[
        list[Domain], Field(max_length=rules.MAX_DOMAINS), AfterValidator(_unique)
    ] = Field(default_factory=list, description="Only these site/app domains (empty: any).")
    domains_block: Annotated[
        list[Domain], Field(max_length=rules.MAX_DOMAINS), AfterValidator(_unique)
    ] = Field(default_factory=list, description="Never these site/app domains.")
    sizes: Annotated[list[Size], Field(max_length=50), AfterValidator(_unique)] = Field(
        default_factory=list, description="Banner sizes `WxH`; empty: the creatives' sizes."
    )
    hours: Annotated[list[Hour], Field(max_length=24), AfterValidator(_sorted_unique)] = Field(
        default_factory=list, description="Hours of day (0-23) in `timezone` when bidding is on."
    )
    timezone: TimeZone = Field(default="UTC", description="IANA zone for `hours`.")


class FrequencyCap(Request):
    impressions: Annotated[StrictInt, Field(ge=1, le=rules.MAX_FREQUENCY_IMPRESSIONS)]
    window_seconds: Annotated[
        StrictInt,
        Field(ge=rules.MIN_FREQUENCY_WINDOW_SECONDS, le=rules.MAX_FREQUENCY_WINDOW_SECONDS),
    ]


# --------------------------------------------------------------------- requests


def _not_null(value: Any) -> Any:
    """PATCH fields that may be omitted but not set to null."""
    if value is None:
        raise ValueError("may be omitted but not null")
    return value


class AdvertiserCreate(Request):
    name: Name
    domain: Domain | None = None


class AdvertiserPatch(Request):
    name: Name | None = None
    domain: Domain | None = None
    version: Version | None = None

    _no_null = field_validator("name", "version", mode="before")(_not_null)


class CreativeCreate(Request):
    name: Name | None = None
    width: Dimension
    height: Dimension
    markup: Markup | None = Field(default=None, description="HTML ad markup (or give image_url).")
    image_url: Url | None = Field(default=None, description="Image ad (or give markup).")
    click_url: Url
    adomain: Domain = Field(description="The advertiser's domain, as OpenRTB `bid.adomain`.")
    iab_category: Category | None = None
    status: Literal["active", "paused"] = "active"


class CreativePatch(Request):
    name: Name | None = None
    width: Dimension | None = None
    height: Dimension | None = None
    markup: Markup | None = None
    image_url: Url | None = None
    click_url: Url | None = None
    adomain: Domain | None = None
    iab_category: Category | None = None
    status: CreativeStatus | None = None
    version: Version | None = None

    _no_null = field_validator(
        "width", "height", "click_url", "adomain", "status", "version", mode="before"
    )(_not_null)


class CampaignCreate(Request):
    advertiser_id: Id | None = Field(
        default=None, description="Required with the admin key; an advertiser key implies it."
    )
    name: Name = Field(description="Unique per advertiser.")
    status: Literal["draft", "active"] = Field(
        default="draft", description="`active` needs at least one active creative."
    )
    total_budget_micros: BudgetMicros
    daily_budget_micros: BudgetMicros
    max_bid_cpm_micros: BidMicros
    pacing: Pacing = Pacing.EVEN
    flight_start: FlightTime | None = None
    flight_end: FlightTime | None = None
    frequency_cap: FrequencyCap | None = None
    targeting: Targeting = Field(default_factory=Targeting)
    creatives: Annotated[list[CreativeCreate], Field(max_length=50)] = Field(
        default_factory=list, description="Created with the campaign, in the same transaction."
    )


class CampaignPatch(Request):
    """Only the fields given change; `targeting` replaces the sub-fields it names."""

    name: Name | None = None
    status: CampaignStatus | None = None
    total_budget_micros: BudgetMicros | None = None
    daily_budget_micros: BudgetMicros | None = None
    max_bid_cpm_micros: BidMicros | None = None
    pacing: Pacing | None = None
    flight_start: FlightTime | None = Field(default=None, description="null clears it.")
    flight_end: FlightTime | None = Field(default=None, description="null clears it.")
    frequency_cap: FrequencyCap | None = Field(default=None, description="null clears it.")
    targeting: Targeting | None = None
    version: Version | None = None

    _no_null = field_validator(
        "name",
        "status",
        "total_budget_micros",
        "daily_budget_micros",
        "max_bid_cpm_micros",
        "pacing",
        "targeting",
        "version",
        mode="before",
    )(_not_null)


class StatusChange(Request):
    status: CampaignStatus
    version: Version | None = None


# -------------------------------------------------------------------- responses


class AdvertiserOut(BaseModel):
    id: int
    name: str
    domain: str | None
    version: int
    created_at: datetime
    updated_at: datetime


class ApiKeyOut(BaseModel):
    id: int
    advertiser_id: int
    prefix: str = Field(description="The key's first characters, to tell keys apart.")
    created_at: datetime
    revoked_at: datetime | None


class IssuedApiKeyOut(ApiKeyOut):
    key: str = Field(description="The key itself. Shown this once; only its hash is stored.")


class TargetingOut(BaseModel):
    countries: list[str]
    device_types: list[int]
    os: list[str]
    categories: list[str]
    domains_allow: list[str]
    domains_block: list[str]
    sizes: list[str]
    hours: list[int]
    timezone: str


class FrequencyCapOut(BaseModel):
    impressions: int
    window_seconds: int


class CampaignOut(BaseModel):
    id: int
    advertiser_id: int
    name: str
    status: CampaignStatus
    total_budget_micros: int
    daily_budget_micros: int
    max_bid_cpm_micros: int
    pacing: Pacing
    flight_start: datetime | None
    flight_end: datetime | None
    frequency_cap: FrequencyCapOut | None
    targeting: TargetingOut
    version: int = Field(description="Grows with every write to the campaign or its creatives.")
    created_at: datetime
    updated_at: datetime


class CreativeOut(BaseModel):
    id: int
    campaign_id: int
    advertiser_id: int
    name: str | None
    width: int
    height: int
    markup: str | None
    image_url: str | None
    click_url: str
    adomain: str
    iab_category: str | None
    status: CreativeStatus
    version: int
    created_at: datetime
    updated_at: datetime


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    error: ErrorDetail
