"""The assembled gateway over real HTTP: health, readiness, problem+json, scopes, backend faults."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.app import BUSIEST_ROUTES, PUBLIC_PATHS, PUBLIC_PREFIXES, create_app
from system_apis.config import BACKEND_NAMES
from tests.conftest import SandboxThread
from tests.gateway.helpers import test_settings, token
from tests.servers import free_port, serve


class Gw:
    def __init__(self, url: str, admin: str, writer: str, other: str) -> None:
        self.url, self.admin, self.writer, self.other = url, admin, writer, other

    async def call(
        self, method: str, path: str, token: str | None = None, **kw: Any
    ) -> tuple[int, dict[str, str], Any]:
        headers = dict(kw.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with (
            aiohttp.ClientSession() as s,
            s.request(method, self.url + path, headers=headers, **kw) as r,
        ):
            raw = await r.read()
            try:
                import orjson

                body = orjson.loads(raw) if raw else None
            except Exception:
                body = raw
            return r.status, dict(r.headers), body


@pytest.fixture(scope="module")
async def gw(sandbox: SandboxThread, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gw]:
    tmp = tmp_path_factory.mktemp("gw")
    settings = test_settings(
        sandbox.base_port,
        tmp,
        backends={
            "inventory": {
                "sandbox": True,
                "auth": {"kind": "api_key", "key": "inv-sandbox-key"},
                "timeouts": {"connect_s": 1, "read_s": 0.5, "total_s": 1},
                "retry": {"max_attempts": 2, "base_delay_s": 0.01},
                "breaker": {"failure_threshold": 50},
            }
        },
    )
    async with serve(create_app(settings)) as url:
        yield Gw(
            url,
            await token(url, "ops-admin"),
            await token(url, "test-system-writer"),
            await token(url, "test-nothing"),
        )


def assert_problem(status: int, headers: dict[str, str], body: Any, expected: int) -> None:
    assert status == expected, body
    assert headers["Content-Type"].startswith("application/problem+json")
    assert body["status"] == expected
    assert body["title"] and body["type"]
    assert body["trace_id"]
    assert "Traceback" not in str(body)


async def test_healthz(gw: Gw) -> None:
    status, headers, body = await gw.call("GET", "/healthz")
    assert status == 200 and body == {"status": "ok"}
    assert headers["X-Content-Type-Options"] == "nosniff"


async def test_readyz_ready_with_sandbox(gw: Gw) -> None:
    status, _, body = await gw.call("GET", "/readyz", gw.admin)
    assert status == 200, body
    assert set(body["backends"]) == set(BACKEND_NAMES)
    assert all(b["reachable"] for b in body["backends"].values())


async def test_readyz_503_names_unreachable_backend(sandbox: SandboxThread, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    settings = test_settings(
        sandbox.base_port,
        tmp_path,
        backends={
            "erp": {"sandbox": False, "base_url": dead, "auth": {"kind": "api_key", "key": "x"}}
        },
        gateway={"data_dir": str(tmp_path / "data"), "readiness": {"required_backends": ["erp"]}},
    )
    async with serve(create_app(settings)) as url:
        admin = await token(url, "test-everything")
        async with (
            aiohttp.ClientSession() as s,
            s.get(url + "/readyz", headers={"Authorization": f"Bearer {admin}"}) as r,
        ):
            body = await r.json()
        assert r.status == 503
        assert body["status"] == "not ready"
        assert any(reason.startswith("erp: unreachable") for reason in body["reasons"])
        assert dead not in str(body)  # no internal host names leak


async def test_request_id_echoed_and_generated(gw: Gw) -> None:
    _, headers, _ = await gw.call("GET", "/healthz", headers={"X-Request-ID": "req-12345678"})
    assert headers["X-Request-ID"] == "req-12345678"
    _, headers, _ = await gw.call("GET", "/healthz", headers={"X-Request-ID": "bad id\twith junk"})
    assert headers["X-Request-ID"] != "bad id\twith junk" and len(headers["X-Request-ID"]) == 32


async def test_startup_heap_is_frozen_while_serving_and_released_after(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    """gc.freeze() after startup keeps full collections off the startup heap (the p99 pauses
    of docs/performance.md); shutdown hands it back so the process is left as found."""
    import gc

    before = gc.get_threshold()
    settings = test_settings(
        sandbox.base_port, tmp_path, gateway={"gc": {"threshold": [5000, 15, 15]}}
    )
    try:
        async with serve(create_app(settings)) as url:
            assert gc.get_freeze_count() > 10_000
            assert gc.get_threshold() == (5000, 15, 15)
            async with aiohttp.ClientSession() as s, s.get(f"{url}/healthz") as r:
                assert r.status == 200
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == before  # the collector as the process had it
    finally:
        gc.set_threshold(*before)


def test_request_ids_differ_in_a_forked_worker() -> None:
    import os

    from gateway.request_id import request_id

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one id, written back, then leave without cleanup
        os.write(write, request_id(None))
        os._exit(0)
    os.close(write)
    theirs = os.read(read, 64)
    os.close(read)
    os.waitpid(pid, 0)
    mine = request_id(None)
    assert len(theirs) == len(mine) == 32 and theirs != mine


async def test_unknown_route_is_problem_404(gw: Gw) -> None:
    assert_problem(*(await gw.call("GET", "/nope")), 404)


async def test_wrong_method_is_problem_405(gw: Gw) -> None:
    status, headers, body = await gw.call("DELETE", "/healthz")
    assert_problem(status, headers, body, 405)
    assert "GET" in headers["Allow"]


@pytest.mark.parametrize("backend", BACKEND_NAMES)
async def test_system_routes_need_a_token(gw: Gw, backend: str) -> None:
    status, headers, body = await gw.call("GET", f"/system/v1/{backend}/anything")
    assert_problem(status, headers, body, 401)
    assert headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("backend", BACKEND_NAMES)
async def test_system_routes_need_their_scope(gw: Gw, backend: str) -> None:
    status, headers, body = await gw.call("GET", f"/system/v1/{backend}/anything", gw.other)
    assert_problem(status, headers, body, 403)
    assert 'error="insufficient_scope"' in headers["WWW-Authenticate"]


async def test_system_write_needs_write_scope(gw: Gw) -> None:
    status, headers, body = await gw.call(
        "POST", "/system/v1/inventory/reservations", gw.admin, json={"lines": []}
    )
    assert_problem(status, headers, body, 403)


@pytest.mark.parametrize(("backend", "path"), sorted(BUSIEST_ROUTES))
async def test_a_busiest_route_tried_first_answers_as_in_its_mount(
    gw: Gw, backend: str, path: str
) -> None:
    url = f"/system/v1/{backend}" + re.sub(r"\{[^}]+\}", "SKU-0001", path)
    status, headers, body = await gw.call("GET", url)
    assert_problem(status, headers, body, 401)
    status, headers, body = await gw.call("GET", url, gw.other)
    assert_problem(status, headers, body, 403)
    status, headers, body = await gw.call("DELETE", url, gw.writer)  # the mount's 405
    assert_problem(status, headers, body, 405)
    assert "GET" in headers["Allow"]
    status, _, body = await gw.call("GET", url, gw.admin)
    assert status == 200, body


def _probe_paths(routes: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(path, method) for every route and mount, with path parameters filled in."""
    from starlette.routing import Mount, Route

    out: list[tuple[str, str]] = []
    for route in routes:
        path = prefix + re.sub(r"\{[^}]+\}", "x", getattr(route, "path", ""))
        if isinstance(route, Mount):
            inner = getattr(route, "routes", None)
            if inner and not hasattr(route.app, "read"):
                out.extend(_probe_paths(inner, path))
            else:
                out.append((path + "/anything", "GET"))
        elif isinstance(route, Route):
            out.append((path, sorted(route.methods or {"GET"})[0]))
    return out


async def test_every_route_denies_without_a_token(gw: Gw, tmp_path: Path) -> None:
    """Default deny: every route but the declared public ones answers 401 without a token."""
    app = create_app(test_settings(9101, tmp_path))
    probes = _probe_paths(app.routes)
    assert len(probes) > 10
    for path, method in probes:
        status, headers, body = await gw.call(method, path)
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            assert status != 401 or path.startswith("/oauth/"), (path, status)
        else:
            assert status == 401, (method, path, status, body)
            assert headers["WWW-Authenticate"].startswith("Bearer")


async def test_every_route_refuses_a_token_without_its_scope(gw: Gw, tmp_path: Path) -> None:
    """A valid token that holds no scope: 403 insufficient_scope on every protected route."""
    app = create_app(test_settings(9101, tmp_path))
    scopeless = await token(gw.url, "test-no-scope")
    checked = 0
    for path, method in _probe_paths(app.routes):
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            continue
        status, headers, body = await gw.call(method, path, scopeless)
        assert status == 403, (method, path, status, body)
        assert 'error="insufficient_scope"' in headers["WWW-Authenticate"]
        checked += 1
    assert checked > 10


async def test_system_read_through_gateway(gw: Gw) -> None:
    status, _, body = await gw.call("GET", "/system/v1/inventory/stock/SKU-0001", gw.admin)
    assert status == 200, body
    assert body["sku"] == "SKU-0001" and "unit_cost" not in body


async def test_malformed_json_is_400_and_reserves_nothing(gw: Gw) -> None:
    _, _, before = await gw.call("GET", "/system/v1/inventory/stock/SKU-0280", gw.admin)
    status, headers, body = await gw.call(
        "POST",
        "/system/v1/inventory/reservations",
        gw.writer,
        data=b'{"lines": [{"sku": "SKU-0280", "quantity": 1}',
        headers={"Content-Type": "application/json"},
    )
    assert_problem(status, headers, body, 400)
    _, _, after = await gw.call("GET", "/system/v1/inventory/stock/SKU-0280", gw.admin)
    assert after["reserved"] == before["reserved"]


async def test_wrong_content_type_is_415(gw: Gw) -> None:
    status, headers, body = await gw.call(
        "POST",
        "/system/v1/inventory/reservations",
        gw.writer,
        data=b"lines=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_problem(status, headers, body, 415)


async def test_invalid_body_is_422_with_paths(gw: Gw) -> None:
    _, _, before = await gw.call("GET", "/system/v1/inventory/stock/SKU-0281", gw.admin)
    status, headers, body = await gw.call(
        "POST",
        "/system/v1/inventory/reservations",
        gw.writer,
        json={"lines": [{"sku": "SKU-0281", "quantity": "lots"}]},
    )
    assert_problem(status, headers, body, 422)
    assert any("quantity" in e["path"] for e in body["errors"])
    _, _, after = await gw.call("GET", "/system/v1/inventory/stock/SKU-0281", gw.admin)
    assert after["reserved"] == before["reserved"]


async def test_oversized_body_is_413(gw: Gw) -> None:
    big = b'{"pad": "' + b"x" * 1_100_000 + b'"}'
    status, headers, body = await gw.call(
        "POST",
        "/system/v1/inventory/reservations",
        gw.writer,
        data=big,
        headers={"Content-Type": "application/json"},
    )
    assert_problem(status, headers, body, 413)


async def test_unknown_id_is_404_problem(gw: Gw) -> None:
    status, headers, body = await gw.call("GET", "/system/v1/inventory/stock/SKU-9999", gw.admin)
    assert_problem(status, headers, body, 404)


async def test_backend_down_is_503(gw: Gw, clean_sandbox: SandboxThread) -> None:
    await clean_sandbox.set_faults("inventory", fail_next=5, error_statuses=[503])
    status, headers, body = await gw.call("GET", "/system/v1/inventory/stock/SKU-0002", gw.admin)
    assert_problem(status, headers, body, 503)
    assert body["backend"] == "inventory"


async def test_backend_garbage_is_502(gw: Gw, clean_sandbox: SandboxThread) -> None:
    await clean_sandbox.set_faults("inventory", malformed_rate=1)
    status, headers, body = await gw.call("GET", "/system/v1/inventory/stock/SKU-0002", gw.admin)
    assert_problem(status, headers, body, 502)
    assert "127.0.0.1" not in str(body)


@pytest.mark.slow  # waits out the backend timeout
async def test_backend_slow_is_504(gw: Gw, clean_sandbox: SandboxThread) -> None:
    await clean_sandbox.set_faults("inventory", latency_ms=1500)
    status, headers, body = await gw.call("GET", "/system/v1/inventory/stock/SKU-0002", gw.admin)
    assert_problem(status, headers, body, 504)


async def test_readyz_probes_are_shared_between_callers(
    clean_sandbox: SandboxThread, tmp_path: Path
) -> None:
    app = create_app(test_settings(clean_sandbox.base_port, tmp_path))
    async with serve(app) as url:
        for name in ("crm", "support"):
            await clean_sandbox.reset_hits(name)
        async with aiohttp.ClientSession() as s:
            for _ in range(20):
                async with s.get(url + "/readyz") as r:
                    assert r.status == 200
        for name in ("crm", "support"):
            assert sum((await clean_sandbox.hits(name)).values()) <= 2, name
