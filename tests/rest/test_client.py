"""The ``rest`` client over real HTTP: every paging style and every credential style against a
hand-written vendor (tests/rest/vendor.py), and the errors a vendor's answers become."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from system_apis.errors import BackendAuthFailed, BackendNotFound, BadBackendData
from system_apis.rest import paging
from system_apis.rest.client import RestClient
from system_apis.rest.config import RestBackendConfig
from tests.rest.vendor import PARCELS, SECRET, SEEN, serving, vendor_app

PARCEL_MODEL = {
    "fields": {
        "id": {"path": "ref", "required": True},
        "weight_kg": {"type": "number", "path": "kg"},
        "city": {"path": "meta.city"},
    }
}

STYLES: dict[str, dict[str, Any]] = {
    "cursor": {
        "path": "/cursor/parcels",
        "items_path": "results",
        "item_path": "/parcels/{id}",
        "record_path": "parcel",
        "paging": {"style": "cursor", "cursor_param": "after", "next_field": "paging.next"},
    },
    "page": {
        "path": "/page/parcels",
        "items_path": "data",
        "paging": {"style": "page", "has_more_field": "has_more"},
    },
    "offset": {"path": "/offset/parcels", "paging": {"style": "offset"}},
    "link": {"path": "/link/parcels", "paging": {"style": "link"}},
    "next_url": {
        "path": "/next/parcels",
        "items_path": "items",
        "paging": {"style": "next_url", "next_field": "links.next", "limit_param": None},
    },
}


def config(auth: dict[str, Any] | None = None, **resources: dict[str, Any]) -> RestBackendConfig:
    declared = {
        name: {"model": "Parcel", "id_pattern": "P-[0-9]{3}", **spec}
        for name, spec in resources.items()
    }
    return RestBackendConfig.model_validate(
        {
            "base_url": "http://unused.example",
            "auth": auth or {"kind": "none"},
            "retry": {"max_attempts": 2, "base_delay_s": 0.01},
            "resources": declared,
            "models": {"Parcel": PARCEL_MODEL},
        }
    )


async def started(cfg: RestBackendConfig, url: str) -> RestClient:
    client = RestClient(cfg, url, "parcels")
    await client.start()
    return client


@pytest.fixture
async def vendor() -> AsyncIterator[tuple[str, web.Application]]:
    app = vendor_app()
    async with serving(app) as url:
        yield url, app


async def walk(client: RestClient, resource: str, limit: int) -> list[list[str]]:
    """The ids of every page, following the cursors as a caller would (opaque, decoded)."""
    pages: list[list[str]] = []
    cursor: str | None = None
    numeric = client.resources[resource].numeric_cursor
    while True:
        page = await client.list_page(resource, paging.decode(cursor, numeric), limit)
        pages.append([item.id for item in page.items])  # type: ignore[attr-defined]
        if page.next_cursor is None:
            return pages
        assert len(pages) < 10, pages
        cursor = page.next_cursor


@pytest.mark.parametrize("style", sorted(STYLES))
async def test_every_paging_style_walks_every_record_once(
    vendor: tuple[str, web.Application], style: str
) -> None:
    url, _ = vendor
    client = await started(config(parcels=STYLES[style]), url)
    try:
        pages = await walk(client, "parcels", 4)
    finally:
        await client.close()
    assert [len(p) for p in pages] == [4, 4, 3]
    assert [i for p in pages for i in p] == [p["ref"] for p in PARCELS]


async def test_mapping_reads_renamed_and_nested_fields(vendor: tuple[str, web.Application]) -> None:
    url, _ = vendor
    client = await started(config(parcels=STYLES["cursor"]), url)
    try:
        page = await client.list_page("parcels", None, 2)
        one = await client.get_one("parcels", "P-003")
    finally:
        await client.close()
    assert page.items[0].model_dump() == {"id": "P-001", "weight_kg": 0.1, "city": "City 1"}
    assert one.model_dump() == {"id": "P-003", "weight_kg": 0.3, "city": "City 3"}


async def test_a_page_cursor_is_opaque_and_checked(vendor: tuple[str, web.Application]) -> None:
    url, _ = vendor
    client = await started(config(parcels=STYLES["page"]), url)
    try:
        page = await client.list_page("parcels", None, 4)
    finally:
        await client.close()
    assert page.next_cursor is not None and page.next_cursor != "2"
    assert paging.decode(page.next_cursor, numeric=True) == "2"
    for forged in ("x" * 600, "%00", paging.encode("2; DROP"), paging.encode("-1")):
        with pytest.raises(Exception) as err:
            paging.decode(forged, numeric=True)
        assert getattr(err.value, "status", None) == 400


async def test_a_next_url_to_another_host_is_never_followed(
    vendor: tuple[str, web.Application],
) -> None:
    url, app = vendor
    leaky = {**STYLES["next_url"], "path": "/leaky/parcels"}
    client = await started(config(parcels=leaky), url)
    try:
        with pytest.raises(BadBackendData) as err:
            await client.list_page("parcels", None, 4)
    finally:
        await client.close()
    assert "leaves the resource" in str(err.value)
    assert not any("attacker" in s["path"] for s in app[SEEN])


async def test_ids_outside_the_declared_syntax_never_reach_the_vendor(
    vendor: tuple[str, web.Application],
) -> None:
    url, app = vendor
    client = await started(config(parcels=STYLES["cursor"]), url)
    try:
        for bad in ("P-1", "../cursor/parcels", "P-001/x", "٣", "", ".."):
            with pytest.raises(BackendNotFound):
                await client.get_one("parcels", bad)
        assert app[SEEN] == []
        with pytest.raises(BackendNotFound):  # the vendor's own 404
            await client.get_one("parcels", "P-999")
    finally:
        await client.close()


async def test_a_record_that_does_not_fit_its_model_is_bad_data_naming_the_vendor_field(
    vendor: tuple[str, web.Application],
) -> None:
    url, _ = vendor
    spec = {**STYLES["cursor"], "item_path": "/parcels/{id}", "id_pattern": "[a-z]+"}
    client = await started(config(parcels=spec), url)
    try:
        with pytest.raises(BadBackendData) as err:
            await client.get_one("parcels", "broken")
    finally:
        await client.close()
    assert err.value.field == "kg"
    assert err.value.record == "broken"


AUTHS: dict[str, dict[str, Any]] = {
    "api_key": {"kind": "api_key", "header": "X-Key", "key": SECRET},
    "api_key_query": {"kind": "api_key_query", "param": "key", "key": SECRET},
    "bearer": {"kind": "bearer", "token": SECRET},
    "basic": {"kind": "basic", "username": "me", "password": SECRET},
    "oauth": {
        "kind": "oauth_client_credentials",
        "token_url": "/oauth/token",
        "client_id": "cid",
        "client_secret": SECRET,
    },
}


def wrong(auth: dict[str, Any]) -> dict[str, Any]:
    key = {"api_key": "key", "api_key_query": "key", "bearer": "token"}.get(auth["kind"])
    return {**auth, (key or ("password" if "password" in auth else "client_secret")): "nope"}


@pytest.mark.parametrize("style", sorted(AUTHS))
async def test_every_credential_style_is_sent_and_a_wrong_one_fails_as_auth(style: str) -> None:
    app = vendor_app(style)
    async with serving(app) as url:
        client = await started(config(AUTHS[style], parcels=STYLES["link"]), url)
        try:
            page = await client.list_page("parcels", None, 4)
            assert len(page.items) == 4
            # the next page's query string carries the key again (ours, not the vendor's link)
            nxt = paging.decode(page.next_cursor, numeric=False)
            assert nxt is not None and SECRET not in nxt  # a caller's cursor holds no credential
            assert len((await client.list_page("parcels", nxt, 4)).items) == 4
        finally:
            await client.close()
        bad = await started(config(wrong(AUTHS[style]), parcels=STYLES["link"]), url)
        try:
            with pytest.raises(BackendAuthFailed):
                await bad.list_page("parcels", None, 4)
        finally:
            await bad.close()
    if style == "api_key_query":
        assert all("key=s3cret" in s["path"] for s in app[SEEN][:2])
