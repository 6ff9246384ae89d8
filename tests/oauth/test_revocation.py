"""Introspection (RFC 7662) and revocation (RFC 7009), shared across gateway processes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway.stores.revocations import RedisRevocationStore, SqliteRevocationStore
from tests.eventually import eventually

from .conftest import RunFactory, Running, secret_of


def _auth(client_id: str) -> tuple[str, str]:
    return (client_id, secret_of(client_id))


async def _introspect(gw: Running, token: str, client_id: str) -> dict[str, object]:
    r = await gw.http.post("/oauth/introspect", data={"token": token}, auth=_auth(client_id))
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    return dict(r.json())


async def test_introspection_active_inactive_and_ownership(run_gateway: RunFactory) -> None:
    async with run_gateway() as gw:
        token = await gw.token("partner-acme")
        own = await _introspect(gw, token, "partner-acme")
        assert own["active"] is True and own["scope"] == "partner"
        assert own["tier"] == "partner-standard"
        assert (await _introspect(gw, token, "partner-globex")) == {"active": False}
        assert (await _introspect(gw, token, "ops-admin"))["active"] is True
        assert (await _introspect(gw, "garbage", "ops-admin")) == {"active": False}

        anonymous = await gw.http.post("/oauth/introspect", data={"token": token})
        assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_client"
        missing = await gw.http.post("/oauth/introspect", data={}, auth=_auth("ops-admin"))
        assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"


async def test_revocation_rules(run_gateway: RunFactory) -> None:
    async with run_gateway() as gw:
        token = await gw.token("partner-acme")
        other = await gw.http.post(
            "/oauth/revoke", data={"token": token}, auth=_auth("partner-globex")
        )
        assert other.status_code == 400 and other.json()["error"] == "unauthorized_client"
        assert (await gw.get("/partner/orders", token)).status_code == 200

        garbage = await gw.http.post(
            "/oauth/revoke", data={"token": "garbage"}, auth=_auth("partner-globex")
        )
        assert garbage.status_code == 200  # RFC 7009 §2.2: invalid tokens are not an error

        by_admin = await gw.http.post(
            "/oauth/revoke", data={"token": token}, auth=_auth("ops-admin")
        )
        assert by_admin.status_code == 200
        assert (await gw.get("/partner/orders", token)).status_code == 401
        assert (await _introspect(gw, token, "partner-acme")) == {"active": False}
        again = await gw.http.post(
            "/oauth/revoke", data={"token": token}, auth=_auth("partner-acme")
        )
        assert again.status_code == 200

        unauthenticated = await gw.http.post("/oauth/revoke", data={"token": token})
        assert unauthenticated.status_code == 401


async def _revocation_is_shared(
    run_gateway: RunFactory, *, at_once: bool = True, **shared: object
) -> None:
    """``at_once``: the second process refuses from its next request; else within the
    staleness bound (polled; the bound itself is tested with a clock in test_scaleout.py)."""
    async with run_gateway(**shared) as first, run_gateway(**shared) as second:
        token = await first.token("orders-service")
        assert (await second.get("/orders", token)).status_code == 200  # cached by `second`
        assert (await first.get("/orders", token)).status_code == 200
        r = await first.http.post(
            "/oauth/revoke", data={"token": token}, auth=_auth("orders-service")
        )
        assert r.status_code == 200
        assert (await first.get("/orders", token)).status_code == 401  # the revoker: at once
        if at_once:
            assert (await second.get("/orders", token)).status_code == 401
        else:

            async def refused() -> bool:
                return (await second.get("/orders", token)).status_code == 401

            await eventually(refused, message="the second process refuses the revoked token")
        assert await second.auth_error(token) == "revoked"
        other = await second.token("orders-service")
        assert (await first.get("/orders", other)).status_code == 200


async def test_revocation_seen_by_a_second_process_sharing_sqlite(
    run_gateway: RunFactory, tmp_path: Path
) -> None:
    await _revocation_is_shared(run_gateway, data_dir=tmp_path / "shared")
    assert (tmp_path / "shared" / "revocations.db").exists()


@pytest.mark.parametrize("staleness_s", [0.0, 1.0])
async def test_revocation_seen_by_a_second_process_sharing_redis(
    run_gateway: RunFactory, redis_url: str, redis_prefix: str, staleness_s: float
) -> None:
    await _revocation_is_shared(
        run_gateway,
        at_once=staleness_s == 0,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        revocation_staleness_s=staleness_s,
    )


async def test_sqlite_store_round_trip_and_pruning(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    a, b = SqliteRevocationStore(path), SqliteRevocationStore(path)
    await a.open()
    await b.open()
    try:
        assert not await b.is_revoked("j1")
        await a.revoke("j1", time.time() + 60)
        assert await b.is_revoked("j1")
        await a.revoke("old", time.time() - 7200)  # long expired: pruned on the next write
        await a.revoke("j2", time.time() + 60)
        assert not await b.is_revoked("old")
    finally:
        await a.close()
        await b.close()


async def test_redis_store_keys_expire_with_the_token(redis_url: str, redis_prefix: str) -> None:
    store = RedisRevocationStore(redis_url, prefix=redis_prefix)
    client = aioredis.Redis.from_url(redis_url)
    await store.open()
    try:
        await store.revoke("j1", time.time() + 60)
        assert await store.is_revoked("j1")
        assert not await store.is_revoked("j2")
        ttl = await client.ttl(f"{redis_prefix}revoked:j1")
        assert 0 < ttl <= 121
    finally:
        await store.close()
        await client.aclose()
