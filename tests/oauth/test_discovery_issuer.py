"""Discovery names the gateway that serves it: a client that only knows the gateway's URL
finds the token endpoint there, gets a token with a third-party OAuth library, and uses it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client

from gateway.app import create_app
from gateway.oauth.config import public_base_url
from tests.conftest import SandboxThread
from tests.gateway.helpers import test_settings
from tests.servers import free_port, serve

DISCOVERY = "/.well-known/oauth-authorization-server"
CLIENT = "test-everything"


async def test_a_token_through_discovery(sandbox: SandboxThread, tmp_path: Path) -> None:
    port = free_port()
    # the shipped oauth.yaml with the gateway on a port of the test's choosing
    settings = test_settings(sandbox.base_port, tmp_path, gateway={"port": port})
    async with serve(create_app(settings), port=port) as url:
        async with httpx.AsyncClient(timeout=10) as plain:
            meta = (await plain.get(url + DISCOVERY)).json()
        assert meta["issuer"] == url
        assert meta["token_endpoint"] == url + "/oauth/token"
        async with AsyncOAuth2Client(
            client_id=CLIENT,
            client_secret=f"{CLIENT}-secret",
            token_endpoint_auth_method="client_secret_basic",
            timeout=10,
        ) as client:
            token = await client.fetch_token(
                meta["token_endpoint"], grant_type="client_credentials", scope="system:read"
            )
            assert token["token_type"] == "Bearer"
            r = await client.get(url + "/system/v1/inventory/stock?limit=1")
            assert r.status_code == 200, r.text
            # the token's issuer is the one discovery named: its introspection says so
            r = await client.post(
                meta["introspection_endpoint"],
                data={"token": token["access_token"]},
                auth=(CLIENT, f"{CLIENT}-secret"),
            )
            assert r.json()["iss"] == meta["issuer"]


async def test_public_url_is_the_issuer(sandbox: SandboxThread, tmp_path: Path) -> None:
    public = "https://api.example.test/edge"
    settings = test_settings(sandbox.base_port, tmp_path, gateway={"public_url": public + "/"})
    async with serve(create_app(settings)) as url, httpx.AsyncClient(timeout=10) as plain:
        meta = (await plain.get(url + DISCOVERY)).json()
    assert meta["issuer"] == public
    assert meta["token_endpoint"] == public + "/oauth/token"


@pytest.mark.parametrize(
    ("public_url", "host", "port", "expected"),
    [
        (None, "127.0.0.1", 8000, "http://127.0.0.1:8000"),
        (None, "0.0.0.0", 8000, "http://127.0.0.1:8000"),
        (None, "::1", 9000, "http://[::1]:9000"),
        ("https://api.example.test/", "0.0.0.0", 8000, "https://api.example.test"),
    ],
)
def test_public_base_url(public_url: str | None, host: str, port: int, expected: str) -> None:
    assert public_base_url(public_url, host, port) == expected
