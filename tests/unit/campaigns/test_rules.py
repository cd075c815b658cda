"""The campaign rules on their own: lifecycle, budgets, flights, targeting values."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from adplatform.campaigns import rules
from adplatform.campaigns.rules import (
    CampaignStatus,
    CreativeStatus,
    IllegalTransition,
    InvalidResource,
    NotReady,
    ReadOnly,
)

S = CampaignStatus
ALLOWED_CAMPAIGN_MOVES = {
    (S.DRAFT, S.ACTIVE),
    (S.DRAFT, S.ARCHIVED),
    (S.ACTIVE, S.PAUSED),
    (S.ACTIVE, S.COMPLETED),
    (S.ACTIVE, S.ARCHIVED),
    (S.PAUSED, S.ACTIVE),
    (S.PAUSED, S.COMPLETED),
    (S.PAUSED, S.ARCHIVED),
    (S.COMPLETED, S.ARCHIVED),
}


@pytest.mark.parametrize("current", list(S))
@pytest.mark.parametrize("target", list(S))
def test_every_campaign_transition(current: CampaignStatus, target: CampaignStatus) -> None:
    if current == target:
        assert rules.check_campaign_transition(current, target) is False  # a no-op
    elif (current, target) in ALLOWED_CAMPAIGN_MOVES:
        assert rules.check_campaign_transition(current, target) is True
    else:
        with pytest.raises(IllegalTransition) as caught:
            rules.check_campaign_transition(current, target)
        assert caught.value.status_code == 409
        assert caught.value.details["field"] == "status"
        assert caught.value.details["from"] == current


def test_lifecycle_walk_draft_active_paused_active_completed_archived() -> None:
    path = [S.DRAFT, S.ACTIVE, S.PAUSED, S.ACTIVE, S.COMPLETED, S.ARCHIVED]
    for current, target in itertools.pairwise(path):
        assert rules.check_campaign_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [(S.COMPLETED, S.ACTIVE), (S.ARCHIVED, S.ACTIVE), (S.ARCHIVED, S.DRAFT), (S.ACTIVE, S.DRAFT)],
)
def test_illegal_transitions_are_conflicts(current: CampaignStatus, target: CampaignStatus) -> None:
    with pytest.raises(IllegalTransition):
        rules.check_campaign_transition(current, target)


def test_creative_transitions() -> None:
    C = CreativeStatus
    assert rules.check_creative_transition(C.ACTIVE, C.PAUSED)
    assert rules.check_creative_transition(C.PAUSED, C.ACTIVE)
    assert rules.check_creative_transition(C.PAUSED, C.ARCHIVED)
    assert not rules.check_creative_transition(C.ARCHIVED, C.ARCHIVED)
    with pytest.raises(IllegalTransition):
        rules.check_creative_transition(C.ARCHIVED, C.ACTIVE)


@pytest.mark.parametrize("status", [S.COMPLETED, S.ARCHIVED])
def test_finished_campaigns_are_read_only(status: CampaignStatus) -> None:
    with pytest.raises(ReadOnly):
        rules.check_campaign_editable(status)


@pytest.mark.parametrize("status", [S.DRAFT, S.ACTIVE, S.PAUSED])
def test_live_campaigns_are_editable(status: CampaignStatus) -> None:
    rules.check_campaign_editable(status)


def test_activation_needs_a_creative_and_a_flight_not_over() -> None:
    now = datetime(2027, 1, 1, tzinfo=UTC)
    with pytest.raises(NotReady) as caught:
        rules.check_activation(active_creatives=0, flight_end=None, now=now)
    assert caught.value.details == {"field": "creatives"}
    with pytest.raises(NotReady) as caught:
        rules.check_activation(active_creatives=1, flight_end=now - timedelta(seconds=1), now=now)
    assert caught.value.details == {"field": "flight_end"}
    rules.check_activation(active_creatives=1, flight_end=now + timedelta(days=1), now=now)
    rules.check_activation(active_creatives=2, flight_end=None, now=now)


# ----------------------------------------------------------------------- budgets


def _budget(total: int, daily: int, bid: int) -> list[str]:
    return [
        v.field
        for v in rules.budget_violations(
            total_budget_micros=total, daily_budget_micros=daily, max_bid_cpm_micros=bid
        )
    ]


def test_budget_rules() -> None:
    assert _budget(1_000_000_000, 100_000_000, 2_000_000) == []
    assert _budget(1_000_000_000, 1_000_000_000, 2_000_000) == []  # daily == total is fine
    assert _budget(100_000_000, 100_000_001, 2_000_000) == ["daily_budget_micros"]
    # a $1 daily budget cannot buy one impression at a $2,000 CPM ($2 each)
    assert _budget(10_000_000, 1_000_000, 2_000_000_000) == ["max_bid_cpm_micros"]
    assert _budget(10_000_000, 1_000_000, 1_000_000_000) == []  # exactly one impression


def test_invalid_resource_names_every_field() -> None:
    violations = rules.budget_violations(
        total_budget_micros=1, daily_budget_micros=2, max_bid_cpm_micros=10**9
    )
    error = InvalidResource(violations)
    assert error.status_code == 422
    assert [d["field"] for d in error.details] == ["daily_budget_micros", "max_bid_cpm_micros"]
    assert error.message.startswith("daily_budget_micros:")


# ----------------------------------------------------------------------- flights


def test_flight_rules() -> None:
    start = datetime(2027, 1, 1, tzinfo=UTC)
    assert rules.flight_violations(start, start + timedelta(days=30)) == []
    assert rules.flight_violations(None, start) == []
    assert rules.flight_violations(start, None) == []
    assert [v.type for v in rules.flight_violations(start, start)] == ["flight.order"]
    assert [v.field for v in rules.flight_violations(start, start - timedelta(hours=1))] == [
        "flight_end"
    ]
    assert [v.type for v in rules.flight_violations(start, start + timedelta(days=4000))] == [
        "flight.length"
    ]


def test_flight_times_are_utc_and_bounded() -> None:
    berlin = datetime.fromisoformat("2027-06-01T12:00:00+02:00")
    assert rules.utc(berlin) == datetime(2027, 6, 1, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="between"):
        rules.utc(datetime(1970, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="between"):
        rules.utc(datetime(9999, 1, 1, tzinfo=UTC))
    # found by schemathesis: converting these to UTC overflows the calendar
    for edge in ("0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"):
        with pytest.raises(ValueError, match="between"):
            rules.utc(datetime.fromisoformat(edge))


# --------------------------------------------------------------------- targeting


def test_countries_are_iso_alpha3() -> None:
    assert rules.country_code("usa") == "USA"
    assert rules.country_code("DEU") == "DEU"
    for bad in ("US", "XXX", "GERMANY", "", "ZZZ"):
        with pytest.raises(ValueError, match="ISO-3166"):
            rules.country_code(bad)


def test_device_types_are_openrtb_codes() -> None:
    assert [rules.device_type(code) for code in range(1, 8)] == list(range(1, 8))
    for bad in (0, 8, -1, 99):
        with pytest.raises(ValueError, match="device type"):
            rules.device_type(bad)


def test_categories_are_iab_taxonomy_codes() -> None:
    assert rules.iab_category("iab1") == "IAB1"
    assert rules.iab_category("IAB7-45") == "IAB7-45"
    assert rules.iab_category("IAB26-4") == "IAB26-4"
    for bad in ("IAB27", "IAB7-46", "IAB24-1", "IAB0", "sports", "IAB1-0"):
        with pytest.raises(ValueError, match="IAB"):
            rules.iab_category(bad)


def test_operating_systems() -> None:
    assert rules.operating_system("iOS") == "ios"
    with pytest.raises(ValueError, match="operating system"):
        rules.operating_system("beos")


def test_domains_are_normalised_and_checked() -> None:
    assert rules.domain_name("WWW.Example.COM.") == "example.com"
    assert rules.domain_name("news.example.co.uk") == "news.example.co.uk"
    for bad in ("localhost", "-bad.com", "a..b", "exa mple.com", "1.2.3.4", "x" * 64 + ".com"):
        with pytest.raises(ValueError, match="domain"):
            rules.domain_name(bad)


def test_banner_sizes() -> None:
    assert rules.banner_size("300X250") == "300x250"
    for bad in ("300", "0x250", "300x", "x250", "300x250x1", "20000x10"):
        with pytest.raises(ValueError, match=r"300x250|at most"):
            rules.banner_size(bad)


def test_hours_and_time_zones() -> None:
    assert rules.hour_of_day(0) == 0
    assert rules.hour_of_day(23) == 23
    with pytest.raises(ValueError, match="hour of day"):
        rules.hour_of_day(24)
    assert rules.timezone_name("Europe/Berlin") == "Europe/Berlin"
    for bad in ("Mars/Olympus", "", "../../etc/passwd", "UTC+25"):
        with pytest.raises(ValueError, match="IANA"):
            rules.timezone_name(bad)


def test_domains_may_not_be_both_allowed_and_blocked() -> None:
    found = rules.targeting_violations(
        {"domains_allow": ["a.com", "b.com"], "domains_block": ["b.com"]}
    )
    assert [v.field for v in found] == ["targeting.domains_block"]
    assert "b.com" in found[0].message
    assert rules.targeting_violations({"domains_allow": ["a.com"], "domains_block": []}) == []


def test_urls() -> None:
    assert rules.http_url("https://example.com/x?a=1") == "https://example.com/x?a=1"
    for bad in ("ftp://example.com", "javascript:alert(1)", "https://", "http://a b", "x" * 3000):
        with pytest.raises(ValueError, match=r"URL|characters|spaces"):
            rules.http_url(bad)


def test_creative_needs_exactly_one_of_markup_or_image() -> None:
    assert rules.creative_violations(markup="<b>x</b>", image_url=None) == []
    assert rules.creative_violations(markup=None, image_url="https://x.com/a.png") == []
    assert [v.field for v in rules.creative_violations(markup=None, image_url=None)] == ["markup"]
    assert rules.creative_violations(markup="<b/>", image_url="https://x.com/a.png")


def test_names() -> None:
    assert rules.clean_name("  Spring  ") == "Spring"
    for bad in ("   ", "a\x00b", "x" * 201):
        with pytest.raises(ValueError, match=r"blank|control|at most"):
            rules.clean_name(bad)
