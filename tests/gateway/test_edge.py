"""Edge hardening through the whole gateway: CORS, trusted proxies, security headers, limits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.app import create_app
from tests.conftest import SandboxThread
from tests.gateway.helpers import test_settings
from tests.servers import serve

ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
async def edge_url(
    sandbox: SandboxThread, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    settings = test_settings(
        sandbox.base_port,
        tmp_path_factory.mktemp("edge"),
        gateway={
            "sandbox": {"base_port": sandbox.base_port},
            "data_dir": str(tmp_path_factory.mktemp("edge-data")),
            "edge": {"trusted_proxies": ["127.0.0.1/32"], "cors": {"allow_origins": [ORIGIN]}},
        },
        ratelimit={
            "enabled": True,
            "unauthenticated": {"burst": "3/minute"},
            "exempt_paths": [],
            "routes": [],
        },
    )
    async with serve(create_app(settings)) as url:
        yield url


async def get(url: str, headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers or {}) as r:
        await r.read()
        return r


async def test_cors_preflight_for_configured_origin(edge_url: str) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.options(
            edge_url + "/process/v1/customers",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "Authorization",
            },
        ) as r,
    ):
        assert r.status == 200
        assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "Authorization" in r.headers["Access-Control-Allow-Headers"]


async def test_cors_refuses_unknown_origin(edge_url: str) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.options(
            edge_url + "/process/v1/customers",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        ) as r,
    ):
        assert r.status == 400
        assert "Access-Control-Allow-Origin" not in r.headers


async def test_security_headers_on_every_response(edge_url: str) -> None:
    r = await get(edge_url + "/nope", {"X-Forwarded-For": "198.51.100.200"})
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert r.headers["Referrer-Policy"] == "no-referrer"


async def test_forwarded_addresses_from_trusted_proxy_get_their_own_budget(edge_url: str) -> None:
    """Behind a trusted proxy each forwarded client has its own per-address limit."""
    statuses_a = [
        (await get(edge_url + "/healthz", {"X-Forwarded-For": "203.0.113.7"})).status
        for _ in range(4)
    ]
    assert statuses_a == [200, 200, 200, 429]
    other = await get(edge_url + "/healthz", {"Forwarded": 'for="203.0.113.8";proto=https'})
    assert other.status == 200
    spoofed_chain = await get(
        edge_url + "/healthz", {"X-Forwarded-For": "203.0.113.7, 203.0.113.9"}
    )
    assert spoofed_chain.status == 200  # the right-most untrusted hop is the client: .9


async def test_untrusted_peer_cannot_spoof_its_address(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    settings = test_settings(
        sandbox.base_port,
        tmp_path,
        ratelimit={
            "enabled": True,
            "unauthenticated": {"burst": "2/minute"},
            "exempt_paths": [],
            "routes": [],
        },
    )  # no trusted proxies: X-Forwarded-For is ignored
    async with serve(create_app(settings)) as url:
        statuses = [
            (await get(url + "/healthz", {"X-Forwarded-For": f"198.51.100.{i}"})).status
            for i in range(3)
        ]
    assert statuses == [200, 200, 429]


async def test_rate_limit_headers_and_problem(edge_url: str) -> None:
    for _ in range(3):
        r = await get(edge_url + "/healthz", {"X-Forwarded-For": "203.0.113.50"})
    assert "RateLimit-Policy" in r.headers and "RateLimit" in r.headers
    async with (
        aiohttp.ClientSession() as s,
        s.get(edge_url + "/healthz", headers={"X-Forwarded-For": "203.0.113.50"}) as r,
    ):
        body = await r.json(content_type=None)
        assert r.status == 429
        assert int(r.headers["Retry-After"]) >= 1
        assert r.headers["Content-Type"].startswith("application/problem+json")
        assert body["policy"] == "burst" and body["trace_id"]
