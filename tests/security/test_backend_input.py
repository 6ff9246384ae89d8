"""Caller input that must never reach a backend: ids outside the vendor's syntax, bad query
parameters, and a client's own bad requests opening a breaker for everyone else.

Routes are walked from the app (the same walk the OpenAPI document is built from), so a route
added tomorrow is covered without touching this file. "Never reached" is checked at the source:
the sandbox backends count every request they receive.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from gateway.app import create_app
from gateway.openapi import Site, iter_sites
from system_apis.config import BACKEND_NAMES
from tests.conftest import SandboxThread
from tests.gateway.helpers import test_settings, token
from tests.security.rawhttp import KeepAliveConnection
from tests.servers import serve

BAD_IDS = (
    "%C2%B2",  # "²": str.isdigit() is True, int() refuses it
    "%D9%A3",  # "٣" (Arabic-Indic three): isdigit() True and int() answers 3
    "%EF%BC%91",  # fullwidth one: the same
    "1%C2%B2",
    "%E2%80%AE1",  # a bidi override before a digit
    "0",
    "-1",
    "1%20",
)
"""Path ids no vendor issues: non-ASCII digits, signs, controls, trailing space."""

BAD_CURSORS = ("%C2%B2", "%D9%A3", "%EF%BC%91", "x" * 600, "%00", "%E2%80%AE")
BAD_INTS = ("%C2%B2", "%D9%A3", "%EF%BC%91", "1_0", "%201", "0x10", "1e3", "", "-0", "99999999999")


@dataclass
class Gateway:
    url: str
    admin: str
    agent: str
    sites: list[Site]


@pytest.fixture(scope="module")
async def gateway(
    sandbox: SandboxThread, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    # the shipped breaker and retry policies: the point is whether a caller can trip them
    settings = test_settings(sandbox.base_port, tmp_path_factory.mktemp("security-input"))
    app = create_app(settings)
    sites = [
        s
        for s in iter_sites(app.routes)
        if s.path.startswith(("/system/", "/process/", "/experience/", "/admin/"))
    ]
    async with serve(app) as url:
        yield Gateway(
            url, await token(url, "test-everything"), await token(url, "support-desk"), sites
        )


async def backend_hits(sandbox: SandboxThread) -> dict[str, dict[str, int]]:
    seen = {}
    for name in BACKEND_NAMES:
        hits = await sandbox.hits(name)
        seen[name] = {k: n for k, n in hits.items() if not k.startswith("GET /__")}
    return seen


def no_hits() -> dict[str, dict[str, int]]:
    return {name: {} for name in BACKEND_NAMES}


def problem(status: int, headers: dict[str, str], raw: bytes) -> dict[str, object]:
    assert headers["content-type"].startswith("application/problem+json"), (status, raw)
    body: dict[str, object] = orjson.loads(raw)
    assert body["status"] == status, body
    assert headers.get("connection", "").lower() != "close", headers
    return body


def fill(path: str, value: str) -> str:
    return re.sub(r"\{[^}]+\}", value, path)


async def test_ids_outside_the_vendor_syntax_never_reach_a_backend(
    gateway: Gateway, clean_sandbox: SandboxThread
) -> None:
    sites = [s for s in gateway.sites if s.path_params and s.method == "get"]
    assert len(sites) >= 10, [s.path for s in sites]
    conn = await KeepAliveConnection.open(gateway.url)
    try:
        for site in sites:
            for bad in BAD_IDS:
                target = fill(site.path, bad)
                status, headers, raw = await conn.request(
                    "GET", target, {"Authorization": f"Bearer {gateway.admin}"}
                )
                assert status in {404, 410}, (target, status, raw)  # 410: a retired version
                problem(status, headers, raw)
        assert await backend_hits(clean_sandbox) == no_hits()
    finally:
        await conn.close()


async def test_writes_with_impossible_ids_never_reach_a_backend(
    gateway: Gateway, clean_sandbox: SandboxThread
) -> None:
    sites = [s for s in gateway.sites if s.path_params and s.method in {"post", "put", "patch"}]
    assert sites
    conn = await KeepAliveConnection.open(gateway.url)
    try:
        for site in sites:
            target = fill(site.path, "%C2%B2")
            status, headers, raw = await conn.request(
                site.method.upper(),
                target,
                {
                    "Authorization": f"Bearer {gateway.admin}",
                    "Content-Type": "application/json",
                    "Idempotency-Key": "k-" + site.name,
                },
                b'{"status": "solved", "reason": "customer request"}',
            )
            assert status in {404, 422}, (target, status, raw)
            problem(status, headers, raw)
        assert await backend_hits(clean_sandbox) == no_hits()
    finally:
        await conn.close()


async def test_one_clients_bad_ids_never_open_a_breaker_for_others(
    gateway: Gateway, clean_sandbox: SandboxThread
) -> None:
    """Twenty bad ticket ids from the support desk, then another client's good request."""
    conn = await KeepAliveConnection.open(gateway.url)
    try:
        for _ in range(10):
            for target in (
                "/experience/support/v1/tickets/%C2%B2",
                "/system/v1/support/tickets/%D9%A3",
            ):
                agent = gateway.agent if target.startswith("/experience") else gateway.admin
                status, _, raw = await conn.request(
                    "GET", target, {"Authorization": f"Bearer {agent}"}
                )
                assert status == 404, (target, raw)
        # ids in the vendor's syntax that do not exist: the vendor's own 404s, also harmless
        for n in range(10):
            status, _, raw = await conn.request(
                "GET",
                f"/system/v1/support/tickets/9999999{n}",
                {"Authorization": f"Bearer {gateway.admin}"},
            )
            assert status == 404, raw
        status, _, raw = await conn.request("GET", "/readyz")
        assert status == 200, raw
        ticket = (await clean_sandbox.hits("support")).keys()
        assert not any("%C2%B2" in k or "%D9%A3" in k for k in ticket), ticket
    finally:
        await conn.close()
    good = await KeepAliveConnection.open(gateway.url)
    try:
        status, _, raw = await good.request(
            "GET", "/system/v1/support/tickets/1", {"Authorization": f"Bearer {gateway.admin}"}
        )
        assert status == 200, raw
        status, _, raw = await good.request(
            "GET", "/experience/support/v1/tickets/1", {"Authorization": f"Bearer {gateway.agent}"}
        )
        assert status == 200, raw
    finally:
        await good.close()


def _list_sites(gateway: Gateway) -> list[tuple[Site, str, str]]:
    """(site, parameter, kind) for every query parameter a GET route declares."""
    out = []
    for site in gateway.sites:
        if site.method != "get" or site.spec is None:
            continue
        for param in site.spec.query:
            if param.name == "cursor":
                out.append((site, param.name, "cursor"))
            elif param.type == "integer":
                out.append((site, param.name, "integer"))
            elif param.enum:
                out.append((site, param.name, "enum"))
    return out


async def test_every_bad_query_parameter_is_a_400_problem_on_a_kept_connection(
    gateway: Gateway, clean_sandbox: SandboxThread
) -> None:
    params = _list_sites(gateway)
    assert sum(kind == "cursor" for _, _, kind in params) >= 8, params
    conn = await KeepAliveConnection.open(gateway.url)
    try:
        for site, name, kind in params:
            values = {"cursor": BAD_CURSORS, "integer": BAD_INTS, "enum": ("%C2%B2", "OPEN")}[kind]
            base = fill(site.path, "1")
            for value in values:
                target = f"{base}?{name}={value}"
                status, headers, raw = await conn.request(
                    "GET", target, {"Authorization": f"Bearer {gateway.admin}"}
                )
                if (status == 404 and site.path_params) or status == 410:
                    continue  # "1" is not an id of this route's vendor, or a retired version
                assert status == 400, (target, status, raw)
                body = problem(status, headers, raw)
                errors = body.get("errors")
                assert isinstance(errors, list) and errors, body
                assert any(e["path"] == f"query/{name}" for e in errors), body
        # the same connection still answers
        status, _, _ = await conn.request("GET", "/healthz")
        assert status == 200
        hits = await backend_hits(clean_sandbox)
        for name, seen in hits.items():
            assert not any("%C2%B2" in k or "%D9%A3" in k for k in seen), (name, seen)
    finally:
        await conn.close()


async def test_inventory_cursor_superscript_two(gateway: Gateway, tmp_path: Path) -> None:
    """A superscript cursor on the stock list: a 400 problem and the connection kept, never a
    500 and a hang-up."""
    conn = await KeepAliveConnection.open(gateway.url)
    try:
        for _ in range(3):
            status, headers, raw = await conn.request(
                "GET",
                "/system/v1/inventory/stock?cursor=%C2%B2",
                {"Authorization": f"Bearer {gateway.admin}"},
            )
            assert status == 400, raw
            problem(status, headers, raw)
    finally:
        await conn.close()


FREE_TEXT = ("%C2%B2", "a%27b%22c%5C", "x" * 300, "%00", "%2A", "a%20OR%20b", "%E2%80%AEx@y.z")


async def test_free_text_query_values_never_fail_a_backend(
    gateway: Gateway, clean_sandbox: SandboxThread
) -> None:
    """Filters a caller writes (an email to look up) answer 200 or 400, never a backend 5xx,
    and leave every breaker closed (readiness stays ready)."""
    sites = [
        (s, q.name)
        for s in gateway.sites
        if s.method == "get" and s.spec is not None and not s.path_params
        for q in s.spec.query
        if q.type == "string" and not q.enum and q.name != "cursor"
    ]
    assert sites
    conn = await KeepAliveConnection.open(gateway.url)
    try:
        for site, name in sites:
            for value in FREE_TEXT:
                target = f"{site.path}?{name}={value}"
                status, headers, raw = await conn.request(
                    "GET", target, {"Authorization": f"Bearer {gateway.admin}"}
                )
                assert status in {200, 400, 410}, (target, status, raw)
                if status == 400:
                    problem(status, headers, raw)
        status, _, raw = await conn.request("GET", "/readyz")
        assert status == 200, raw
    finally:
        await conn.close()


async def test_an_email_lookup_is_never_vendor_search_syntax(
    gateway: Gateway, clean_sandbox: SandboxThread
) -> None:
    """The helpdesk looks users up with its search language (``email:<value>``): a value no
    address can be finds nobody, without a search that could read it as more terms."""
    conn = await KeepAliveConnection.open(gateway.url)
    try:
        for value in ("a%40b.c%20type%3Aticket", "%22%22", "a%40b.c%20OR%20x", "*"):
            status, _, raw = await conn.request(
                "GET",
                f"/system/v1/support/users?email={value}",
                {"Authorization": f"Bearer {gateway.admin}"},
            )
            assert status == 200 and orjson.loads(raw)["items"] == [], raw
    finally:
        await conn.close()
    assert (await backend_hits(clean_sandbox))["support"] == {}
