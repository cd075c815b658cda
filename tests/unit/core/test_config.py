from __future__ import annotations

import pytest
from pydantic import ValidationError

from adplatform.core.config import Environment, MissingSettingError, Settings


def test_defaults_mean_embedded_adapters() -> None:
    settings = Settings(_env_file=None)
    assert settings.database_url is None
    assert settings.redis_host is None
    assert settings.kafka_brokers == []
    assert settings.bid_timeout_ms == 100
    assert settings.metrics_port == 9090


def test_reads_environment_names_the_chart_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db:5432/ads")
    monkeypatch.setenv("KAFKA_BROKERS", "k1:9092, k2:9092,,")
    monkeypatch.setenv("REDIS_CLUSTER", "true")
    monkeypatch.setenv("BID_TIMEOUT_MS", "80")
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("TRACKING_SECRET", "s3cret")
    settings = Settings()
    assert settings.database_url == "postgresql://u:p@db:5432/ads"
    assert settings.kafka_brokers == ["k1:9092", "k2:9092"]
    assert settings.redis_cluster is True
    assert settings.bid_timeout_ms == 80
    assert settings.environment is Environment.PRODUCTION
    assert settings.is_production_like
    assert settings.tracking_secret is not None
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value"),
    [("BID_TIMEOUT_MS", "0"), ("HTTP_PORT", "70000"), ("LOG_LEVEL", "LOUD"), ("ENVIRONMENT", "x")],
)
def test_rejects_invalid_values(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert name.lower() in str(info.value)


def test_require_names_every_missing_variable() -> None:
    settings = Settings(database_url="sqlite:///x.db")
    with pytest.raises(MissingSettingError) as info:
        settings.require("database_url", "redis_host", "kafka_brokers", service="bidding")
    message = str(info.value)
    assert "REDIS_HOST" in message
    assert "KAFKA_BROKERS" in message
    assert "DATABASE_URL" not in message
    assert "adplatform dev" in message
    settings.require("database_url", service="campaigns")


def test_currency_rates_parse_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BID_CURRENCY_RATES", " eur=1.08, GBP = 1.27 ,")
    assert Settings().bid_currency_rates == {"EUR": 1.08, "GBP": 1.27}
    monkeypatch.setenv("BID_CURRENCY_RATES", '{"jpy": 0.0067}')
    assert Settings().bid_currency_rates == {"JPY": 0.0067}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("EUR=1e400", "finite"),  # parses as infinity: every converted floor infinite
        ('{"EUR": 1' + "0" * 400 + "}", "finite"),
        ("EUR=nan", "finite"),
        ("EUR=inf", "finite"),
        ('{"EUR": 1e400}', "finite"),
        ("EUR=0", "positive"),
        ("EUR=-1.08", "positive"),
        ("EUR=", "number"),
        ("EUR=abc", "number"),
        ('{"EUR": true}', "number"),
        ("EUR", "CODE=RATE"),
        ("=1.08", "currency code"),
        ("USD=1.1", "USD"),  # USD is always 1.0
        ("usd=1.0", "USD"),
        ('{"USD": 1.0}', "USD"),
    ],
)
def test_invalid_currency_rates_are_refused_at_startup(
    monkeypatch: pytest.MonkeyPatch, value: str, reason: str
) -> None:
    monkeypatch.setenv("BID_CURRENCY_RATES", value)
    with pytest.raises(ValidationError) as info:
        Settings()
    message = str(info.value)
    assert "bid_currency_rates" in message
    assert reason in message
