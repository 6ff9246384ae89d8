"""The Host header is the client's to choose: the gateway serves only configured names and never
builds an absolute URL from one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from gateway.app import create_app
from gateway.policies.hosts import AllowedHosts
from tests.conftest import SandboxThread
from tests.gateway.helpers import test_settings
from tests.servers import serve


@pytest.fixture(scope="module")
async def gateway_url(
    sandbox: SandboxThread, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    tmp = tmp_path_factory.mktemp("hosts")
    settings = test_settings(
        sandbox.base_port,
        tmp,
        gateway={
            "sandbox": {"base_port": sandbox.base_port},
            "data_dir": str(tmp / "data"),
            "server": {"allowed_hosts": ["localhost", "127.0.0.1", "*.trellis.example"]},
        },
    )
    async with serve(create_app(settings)) as url:
        yield url


async def raw_get(url: str, path: str, host: str) -> tuple[int, dict[str, str], bytes]:
    """A GET with exactly this Host header (HTTP clients fill it in from the URL)."""
    hostport = url.removeprefix("http://")
    address, port = hostport.split(":")
    reader, writer = await asyncio.open_connection(address, int(port))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("path", ["/healthz/", "/healthz", "/system/v1/inventory"])
async def test_an_unknown_host_is_refused_and_never_echoed(gateway_url: str, path: str) -> None:
    status, headers, body = await raw_get(gateway_url, path, "evil.example")
    assert status == 400
    assert "location" not in headers
    assert b"evil.example" not in body
    assert headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost:8000", "LOCALHOST", "api.trellis.example", "a.b.trellis.example:443"],
)
async def test_configured_hosts_are_served(gateway_url: str, host: str) -> None:
    status, _, body = await raw_get(gateway_url, "/healthz", host)
    assert status == 200, body


@pytest.mark.parametrize("host", ["trellis.example", "eviltrellis.example", "127.0.0.1.evil"])
async def test_a_wildcard_matches_subdomains_only(gateway_url: str, host: str) -> None:
    status, _, _ = await raw_get(gateway_url, "/healthz", host)
    assert status == 400


async def test_a_trailing_slash_is_not_redirected_to_any_host(gateway_url: str) -> None:
    """Starlette's slash redirect builds its Location from the Host header: there is none."""
    status, headers, _ = await raw_get(gateway_url, "/healthz/", "127.0.0.1")
    assert status == 404
    assert "location" not in headers


async def test_without_a_host_header_the_request_is_refused() -> None:
    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = AllowedHosts(Starlette(routes=[Route("/", ok)]), ["127.0.0.1"])
    async with serve(app, interface="asgi3") as url:
        address, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(address, int(port))
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    assert raw.startswith(b"HTTP/1.1 400 ")


def test_the_listening_address_is_allowed_and_ipv6_is_bracketed(tmp_path: Path) -> None:
    from gateway.server.config import ServerLimits

    limits = ServerLimits(allowed_hosts=["api.example.com"])
    assert limits.hosts("10.0.0.5") == ["api.example.com", "10.0.0.5"]
    assert limits.hosts("0.0.0.0") == ["api.example.com"]  # every address: no name
    guard = AllowedHosts(lambda s, r, w: None, ["::1", "api.example.com"])  # type: ignore[arg-type,return-value]
    assert guard.allowed(b"[::1]:8000") and guard.allowed(b"[::1]")
    assert not guard.allowed(b"[::2]:8000")
