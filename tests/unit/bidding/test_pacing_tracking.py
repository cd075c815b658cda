"""Pacing limits and signed tracking URLs."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest

from adplatform.bidding.pacing import NO_LIMIT, daily_limit, utc_day
from adplatform.bidding.tracking import Tracker, TrackingData, TrackingError, clearing_micros

MIDNIGHT = 20_000 * 86_400.0


def test_asap_may_spend_the_whole_daily_budget_at_once() -> None:
    assert daily_limit(1_000_000, "asap", MIDNIGHT + 60, 900) == 1_000_000


def test_even_pacing_follows_the_day_with_a_lead() -> None:
    assert daily_limit(86_400_000, "even", MIDNIGHT, 0) == 0
    assert daily_limit(86_400_000, "even", MIDNIGHT + 6 * 3600, 0) == 21_600_000
    assert daily_limit(86_400_000, "even", MIDNIGHT + 6 * 3600, 900) == 22_500_000
    assert daily_limit(86_400_000, "even", MIDNIGHT + 86_000, 900) == 86_400_000


def test_no_daily_budget_means_no_daily_limit() -> None:
    assert daily_limit(0, "even", MIDNIGHT, 900) == NO_LIMIT
    assert utc_day(MIDNIGHT + 86_399) == 20_000


def data(**overrides: object) -> TrackingData:
    values: dict[str, object] = {
        "a": "auction",
        "i": "1",
        "c": 5,
        "v": 2,
        "r": 9,
        "b": 2500,
        "p": 2.5,
        "u": "USD",
        "d": 20_000,
        "x": int(time.time()) + 60,
        **overrides,
    }
    return TrackingData(**values)  # type: ignore[arg-type]


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


tracker = Tracker(b"secret", "https://bid.example/", 3600)


def test_urls_verify_and_carry_their_data() -> None:
    urls = tracker.bid_urls(data(), tracker.landing_params(9, "https://brand.example/x?a=1"))
    assert urls.nurl.startswith("https://bid.example/t/win?")
    assert "${AUCTION_PRICE}" in urls.nurl
    for url in (urls.nurl, urls.burl, urls.lurl, urls.impression, urls.click):
        params = query(url)
        assert tracker.verify(params["d"], params["s"], time.time(), shown=True) == data()
    for url in (urls.nurl, urls.burl, urls.lurl):
        params = query(url)
        assert tracker.verify(params["d"], params["s"], time.time()) == data()
    click = query(urls.click)
    landing = tracker.verify_landing(data(), click["u"], click["k"])
    assert landing == "https://brand.example/x?a=1"


def test_the_markups_urls_do_not_sign_the_exchanges_notices() -> None:
    """The pixel and click sit on the publisher's page: their signature must not be
    good for a win, billing or loss notice (`shown=False`)."""
    urls = tracker.bid_urls(data(), tracker.landing_params(9, "https://a.example"))
    for url in (urls.impression, urls.click):
        params = query(url)
        assert params["s"] != query(urls.nurl)["s"]
        with pytest.raises(TrackingError) as caught:
            tracker.verify(params["d"], params["s"], time.time())
        assert caught.value.status == 403


@pytest.mark.parametrize("shown", [False, True])
@pytest.mark.parametrize("mutate", ["payload", "signature", "secret"])
def test_forged_or_altered_urls_are_refused(mutate: str, shown: bool) -> None:
    urls = tracker.bid_urls(data(), "")
    params = query(urls.impression if shown else urls.lurl)
    payload, signature = params["d"], params["s"]
    checker = tracker
    if mutate == "payload":
        payload = query(tracker.bid_urls(data(b=99_999), "").lurl)["d"]
    elif mutate == "signature":
        signature = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    else:
        checker = Tracker(b"other", "https://bid.example", 3600)
    with pytest.raises(TrackingError) as caught:
        checker.verify(payload, signature, time.time(), shown=shown)
    assert caught.value.status == 403


def test_expired_and_malformed_urls() -> None:
    urls = tracker.bid_urls(data(x=int(time.time()) - 1), "")
    for url, shown in ((urls.impression, True), (urls.nurl, False)):
        params = query(url)
        with pytest.raises(TrackingError) as caught:
            tracker.verify(params["d"], params["s"], time.time(), shown=shown)
        assert caught.value.status == 410
    with pytest.raises(TrackingError) as caught:
        tracker.verify(None, "x", time.time())
    assert caught.value.status == 400


def test_landing_page_is_bound_to_its_creative() -> None:
    click = query(tracker.bid_urls(data(), tracker.landing_params(9, "https://a.example")).click)
    with pytest.raises(TrackingError) as caught:
        tracker.verify_landing(data(r=10), click["u"], click["k"])
    assert caught.value.status == 403
    evil = query("?" + tracker.landing_params(9, "javascript:alert(1)")[1:])
    with pytest.raises(TrackingError) as caught:
        tracker.verify_landing(data(), evil["u"], evil["k"])
    assert caught.value.status == 400


def test_clearing_price_rules() -> None:
    bid = data(b=2500, p=2.5)
    assert clearing_micros(bid, "1.25") == 1250
    assert clearing_micros(bid, "2.5") == 2500
    assert clearing_micros(bid, None) == 2500
    assert clearing_micros(bid, "${AUCTION_PRICE}") == 2500
    assert clearing_micros(data(b=2500, p=2.0, u="EUR"), "1.0") == 1250
    for bad, code in [
        ("2.6", "price_above_bid"),
        ("-1", "bad_price"),
        ("x", "bad_price"),
        ("nan", "bad_price"),
        ("inf", "bad_price"),
    ]:
        with pytest.raises(TrackingError) as caught:
            clearing_micros(bid, bad)
        assert caught.value.code == code
