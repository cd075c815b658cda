"""Settings from environment variables.

Every service reads the same `Settings`; the names are the contract with the Helm
chart's ConfigMap and Secrets (a chart test compares them), so rename nothing here
without changing `deploy/helm/adplatform` too.

An unset dependency (`DATABASE_URL`, `REDIS_HOST`, `KAFKA_BROKERS`) means "use the
embedded adapter": SQLite, the in-process cache, the in-process event bus. That is
what `adplatform dev` wants; `adplatform serve <service>` calls `require()` so a
production process refuses to start without its real dependencies.
"""

from __future__ import annotations

import math
from enum import StrEnum
from functools import lru_cache
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    STAGING = "staging"
    PRODUCTION = "production"


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class MissingSettingError(RuntimeError):
    """A production dependency is not configured; the message says which and how."""


class Settings(BaseSettings):
    """All settings of all services; each service uses the part it needs."""

    model_config = SettingsConfigDict(
        env_file=None, case_sensitive=False, extra="ignore", frozen=True
    )

    # --- process ---------------------------------------------------------------
    environment: Environment = Environment.DEVELOPMENT
    log_level: LogLevel = LogLevel.INFO
    http_host: str = "0.0.0.0"  # noqa: S104 - containers listen on all interfaces
    http_port: int = Field(default=8080, ge=1, le=65535)
    metrics_enabled: bool = True
    metrics_port: int = Field(default=9090, ge=0, le=65535)

    # --- data tier -------------------------------------------------------------
    database_url: str | None = None
    database_pool_size: int = Field(default=10, ge=1, le=200)
    redis_host: str | None = None
    redis_port: int = Field(default=6379, ge=1, le=65535)
    redis_cluster: bool = False
    redis_password: SecretStr | None = None
    redis_wait_replicas: int = Field(default=0, ge=0, le=16)
    """Replicas a budget write (reservation, settlement) must reach before the bidder
    relies on it: Redis `WAIT` in the same round trip as the script. Replication is
    asynchronous, so a failover otherwise loses writes the master already acknowledged
    and a budget could be overspent. 0 turns it off (a single Redis has no replica)."""
    redis_wait_timeout_ms: int = Field(default=5, ge=1, le=1_000)
    """How long `WAIT` waits for those replicas; a reservation they have not acknowledged
    by then counts as failed (no-bid), a settlement is answered 503 (retry)."""
    kafka_brokers: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # --- secrets ---------------------------------------------------------------
    admin_api_key: SecretStr | None = None
    internal_api_key: SecretStr | None = None
    tracking_secret: SecretStr | None = None

    # --- service wiring --------------------------------------------------------
    campaign_service_url: str = "http://127.0.0.1:8080"
    public_bidding_url: str = "http://127.0.0.1:8081"

    # --- bidding ---------------------------------------------------------------
    bid_timeout_ms: int = Field(default=100, ge=5, le=10_000)
    bid_safety_margin_ms: int = Field(default=10, ge=0, le=1_000)
    """The bidder answers no-bid this long before its deadline rather than late."""
    bid_reservation_timeout_seconds: int = Field(default=60, ge=1, le=86_400)
    """A budget reservation no win/billing notice settles within this is released."""
    bid_pacing_ahead_seconds: int = Field(default=900, ge=0, le=86_400)
    """Even pacing lets a campaign spend this far ahead of its straight daily line."""
    bid_currency_rates: Annotated[dict[str, float], NoDecode] = Field(default_factory=dict)
    """USD per unit of other currencies, `EUR=1.08,GBP=1.27`; a floor in a currency
    without a rate is a no-bid for that imp."""
    tracking_url_ttl_seconds: int = Field(default=86_400, ge=60, le=30 * 86_400)
    """How long the bidder's signed win/billing/impression/click URLs stay valid."""

    # --- analytics -------------------------------------------------------------
    analytics_minute_retention_days: int = Field(default=7, ge=1, le=3660)
    """Minute buckets older than this are rolled up into hourly ones."""
    analytics_dedup_retention_hours: int = Field(default=72, ge=1, le=87_600)
    """How long processed event ids are kept: a duplicate later than this counts twice."""
    analytics_batch_size: int = Field(default=20_000, ge=1, le=100_000)
    """Most events one analytics transaction writes."""
    analytics_consumer_group: str = Field(default="analytics", min_length=1, max_length=200)
    analytics_topic: str = Field(default="ad-events", min_length=1, max_length=249)
    """The topic analytics consumes (`ad-events`; another name isolates a test run)."""

    @field_validator("kafka_brokers", mode="before")
    @classmethod
    def _split_brokers(cls, value: object) -> object:
        if isinstance(value, str):
            return [broker.strip() for broker in value.split(",") if broker.strip()]
        return value

    @field_validator("bid_currency_rates", mode="before")
    @classmethod
    def _parse_rates(cls, value: object) -> object:
        """`EUR=1.08,GBP=1.27` (or JSON) into {"EUR": 1.08, "GBP": 1.27}.

        A rate must be a finite number > 0 (`1e400` parses as infinity, which would make
        every converted floor infinite), and USD cannot be given: it is always 1.0 (a
        `USD=` entry used to change USD floors but not USD bids)."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("{"):
                import json

                value = json.loads(text)
            else:
                pairs: dict[str, object] = {}
                for item in filter(None, (part.strip() for part in text.split(","))):
                    code, sep, rate = item.partition("=")
                    if not sep:
                        raise ValueError(f"currency rate {item!r} is not CODE=RATE")
                    pairs[code] = rate.strip()
                value = pairs
        if isinstance(value, dict):
            return {
                _currency_code(code): _currency_rate(code, rate) for code, rate in value.items()
            }
        return value

    @model_validator(mode="after")
    def _margin_below_timeout(self) -> Settings:
        """A margin as long as the timeout would make every bid request time out."""
        if self.bid_safety_margin_ms >= self.bid_timeout_ms:
            raise ValueError(
                f"BID_SAFETY_MARGIN_MS ({self.bid_safety_margin_ms}) must be below "
                f"BID_TIMEOUT_MS ({self.bid_timeout_ms})"
            )
        return self

    @property
    def is_production_like(self) -> bool:
        return self.environment in (Environment.STAGING, Environment.PRODUCTION)

    def require(self, *names: str, service: str) -> None:
        """Refuse to start `service` unless every named setting is configured."""
        missing = [name for name in names if not getattr(self, name)]
        if missing:
            env_names = ", ".join(name.upper() for name in missing)
            raise MissingSettingError(
                f"{service} needs {env_names} in production mode. Set "
                f"{'it' if len(missing) == 1 else 'them'} in the environment, or run "
                "`adplatform dev` for the embedded platform (SQLite, in-process cache and bus)."
            )


def _currency_code(code: object) -> str:
    text = str(code).strip().upper()
    if not text:
        raise ValueError("a currency rate has no currency code")
    if text == "USD":
        raise ValueError("USD cannot be given a rate: it is always 1.0 (remove the USD entry)")
    return text


def _currency_rate(code: object, rate: object) -> float:
    """USD per unit of `code`: a finite number above 0."""
    if isinstance(rate, str):
        try:
            rate = float(rate)
        except ValueError:
            raise ValueError(f"currency rate for {code} is not a number: {rate!r}") from None
    if isinstance(rate, bool) or not isinstance(rate, int | float):
        raise ValueError(f"currency rate for {code} is not a number: {rate!r}")
    try:
        value = float(rate)
    except OverflowError:  # a JSON integer of hundreds of digits
        value = math.inf
    if not math.isfinite(value):
        raise ValueError(f"currency rate for {code} must be a finite number, not {value}")
    if value <= 0:
        raise ValueError(f"currency rate for {code} must be a positive number, not {value}")
    return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()
