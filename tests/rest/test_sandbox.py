"""The ``rest`` sandbox serves a fixture the way the declaration says the vendor answers, and
is never more lenient: the shipped carrier's contract, checked over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.settings import DEFAULT_CONFIG_DIR, load_settings
from system_apis.rest.config import RestBackendConfig
from system_apis.rest.sandbox import FixtureError, load_fixture
from system_apis.sandbox.server import make_backend_app
from tests.rest.vendor import serving

KEY = {"X-Parcelway-Key": "pw-sandbox-key"}


def shipping() -> RestBackendConfig:
    cfg = load_settings(DEFAULT_CONFIG_DIR).backends["shipping"]
    assert isinstance(cfg, RestBackendConfig)
    return cfg


@pytest.fixture(scope="module")
async def carrier() -> AsyncIterator[str]:
    async with serving(make_backend_app("shipping", config=shipping())) as url:
        yield url


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as r:
        return r.status, r.headers, await r.json()


async def test_every_call_needs_the_key_but_the_control_endpoints(carrier: str) -> None:
    assert (await get(f"{carrier}/v2/shipments"))[0] == 401
    assert (await get(f"{carrier}/v2/shipments", {"X-Parcelway-Key": "guess"}))[0] == 401
    assert (await get(f"{carrier}/__health"))[0] == 200


async def test_shipments_page_by_cursor_in_the_body(carrier: str) -> None:
    status, _, body = await get(f"{carrier}/v2/shipments?limit=5", KEY)
    assert status == 200
    assert [s["shipment_id"] for s in body["data"]] == [f"SHP-{n}" for n in range(100001, 100006)]
    cursor = body["pagination"]["next_cursor"]
    seen = len(body["data"])
    while cursor:
        status, _, body = await get(f"{carrier}/v2/shipments?starting_after={cursor}", KEY)
        assert status == 200
        seen += len(body["data"])
        cursor = body["pagination"]["next_cursor"]
    assert seen == 12


async def test_tracking_events_page_by_link_header(carrier: str) -> None:
    status, headers, body = await get(f"{carrier}/v2/tracking-events?per_page=7", KEY)
    assert status == 200 and isinstance(body, list) and len(body) == 7
    assert headers["Link"].endswith('page=2>; rel="next"')
    last = f"{carrier}/v2/tracking-events?per_page=7&page=3"
    status, headers, body = await get(last, KEY)
    assert status == 200 and len(body) == 5 and "Link" not in headers


async def test_filters_match_the_named_field(carrier: str) -> None:
    status, _, body = await get(f"{carrier}/v2/shipments?state=delivered&limit=50", KEY)
    assert status == 200 and {s["state"] for s in body["data"]} == {"delivered"}
    events = f"{carrier}/v2/tracking-events?shipment_id=SHP-100004"
    status, _, body = await get(events, KEY)
    assert status == 200 and len(body) == 4
    assert {e["shipment_id"] for e in body} == {"SHP-100004"}


async def test_one_record_and_an_unknown_one(carrier: str) -> None:
    status, _, body = await get(f"{carrier}/v2/shipments/SHP-100003", KEY)
    assert status == 200 and body["shipment"]["customer_reference"] == "ORD-2003"
    status, _, body = await get(f"{carrier}/v2/shipments/SHP-999999", KEY)
    assert status == 404 and body["error"] == "not_found"
    status, _, body = await get(f"{carrier}/v2/tracking-events/EVT-500001", KEY)
    assert status == 200 and body["status_code"] == "label_created"


@pytest.mark.parametrize(
    "query",
    [
        "limit=51",  # over the declared max_limit
        "limit=0",
        "limit=ten",
        "starting_after=SHP-100001",  # not a cursor it issued
        "colour=red",  # not a parameter it knows
    ],
)
async def test_the_sandbox_refuses_what_the_contract_does_not_allow(
    carrier: str, query: str
) -> None:
    status, _, body = await get(f"{carrier}/v2/shipments?{query}", KEY)
    assert status == 400, body


async def test_a_page_number_below_the_first_is_refused(carrier: str) -> None:
    assert (await get(f"{carrier}/v2/tracking-events?page=0", KEY))[0] == 400


def test_a_fixture_naming_an_undeclared_resource_is_refused(tmp_path: Path) -> None:
    fixture = tmp_path / "f.yaml"
    fixture.write_text("parcels: []\n")
    with pytest.raises(FixtureError, match="parcels: not a declared resource"):
        load_fixture(fixture, shipping())
    fixture.write_text("shipments: {SHP-1: {}}\n")
    with pytest.raises(FixtureError, match="must be a list of records"):
        load_fixture(fixture, shipping())


async def test_a_client_credentials_sandbox_issues_and_checks_tokens(tmp_path: Path) -> None:
    fixture = tmp_path / "f.json"
    fixture.write_text('{"things": [{"id": "T1"}]}')
    cfg = RestBackendConfig.model_validate(
        {
            "sandbox": True,
            "fixture": str(fixture),
            "auth": {
                "kind": "oauth_client_credentials",
                "token_url": "/oauth/token",
                "client_id": "c",
                "client_secret": "s",
            },
            "resources": {"things": {"path": "/things", "model": "T", "id_pattern": "T[0-9]"}},
            "models": {"T": {"fields": {"id": {"required": True}}}},
        }
    )
    async with serving(make_backend_app("things", connector="rest", config=cfg)) as url:
        assert (await get(f"{url}/things/T1", {"Authorization": "Bearer made-up"}))[0] == 401
        async with aiohttp.ClientSession() as s:
            form = {"grant_type": "client_credentials"}
            wrong = {"Authorization": aiohttp.encode_basic_auth("c", "guess")}
            async with s.post(f"{url}/oauth/token", data=form, headers=wrong) as r:
                assert r.status == 401
            right = {"Authorization": aiohttp.encode_basic_auth("c", "s")}
            async with s.post(f"{url}/oauth/token", data=form, headers=right) as r:
                token = (await r.json())["access_token"]
        status, _, body = await get(f"{url}/things/T1", {"Authorization": f"Bearer {token}"})
        assert status == 200 and body == {"id": "T1"}
