"""The chart's service settings follow `core.config.Settings`: same defaults, same bounds.

test_policy checks the names (every variable a Deployment sets is a Settings field and
every field is set by the chart); this checks what the names carry, so a default or a
limit changed in the code shows up here instead of being overridden by an old chart
value or refused (or let through) by an old schema bound.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from annotated_types import Ge, Le, MaxLen, MinLen

from adplatform.core.config import Settings
from tests.chart.conftest import CHART

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
SETTINGS_SCHEMA: dict[str, Any] = SCHEMA["$defs"]["settings"]["properties"]
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
# A chart value that deliberately differs from the code's default, and why.
DERIVED = {"PUBLIC_BIDDING_URL": "empty renders https://bidding.<domain> (the chart's routing)"}
JSON_TYPES = {int: "integer", str: "string", bool: "boolean", dict: "string"}


def chart_settings() -> list[tuple[str, str, Any]]:
    """(file, service, key, value) of every services.<name>.settings entry of every values file."""
    found = []
    for name in ("values.yaml", "values-staging.yaml", "values-production.yaml"):
        values = yaml.safe_load((CHART / name).read_text()) or {}
        for service, spec in (values.get("services") or {}).items():
            for key, value in ((spec or {}).get("settings") or {}).items():
                found.append((f"{name}:{service}", key, value))
    return found


def test_every_service_setting_is_in_the_schema_and_the_code() -> None:
    keys = {key for _, key, _ in chart_settings()}
    assert keys, "no services.<name>.settings in the values files"
    assert keys <= set(SETTINGS_SCHEMA), sorted(keys - set(SETTINGS_SCHEMA))
    fields = {name.upper() for name in Settings.model_fields}
    assert set(SETTINGS_SCHEMA) <= fields, sorted(set(SETTINGS_SCHEMA) - fields)


def test_derived_exceptions_are_real() -> None:
    """Each listed exception is a setting the chart has and renders from something else."""
    keys = {key for _, key, _ in chart_settings()}
    assert set(DERIVED) <= keys, sorted(set(DERIVED) - keys)


@pytest.mark.parametrize(("where", "key", "value"), chart_settings())
def test_chart_value_parses_as_the_code_reads_it(
    where: str, key: str, value: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rendered string (the Deployment's env value) is a valid setting."""
    monkeypatch.setenv(key, str(value).lower() if isinstance(value, bool) else str(value))
    Settings()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (key, value)
        for where, key, value in chart_settings()
        if where.startswith("values.yaml") and key not in DERIVED
    ],
)
def test_default_values_are_the_code_defaults(
    key: str, value: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """values.yaml documents the code's defaults rather than overriding them by accident
    (staging and production files may override on purpose)."""
    field = Settings.model_fields[key.lower()]
    monkeypatch.setenv(key, str(value))
    assert getattr(Settings(), key.lower()) == field.get_default(call_default_factory=True), (
        f"values.yaml {key}={value!r} differs from core.config's default; take the code's "
        "default (or, if the chart must differ, add it to DERIVED with the reason)"
    )


@pytest.mark.parametrize("key", sorted(SETTINGS_SCHEMA))
def test_schema_bounds_are_the_code_bounds(key: str) -> None:
    field = Settings.model_fields[key.lower()]
    schema = SETTINGS_SCHEMA[key]
    base = field.annotation if isinstance(field.annotation, type) else None
    origin = getattr(field.annotation, "__origin__", None)
    expected_type = JSON_TYPES.get(base or origin)  # type: ignore[arg-type]
    assert schema["type"] == expected_type, f"{key}: {schema['type']} vs {field.annotation}"
    meta = {type(item): item for item in field.metadata}
    pairs: list[tuple[str, type, str]] = [
        ("minimum", Ge, "ge"),
        ("maximum", Le, "le"),
        ("minLength", MinLen, "min_length"),
        ("maxLength", MaxLen, "max_length"),
    ]
    for keyword, kind, attr in pairs:
        if kind in meta:
            bound = getattr(meta[kind], attr)
            if keyword in schema:
                assert schema[keyword] == bound, (
                    f"{key}: schema {keyword} {schema[keyword]}, code {bound}"
                )
            else:  # a string bound may live in the pattern's repetition instead
                missing = f"{key}: the code bounds it ({attr}={bound}); the schema does not"
                assert keyword.endswith("Length"), missing
                assert "pattern" in schema, missing
                low, high = schema["pattern"].rsplit("{", 1)[1].split("}")[0].split(",")
                assert int(low if keyword == "minLength" else high) == bound, (
                    f"{key}: pattern {schema['pattern']} vs {attr}={bound}"
                )
        else:
            assert keyword not in schema, f"{key}: schema has {keyword}, the code has no bound"
