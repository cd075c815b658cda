"""Cursor pagination: ordered by id, stable while rows are inserted, with filters."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.campaigns.support import Service, creative_body

pytestmark = pytest.mark.integration


async def _all_pages(service: Service, limit: int, **params: Any) -> list[list[int]]:
    pages: list[list[int]] = []
    cursor = None
    while True:
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        response = await service.client.get("/campaigns", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([item["id"] for item in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


async def test_pages_cover_everything_once_in_order(service: Service) -> None:
    advertiser_id = await service.advertiser()
    ids = [(await service.campaign(advertiser_id, f"C{i}"))["id"] for i in range(23)]
    pages = await _all_pages(service, 10)
    assert [len(page) for page in pages] == [10, 10, 3]
    assert [i for page in pages for i in page] == ids
    exact = await _all_pages(service, 23)
    assert exact == [ids]  # no empty trailing page when the last page is full


async def test_pagination_is_stable_across_inserts(service: Service) -> None:
    advertiser_id = await service.advertiser()
    before = [(await service.campaign(advertiser_id, f"Old {i}"))["id"] for i in range(12)]
    first = (await service.client.get("/campaigns", params={"limit": 5})).json()
    seen = [item["id"] for item in first["items"]]
    added = [(await service.campaign(advertiser_id, f"New {i}"))["id"] for i in range(4)]
    cursor = first["next_cursor"]
    while cursor:
        page = (
            await service.client.get("/campaigns", params={"limit": 5, "cursor": cursor})
        ).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if len(seen) == 10:  # more inserts in the middle of paging
            added += [(await service.campaign(advertiser_id, f"Newer {i}"))["id"] for i in range(2)]
    assert len(seen) == len(set(seen))  # nothing twice
    assert seen == before + added  # nothing skipped, new rows at the end


async def test_filters_and_paging_compose(service: Service) -> None:
    first, second = await service.advertiser("A"), await service.advertiser("B")
    active_a = [
        (await service.campaign(first, f"A{i}", status="active", creatives=[creative_body()]))["id"]
        for i in range(7)
    ]
    draft_a = [(await service.campaign(first, f"A-draft{i}"))["id"] for i in range(3)]
    active_b = [
        (await service.campaign(second, f"B{i}", status="active", creatives=[creative_body()]))[
            "id"
        ]
        for i in range(4)
    ]
    by_status = await _all_pages(service, 3, status="active")
    assert [i for page in by_status for i in page] == active_a + active_b
    by_both = await _all_pages(service, 3, status="active", advertiser_id=first)
    assert [i for page in by_both for i in page] == active_a
    drafts = await _all_pages(service, 50, status="draft", advertiser_id=first)
    assert drafts == [draft_a]
    assert await _all_pages(service, 50, advertiser_id=999) == [[]]


async def test_creatives_and_advertisers_page_too(service: Service) -> None:
    advertiser_ids = [await service.advertiser(f"Adv {i}") for i in range(5)]
    page = (await service.client.get("/advertisers", params={"limit": 3})).json()
    rest = (
        await service.client.get("/advertisers", params={"limit": 3, "cursor": page["next_cursor"]})
    ).json()
    assert [a["id"] for a in page["items"] + rest["items"]] == advertiser_ids
    assert rest["next_cursor"] is None

    campaign = await service.campaign(advertiser_ids[0], creatives=[creative_body()] * 5)
    url = f"/campaigns/{campaign['id']}/creatives"
    one = (await service.client.get(url, params={"limit": 2})).json()
    two = (await service.client.get(url, params={"limit": 2, "cursor": one["next_cursor"]})).json()
    three = (
        await service.client.get(url, params={"limit": 2, "cursor": two["next_cursor"]})
    ).json()
    ids = [c["id"] for c in one["items"] + two["items"] + three["items"]]
    assert len(ids) == len(set(ids)) == 5
    assert ids == sorted(ids)
    assert three["next_cursor"] is None
