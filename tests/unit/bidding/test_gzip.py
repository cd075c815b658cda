"""Gzip-compressed bid requests (OpenRTB recommends bidders accept them): the size
limit holds for the decompressed body, corrupt gzip is a 400 and other encodings 415."""

from __future__ import annotations

import gzip
import os
from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest

from adplatform.bidding.routes import MAX_BID_BODY
from tests.unit.bidding.factories import (
    RunningBidder,
    SnapshotServer,
    bid_request,
    bidder_settings,
    bids_of,
    campaign,
    metric,
    running_bidder,
    snapshot,
)


@pytest.fixture
async def bidder() -> AsyncIterator[RunningBidder]:
    server = await SnapshotServer(snapshot([campaign(cpm=1_000_000)])).start()
    try:
        async with running_bidder(bidder_settings(server.url)) as running:
            yield running
    finally:
        await server.stop()


async def post(bidder: RunningBidder, body: bytes, encoding: str | None) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if encoding is not None:
        headers["content-encoding"] = encoding
    return await bidder.client.post("/openrtb2/bid", content=body, headers=headers)


def padded(size: int) -> bytes:
    """A valid bid request of exactly `size` bytes."""
    body = bid_request()
    head = msgspec.json.encode({**body, "pad": ""})
    return head[:-2] + b"x" * (size - len(head)) + b'"}'


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "GZIP", "identity, gzip"])
async def test_a_gzip_request_is_answered_like_a_plain_one(
    bidder: RunningBidder, encoding: str
) -> None:
    body = msgspec.json.encode(bid_request())
    response = await post(bidder, gzip.compress(body), encoding)
    assert response.status_code == 200, response.text
    assert len(bids_of(response)) == 1


async def test_the_size_limit_applies_to_the_decompressed_body(bidder: RunningBidder) -> None:
    at_limit = padded(MAX_BID_BODY)
    assert len(at_limit) == MAX_BID_BODY
    response = await post(bidder, gzip.compress(at_limit), "gzip")
    assert response.status_code == 200, response.text
    over = padded(MAX_BID_BODY + 1)
    response = await post(bidder, gzip.compress(over), "gzip")
    assert response.status_code == 413
    assert "decompressed" in response.json()["error"]["message"]


async def test_a_zip_bomb_is_a_413_without_inflating_it(bidder: RunningBidder) -> None:
    # 1 GB of zeros is about 1 MB of gzip; 100 MB is about 100 KB (under the limit).
    bomb = gzip.compress(b'{"id": "x", "pad": "' + b"0" * 100_000_000 + b'"}', 9)
    assert len(bomb) < MAX_BID_BODY
    before = metric("bid_requests_total", outcome="invalid")
    response = await post(bidder, bomb, "gzip")
    assert response.status_code == 413
    assert metric("bid_requests_total", outcome="invalid") == before + 1


@pytest.mark.parametrize(
    "body",
    [
        b"\x1f\x8b\x08\x00" + os.urandom(64),  # a gzip header, then garbage
        gzip.compress(msgspec.json.encode(bid_request()))[:-12],  # truncated
        b"\x1f\x8bnot gzip at all",
        b"",
    ],
    ids=["garbage", "truncated", "bad-header", "empty"],
)
async def test_corrupt_gzip_is_a_400_with_a_reason(bidder: RunningBidder, body: bytes) -> None:
    response = await post(bidder, body, "gzip")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_bid_request"
    assert "gzip" in error["message"] or "empty body" in error["message"]


@pytest.mark.parametrize("encoding", ["br", "deflate", "zstd", "gzip, br"])
async def test_other_encodings_are_a_415(bidder: RunningBidder, encoding: str) -> None:
    body = gzip.compress(msgspec.json.encode(bid_request()))
    response = await post(bidder, body, encoding)
    assert response.status_code == 415, response.text
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert encoding in response.json()["error"]["message"]
    assert response.headers["accept-encoding"] == "gzip"


async def test_identity_and_plain_json_need_no_decoding(bidder: RunningBidder) -> None:
    for encoding in (None, "identity", " Identity "):
        response = await post(bidder, msgspec.json.encode(bid_request()), encoding)
        assert response.status_code == 200, response.text
    # A body that is plain JSON is taken as it is, whatever the header says (a gzip
    # stream starts with 1f 8b, never with `{`): the common case scans no header.
    response = await post(bidder, msgspec.json.encode(bid_request()), "gzip")
    assert response.status_code == 200, response.text
