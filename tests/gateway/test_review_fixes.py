"""Regressions for defects found in review: each test failed before its fix."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from redis.exceptions import RedisError

from gateway.app import create_app
from gateway.stores.operations import RedisOperationStore
from gateway.stores.revocations import RedisRevocationStore
from system_apis.config import BackendConfig
from system_apis.crm import CrmClient
from system_apis.erp import ErpClient
from system_apis.errors import BackendNotFound
from system_apis.inventory import InventoryClient
from tests.conftest import SandboxThread
from tests.gateway.helpers import test_settings, token
from tests.servers import serve


@pytest.fixture
async def silent_redis() -> AsyncIterator[str]:
    """A TCP server that accepts and never answers: a stalled Redis."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"redis://127.0.0.1:{port}/0"
    for w in held:
        w.close()
    server.close()


async def test_stalled_redis_fails_fast_instead_of_hanging(silent_redis: str) -> None:
    revocations = RedisRevocationStore(silent_redis)
    operations = RedisOperationStore(silent_redis)
    for call in (revocations.is_revoked("jti-1"), operations.xrefs("cust-1")):
        with pytest.raises(RedisError):  # the client's own socket timeout, within ~1 s ...
            await asyncio.wait_for(call, 5)  # ... long before this guard would fire


async def test_readyz_probes_are_shared_not_per_caller(
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


async def test_failed_guesses_do_not_lock_the_real_client_out(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    settings = test_settings(
        sandbox.base_port,
        tmp_path,
        oauth={"token_endpoint_limits": {"per_client": "3/minute", "per_address": "100/minute"}},
    )
    form = {"grant_type": "client_credentials"}
    async with serve(create_app(settings)) as url:
        statuses = []
        async with aiohttp.ClientSession() as attacker:  # guessing from 127.0.0.1
            for _ in range(5):
                async with attacker.post(
                    url + "/oauth/token",
                    data=form,
                    headers={"Authorization": aiohttp.encode_basic_auth("partner-acme", "guess")},
                ) as r:
                    statuses.append(r.status)
        assert statuses[-1] == 429  # the guesser is limited...
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with (
            aiohttp.ClientSession(connector=connector) as real,
            real.post(
                url + "/oauth/token",
                data=form,
                headers={
                    "Authorization": aiohttp.encode_basic_auth(
                        "partner-acme", "partner-acme-secret"
                    )
                },
            ) as r,
        ):
            assert r.status == 200, await r.text()  # ...the real client is not


@pytest.mark.parametrize("bad", [".", ".."])
async def test_dot_segments_never_reach_the_backend(clean_sandbox: SandboxThread, bad: str) -> None:
    client = InventoryClient(
        BackendConfig.model_validate(
            {"sandbox": True, "auth": {"kind": "api_key", "key": "inv-sandbox-key"}}
        ),
        clean_sandbox.url("inventory"),
    )
    await client.start()
    try:
        await clean_sandbox.reset_hits("inventory")
        with pytest.raises(BackendNotFound):
            await client.get_stock(bad)
        assert await clean_sandbox.hits("inventory") == {}
    finally:
        await client.close()


@pytest.mark.parametrize("bad", ["003TR0000000000001\n", "003TR000000000000\u0661"])
async def test_crm_and_erp_ids_are_ascii_and_whole(clean_sandbox: SandboxThread, bad: str) -> None:
    crm = CrmClient(
        BackendConfig.model_validate(
            {
                "sandbox": True,
                "auth": {
                    "kind": "oauth_client_credentials",
                    "token_url": "/services/oauth2/token",
                    "client_id": "trellis-sandbox",
                    "client_secret": "crm-sandbox-secret",
                },
            }
        ),
        clean_sandbox.url("crm"),
    )
    erp = ErpClient(
        BackendConfig.model_validate(
            {
                "sandbox": True,
                "auth": {"kind": "api_key", "header": "X-SAP-API-Key", "key": "erp-sandbox-key"},
            }
        ),
        clean_sandbox.url("erp"),
    )
    await crm.start()
    await erp.start()
    try:
        with pytest.raises(BackendNotFound):
            await crm.get_contact(bad)
        with pytest.raises(BackendNotFound):
            await erp.get_order("450000000\u0661")
    finally:
        await crm.close()
        await erp.close()


async def test_stalled_redis_auth_is_503_not_500(
    sandbox: SandboxThread, tmp_path: Path, silent_redis: str
) -> None:
    """Tokens issued by a healthy gateway; a second one whose revocation store stalls."""
    settings = test_settings(sandbox.base_port, tmp_path)
    async with serve(create_app(settings)) as url:
        bearer = await token(url, "ops-admin")
    app = create_app(settings)
    async with serve(app) as url:
        # swap the revocation store for one on the stalled Redis
        verifier = app.oauth.verifier
        verifier._revocations = RedisRevocationStore(silent_redis)
        async with (
            aiohttp.ClientSession() as s,
            s.get(
                url + "/system/v1/inventory/stock/SKU-0001",
                headers={"Authorization": f"Bearer {bearer}"},
            ) as r,
        ):
            body = await r.json(content_type=None)
            assert r.status == 503, body
            assert r.headers["Retry-After"] == "1"
