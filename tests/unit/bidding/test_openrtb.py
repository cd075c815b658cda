"""OpenRTB 2.6 decoding: tolerant of what the spec says to tolerate, precise about errors."""

from __future__ import annotations

import contextlib
import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adplatform.bidding.openrtb import InvalidBidRequest, decode_bid_request


def body(value: object) -> bytes:
    return json.dumps(value).encode()


MINIMAL = {"id": "a1", "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}]}


def test_minimal_request_decodes_with_defaults() -> None:
    request = decode_bid_request(body(MINIMAL))
    assert request.id == "a1"
    assert request.imp[0].bidfloor == 0.0
    assert request.imp[0].bidfloorcur == "USD"
    assert request.at == 2
    assert request.site is None
    assert request.device is None
    assert request.user is None


def test_unknown_fields_extensions_and_enum_values_are_tolerated() -> None:
    request = decode_bid_request(
        body(
            {
                **MINIMAL,
                "imp": [
                    {
                        "id": "1",
                        "banner": {"w": 300, "h": 250, "btype": [99], "vcm": 1, "ext": {"x": 1}},
                        "video": {"mimes": ["video/mp4"]},
                        "ext": {"gpid": "/slot", "prebid": {"deep": [1, 2, {"a": None}]}},
                    }
                ],
                "device": {"devicetype": 42, "os": "FutureOS", "sua": {"brands": []}},
                "regs": {"gdpr": 1, "ext": {"dsa": {"required": 2}}},
                "dooh": {"id": "screen"},
                "ext": {"anything": ["goes"]},
                "wlang": ["en"],
            }
        )
    )
    assert request.device is not None
    assert request.device.devicetype == 42
    assert request.regs is not None
    assert request.regs.gdpr == 1


def test_integer_floor_is_a_float() -> None:
    request = decode_bid_request(body({**MINIMAL, "imp": [{**MINIMAL["imp"][0], "bidfloor": 2}]}))  # type: ignore[dict-item]
    assert request.imp[0].bidfloor == 2.0


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "empty body"),
        (b"{not json", "malformed JSON"),
        (b"[]", "Expected `object`"),
        (body({"imp": MINIMAL["imp"]}), "missing required field `id`"),
        (body({"id": "a"}), "missing required field `imp`"),
        (body({"id": "a", "imp": []}), "`imp` is empty"),
        (body({"id": "", "imp": MINIMAL["imp"]}), "`id` is empty"),
        (body({"id": 7, "imp": MINIMAL["imp"]}), "Expected `str`, got `int` - at `$.id`"),
        (body({"id": "a", "imp": [{"id": "1"}]}), "has no banner"),
        (body({"id": "a", "imp": [{"id": "1", "banner": {"w": "300"}}]}), "$.imp[0].banner.w"),
        (
            body({"id": "a", "imp": [{"id": "1", "banner": {}}, {"id": "1", "banner": {}}]}),
            "is not unique",
        ),
        (body({"id": "a", "imp": [{"id": "1", "banner": {}, "bidfloor": -1}]}), "bidfloor"),
        (body({"id": "x" * 300, "imp": MINIMAL["imp"]}), "longer than"),
        (body({**MINIMAL, "device": "phone"}), "$.device"),
        (body({**MINIMAL, "tmax": "fast"}), "$.tmax"),
    ],
)
def test_invalid_requests_name_the_reason(value: bytes, reason: str) -> None:
    with pytest.raises(InvalidBidRequest) as caught:
        decode_bid_request(value)
    assert reason in str(caught.value)


def test_lone_surrogates_in_ids_are_invalid_not_a_crash() -> None:
    raw = b'{"id": "\\ud800", "imp": [{"id": "1", "banner": {}}]}'
    try:
        request = decode_bid_request(raw)
    except InvalidBidRequest:
        return
    request.id.encode()  # if it decoded, it must be encodable


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_decodes_or_is_invalid(value: object) -> None:
    with contextlib.suppress(InvalidBidRequest):
        decode_bid_request(msgspec.json.encode(value))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_are_invalid(value: bytes) -> None:
    with contextlib.suppress(InvalidBidRequest):
        decode_bid_request(value)
