"""Request bodies are read one way everywhere: JSON media type only, no duplicate keys, no
type coercion. Every write route is walked from the app, so a new one is covered on its day;
"nothing written" is checked in the sandbox backends themselves."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.app import create_app
from gateway.openapi import iter_sites
from system_apis.config import BACKEND_NAMES
from system_apis.sandbox import seed
from tests.conftest import SandboxThread
from tests.gateway.helpers import test_settings, token
from tests.servers import serve

WRITES = {"post", "put", "patch"}
PEOPLE = seed.people()
STOCKED = [s.sku for s in seed.skus() if s.on_hand >= 150]


@dataclass
class Gateway:
    url: str
    bearer: str
    sites: list[tuple[str, str]]  # (path with ids filled, method)


@pytest.fixture(scope="module")
async def gateway(
    sandbox: SandboxThread, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    settings = test_settings(sandbox.base_port, tmp_path_factory.mktemp("security-json"))
    app = create_app(settings)
    sites = [
        (re.sub(r"\{[^}]+\}", "1", site.path), site.method)
        for site in iter_sites(app.routes)
        if site.method in WRITES
        and site.spec is not None
        and site.spec.request is not None
        and not site.path.startswith(("/oauth/", "/webhooks/"))
    ]
    async with serve(app) as url:
        yield Gateway(url, await token(url, "test-everything"), sites)


async def call(gw: Gateway, method: str, path: str, body: bytes, ctype: str | None) -> Any:
    headers = {"Authorization": f"Bearer {gw.bearer}", "Idempotency-Key": uuid.uuid4().hex}
    if ctype is not None:
        headers["Content-Type"] = ctype
    async with (
        aiohttp.ClientSession(skip_auto_headers={"Content-Type"}) as s,
        s.request(method.upper(), gw.url + path, data=body, headers=headers) as r,
    ):
        raw = await r.read()
        parsed = orjson.loads(raw) if raw else None
        if r.status >= 400:
            assert r.headers["Content-Type"].startswith("application/problem+json"), raw
        return r.status, parsed


async def writes_seen(sandbox: SandboxThread) -> dict[str, int]:
    seen = {}
    for name in BACKEND_NAMES:
        hits = await sandbox.hits(name)
        seen[name] = sum(
            n for k, n in hits.items() if k.split(" ")[0] in {"POST", "PUT", "PATCH", "DELETE"}
        )
    return seen


async def test_only_json_media_types_are_read(
    gateway: Gateway, clean_sandbox: SandboxThread
) -> None:
    assert len(gateway.sites) >= 15
    for path, method in gateway.sites:
        for ctype in ("text/plain", None, "application/x-json-ish", "multipart/form-data"):
            status, body = await call(gateway, method, path, b"{}", ctype)
            assert status == 415, (method, path, ctype, status, body)
        for ctype in ("application/json; charset=utf-8", "application/merge-patch+json"):
            status, body = await call(gateway, method, path, b"[1]", ctype)
            assert status in {404, 422}, (method, path, ctype, status, body)
    assert await writes_seen(clean_sandbox) == dict.fromkeys(BACKEND_NAMES, 0)


async def test_duplicate_keys_are_refused_everywhere(
    gateway: Gateway, clean_sandbox: SandboxThread
) -> None:
    for path, method in gateway.sites:
        for raw in (b'{"a": 1, "a": 2}', b'{"x": [{"k": 1, "k": 1}]}'):
            status, body = await call(gateway, method, path, raw, "application/json")
            assert status == 400, (method, path, status, body)
            assert "duplicate" in body["detail"], body
    assert await writes_seen(clean_sandbox) == dict.fromkeys(BACKEND_NAMES, 0)


async def test_an_order_with_two_customer_ids_is_refused(
    gateway: Gateway, clean_sandbox: SandboxThread
) -> None:
    a, b = PEOPLE[300], PEOPLE[301]
    raw = b'{"customer_id": "%s", "lines": [{"sku": "%s", "quantity": 1}], "customer_id": "%s"}' % (
        a.crm_contact_id.encode(),
        STOCKED[0].encode(),
        b.crm_contact_id.encode(),
    )
    status, body = await call(gateway, "post", "/process/v1/orders", raw, "application/json")
    assert status == 400, body
    assert await writes_seen(clean_sandbox) == dict.fromkeys(BACKEND_NAMES, 0)


@pytest.mark.parametrize(
    "quantity", ['"2"', "true", "2.0", '"2.5"', "[2]"], ids=["str", "bool", "float", "s", "list"]
)
async def test_request_bodies_are_strictly_typed(
    gateway: Gateway, clean_sandbox: SandboxThread, quantity: str
) -> None:
    raw = b'{"customer_id": "%s", "lines": [{"sku": "%s", "quantity": %s}]}' % (
        PEOPLE[302].crm_contact_id.encode(),
        STOCKED[1].encode(),
        quantity.encode(),
    )
    status, body = await call(gateway, "post", "/process/v1/orders", raw, "application/json")
    assert status == 422, body
    assert [e["path"] for e in body["errors"]] == ["lines/0/quantity"], body
    # the system layer's reservation takes the same line model
    raw = b'{"reference": "r-1", "lines": [{"sku": "%s", "quantity": %s}]}' % (
        STOCKED[1].encode(),
        quantity.encode(),
    )
    status, body = await call(
        gateway, "post", "/system/v1/inventory/reservations", raw, "application/json"
    )
    assert status == 422, body
    assert [e["path"] for e in body["errors"]] == ["lines/0/quantity"], body
    assert await writes_seen(clean_sandbox) == dict.fromkeys(BACKEND_NAMES, 0)


async def test_json_natural_values_still_validate(
    gateway: Gateway, clean_sandbox: SandboxThread
) -> None:
    """Strict types keep what JSON cannot say otherwise: enum values and ISO dates as strings."""
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            gateway.url + "/system/v1/support/tickets?limit=100",
            headers={"Authorization": f"Bearer {gateway.bearer}"},
        ) as r,
    ):
        tickets = (await r.json())["items"]
    ticket = next(t for t in tickets if t["status"] in {"new", "open"})
    status, body = await call(
        gateway,
        "patch",
        f"/system/v1/support/tickets/{ticket['id']}",
        b'{"status": "pending"}',
        "application/json",
    )
    assert status == 200, body
    assert body["status"] == "pending"
    # a JSON number is still an int, and a sku a string: the same order is placed
    raw = b'{"customer_id": "%s", "lines": [{"sku": "%s", "quantity": 2}]}' % (
        PEOPLE[303].crm_contact_id.encode(),
        STOCKED[2].encode(),
    )
    status, body = await call(gateway, "post", "/process/v1/orders", raw, "application/json")
    assert status == 201, body


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/system/v1/support/users", {"email": "\u0430lice@example.com", "name": "Alice"}, "email"),
        ("/system/v1/support/users", {"email": "a@example.com", "name": "Al\u202eice"}, "name"),
        ("/system/v1/billing/customers", {"email": "a@ex\u0430mple.com", "name": "A"}, "email"),
        (
            "/system/v1/marketing/contacts",
            {"email": "a@example.com", "first_name": "\u0391lice", "last_name": "M"},
            "first_name",
        ),
    ],
)
async def test_system_writes_refuse_lookalike_names_and_emails(
    gateway: Gateway, clean_sandbox: SandboxThread, path: str, body: dict[str, str], field: str
) -> None:
    status, answer = await call(gateway, "post", path, orjson.dumps(body), "application/json")
    assert status == 422, answer
    assert [e["path"] for e in answer["errors"]] == [field], answer
    # the backend the write was for saw none (others may still get a subscriber's writes for
    # events earlier tests published)
    backend = path.split("/")[3]
    assert (await writes_seen(clean_sandbox))[backend] == 0
