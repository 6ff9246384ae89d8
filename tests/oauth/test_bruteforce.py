"""Brute force on client authentication is cut off per client id and per source address."""

from __future__ import annotations

import uuid
from pathlib import Path

import aiohttp
import pytest

from gateway.app import create_app
from tests.conftest import SandboxThread
from tests.gateway.helpers import test_settings
from tests.servers import serve

from .conftest import RunFactory, secret_of

GRANT = {"grant_type": "client_credentials"}


async def test_per_client_limit_answers_429_even_for_the_right_secret(
    run_gateway: RunFactory,
) -> None:
    limits = {"per_client": "3/minute", "per_address": "1000/minute"}
    async with run_gateway(token_endpoint_limits=limits) as gw:
        for _ in range(3):
            r = await gw.http.post("/oauth/token", data=GRANT, auth=("partner-acme", "guess"))
            assert r.status_code == 401
        blocked = await gw.http.post(
            "/oauth/token", data=GRANT, auth=("partner-acme", secret_of("partner-acme"))
        )
        assert blocked.status_code == 429
        assert blocked.headers["content-type"] == "application/problem+json"
        assert int(blocked.headers["retry-after"]) >= 1
        assert blocked.json()["status"] == 429
        # Another client id is not affected.
        await gw.token("partner-globex")
        # Introspection checks secrets too, so it shares the budget.
        r = await gw.http.post(
            "/oauth/introspect",
            data={"token": "x"},
            auth=("partner-acme", secret_of("partner-acme")),
        )
        assert r.status_code == 429


async def test_per_address_limit_across_client_ids(run_gateway: RunFactory) -> None:
    limits = {"per_client": "1000/minute", "per_address": "4/minute"}
    async with run_gateway(token_endpoint_limits=limits) as gw:
        codes = []
        for _ in range(6):
            r = await gw.http.post(
                "/oauth/token", data=GRANT, auth=(f"random-{uuid.uuid4().hex}", "guess")
            )
            codes.append(r.status_code)
        assert codes == [401, 401, 401, 401, 429, 429]


async def test_limit_is_shared_through_redis(
    run_gateway: RunFactory, redis_url: str, redis_prefix: str
) -> None:
    client = f"probe-{uuid.uuid4().hex}"
    limits = {"per_client": "2/minute", "per_address": "100000/minute"}
    shared = {"redis_url": redis_url, "redis_prefix": redis_prefix}
    async with (
        run_gateway(**shared, token_endpoint_limits=limits) as first,
        run_gateway(**shared, token_endpoint_limits=limits) as second,
    ):
        assert (
            await first.http.post("/oauth/token", data=GRANT, auth=(client, "x"))
        ).status_code == 401
        assert (
            await second.http.post("/oauth/token", data=GRANT, auth=(client, "x"))
        ).status_code == 401
        assert (
            await first.http.post("/oauth/token", data=GRANT, auth=(client, "x"))
        ).status_code == 429


@pytest.mark.slow  # a whole gateway
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
