"""The gateway's Redis stores. Every key they write starts with ``gateway.redis_prefix``, so
deployments (and test runs) sharing one Redis database never read or overwrite each other's
data; and a stalled Redis fails a call within the client's own socket timeout."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from joserfc import jws
from redis.exceptions import RedisError

from gateway.events.component import open_store
from gateway.events.redis_store import RedisEventStore
from gateway.stores.operations import RedisOperationStore, open_operation_store
from gateway.stores.revocations import RedisRevocationStore
from process_apis.ports import DomainEvent, Outcome
from system_apis.sandbox import seed
from tests.conftest import SandboxThread
from tests.eventually import eventually
from tests.gateway.helpers import test_settings
from tests.process.harness import running_gateway


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield r
    await r.aclose()


async def keys_matching(client: aioredis.Redis, pattern: str) -> list[str]:
    return [k async for k in client.scan_iter(match=pattern, count=1000)]


async def test_two_prefixes_on_one_database_see_only_their_own_data(
    redis_url: str, redis_prefix: str, tmp_path: Path, client: aioredis.Redis
) -> None:
    stores: list[RedisOperationStore] = []
    events: list[DomainEvent] = []
    for name in ("a", "b"):
        store = await open_operation_store(
            redis_url, tmp_path, redis_prefix=f"{redis_prefix}{name}:"
        )
        assert isinstance(store, RedisOperationStore)
        stores.append(store)
        event = DomainEvent(type="order.placed", subject="4500000001", data={"run": name})
        events.append(event)
        # the same customer id and order subject in both, as two runs seeded alike would write
        await store.commit(
            Outcome(idempotency_key="k", xrefs={"003X": {"erp": name}}, events=[event])
        )
    try:
        for name, store, event in zip(("a", "b"), stores, events, strict=True):
            assert await store.xrefs("003X") == {"erp": name}
            assert await store.customer_for("erp", name) == "003X"
            entries = await client.xrange(store.stream)
            assert [fields["id"] for _, fields in entries] == [event.id]
            # the event bus of that prefix reads the stream the operation store writes
            bus_store = RedisEventStore(redis_url, prefix=f"{redis_prefix}{name}:")
            assert bus_store.keys.events == store.stream
            await bus_store.redis.aclose()
        assert await store.customer_for("erp", "a") is None  # b never sees a's cross-reference
    finally:
        for store in stores:
            await store.close()


def test_the_default_prefix_keeps_the_key_names_of_existing_deployments(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    settings = test_settings(sandbox.base_port, tmp_path, gateway={"redis_url": "redis://x/0"})
    assert settings.gateway.redis_prefix == "trellis:"
    store = open_store(settings)
    assert isinstance(store, RedisEventStore)
    assert store.keys.events == "trellis:events"
    assert store.keys.dlq == "trellis:dlq"
    assert RedisOperationStore("redis://x/0").stream == "trellis:events"


@pytest.mark.slow  # a whole gateway and its bus
async def test_every_key_a_redis_backed_gateway_writes_starts_with_its_prefix(
    sandbox: SandboxThread,
    clean_sandbox: SandboxThread,
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
    client: aioredis.Redis,
) -> None:
    """Tokens (brute-force limits), rate limits, an order (idempotency key, cross-references,
    the event and its deliveries) and a revocation: each lands under the prefix only."""
    person = seed.people()[401]
    sku = next(s.sku for s in seed.skus() if s.on_hand >= 150)
    idempotency_key = uuid.uuid4().hex
    async with running_gateway(
        sandbox,
        tmp_path,
        gateway={"redis_url": redis_url, "redis_prefix": redis_prefix},
        ratelimit={"enabled": True},
    ) as gw:
        status, _, order = await gw.call(
            "POST",
            "/process/v1/orders",
            json={"customer_id": person.crm_contact_id, "lines": [{"sku": sku, "quantity": 1}]},
            headers={"Idempotency-Key": idempotency_key},
        )
        assert status == 201, order
        revoked = gw.tokens["web-app"]
        jti = orjson.loads(jws.extract_compact(revoked.encode()).payload)["jti"]
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                gw.url + "/oauth/revoke",
                data={"token": revoked},
                headers={"Authorization": aiohttp.encode_basic_auth("web-app", "web-app-secret")},
            ) as r,
        ):
            assert r.status == 200, await r.text()

        async def delivered() -> list[str]:
            return await keys_matching(client, f"{redis_prefix}done:*")

        await eventually(delivered, message="the order's event delivered through Redis")

    ours = set(await keys_matching(client, f"{redis_prefix}*"))
    for expected in (
        f"{redis_prefix}limits:*",
        f"{redis_prefix}revoked:*",
        f"{redis_prefix}idem:*{idempotency_key}",  # the key scoped by its caller
        f"{redis_prefix}xref:*",
        f"{redis_prefix}xref-of:*",
        f"{redis_prefix}events",
        f"{redis_prefix}state:*",
    ):
        assert await keys_matching(client, expected), (expected, sorted(ours))
    # nothing about the order or the revocation was written anywhere else in the database
    for unique in (idempotency_key, jti):
        elsewhere = [k for k in await keys_matching(client, f"*{unique}*") if k not in ours]
        assert elsewhere == [], elsewhere


@pytest.mark.slow  # waits out the Redis socket timeout
async def test_stalled_redis_fails_fast_instead_of_hanging(silent_redis: str) -> None:
    revocations = RedisRevocationStore(silent_redis)
    operations = RedisOperationStore(silent_redis)
    for call in (revocations.is_revoked("jti-1"), operations.xrefs("cust-1")):
        with pytest.raises(RedisError):  # the client's own socket timeout, within ~1 s ...
            await asyncio.wait_for(call, 5)  # ... long before this guard would fire
