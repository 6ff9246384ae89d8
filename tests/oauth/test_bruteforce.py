"""Brute force on client authentication is cut off per client id and per source address."""

from __future__ import annotations

import uuid

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


async def test_limit_is_shared_through_redis(run_gateway: RunFactory, redis_url: str) -> None:
    client = f"probe-{uuid.uuid4().hex}"  # unique: Redis outlives the test run
    limits = {"per_client": "2/minute", "per_address": "100000/minute"}
    async with (
        run_gateway(redis_url=redis_url, token_endpoint_limits=limits) as first,
        run_gateway(redis_url=redis_url, token_endpoint_limits=limits) as second,
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
