"""The operation store on SQLite, Redis and PostgreSQL: idempotency states, xrefs, the outbox
contract."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from gateway.stores.operations import (
    RedisOperationStore,
    SqliteOperationStore,
    open_operation_store,
)
from gateway.stores.postgres_records import PostgresOperationStore
from process_apis.ports import BeginState, DomainEvent, Outcome, StoredResponse
from system_apis.sandbox import seed
from tests.conftest import SandboxThread
from tests.process.harness import running_gateway


@pytest.fixture(params=["sqlite", "redis", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "sqlite":
        s: Any = SqliteOperationStore(tmp_path / "trellis.db")
    elif request.param == "postgres":
        s = PostgresOperationStore(request.getfixturevalue("database_url"))
    else:
        url = request.getfixturevalue("redis_url")
        s = RedisOperationStore(url, prefix=request.getfixturevalue("redis_prefix"))
    await s.open()
    yield s
    await s.close()


async def outbox_of(store: Any) -> list[dict[str, Any]]:
    if isinstance(store, SqliteOperationStore):
        conn = sqlite3.connect(store.path)
        rows = conn.execute("SELECT id, type, subject, event FROM outbox ORDER BY seq").fetchall()
        conn.close()
        return [{"id": r[0], "type": r[1], "subject": r[2], **orjson.loads(r[3])} for r in rows]
    if isinstance(store, PostgresOperationStore):
        conn = await asyncpg.connect(store.url)
        found = await conn.fetch("SELECT id, type, subject, event FROM outbox ORDER BY seq")
        await conn.close()
        return [{"id": r[0], "type": r[1], "subject": r[2], **orjson.loads(r[3])} for r in found]
    r = aioredis.Redis.from_url(store.url)
    entries = await r.xrange(store.stream)
    await r.aclose()
    out = []
    for _, fields in entries:
        assert fields[b"id"] == orjson.loads(fields[b"event"])["id"].encode()
        out.append({"type": fields[b"type"].decode(), **orjson.loads(fields[b"event"])})
    return out


async def test_idempotency_lifecycle(store: Any) -> None:
    assert (await store.begin("k1", "fp")).state is BeginState.NEW
    assert (await store.begin("k1", "fp")).state is BeginState.IN_PROGRESS
    assert (await store.begin("k1", "other")).state is BeginState.MISMATCH
    await store.commit(Outcome(idempotency_key="k1", response=StoredResponse(201, {"id": "1"})))
    done = await store.begin("k1", "fp")
    assert done.state is BeginState.DONE and done.response == StoredResponse(201, {"id": "1"})
    assert (await store.begin("k1", "other")).state is BeginState.MISMATCH


async def test_release_lets_a_retry_run(store: Any) -> None:
    assert (await store.begin("k2", "fp")).state is BeginState.NEW
    await store.release("k2")
    assert (await store.begin("k2", "fp")).state is BeginState.NEW


async def test_concurrent_begin_has_one_winner(store: Any) -> None:
    results = await asyncio.gather(*(store.begin("k3", "fp") for _ in range(20)))
    assert [r.state for r in results].count(BeginState.NEW) == 1


async def test_commit_writes_xrefs_and_events_together(store: Any) -> None:
    event = DomainEvent(type="order.placed", subject="4500000001", data={"x": 1})
    await store.commit(
        Outcome(xrefs={"003A": {"erp": "0000100001", "billing": "cus_1"}}, events=[event])
    )
    assert await store.xrefs("003A") == {"erp": "0000100001", "billing": "cus_1"}
    assert await store.customer_for("billing", "cus_1") == "003A"
    assert await store.customer_for("billing", "nope") is None
    assert await store.xrefs("unknown") == {}
    [stored] = await outbox_of(store)
    assert stored["id"] == event.id and stored["type"] == "order.placed"
    assert DomainEvent.model_validate(stored).data == {"x": 1}


async def test_open_operation_store_picks_sqlite_without_redis(tmp_path: Path) -> None:
    s = await open_operation_store(None, tmp_path)
    assert isinstance(s, SqliteOperationStore) and (tmp_path / "trellis.db").exists()
    await s.close()


async def test_open_operation_store_picks_postgres_when_configured(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    s = await open_operation_store(redis_url, tmp_path, database_url=database_url)
    assert isinstance(s, PostgresOperationStore) and not (tmp_path / "trellis.db").exists()
    await s.close()


async def test_orders_through_a_redis_backed_gateway(
    sandbox: SandboxThread,
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
    clean_sandbox: SandboxThread,
) -> None:
    """Keys, xrefs and events in Redis: the replay comes from Redis, the event is on the stream."""
    p = seed.people()[400]
    sku = next(s.sku for s in seed.skus() if s.on_hand >= 150)
    req = {"customer_id": p.crm_contact_id, "lines": [{"sku": sku, "quantity": 1}]}
    hdr = {"Idempotency-Key": uuid.uuid4().hex}
    shared = {"redis_url": redis_url, "redis_prefix": redis_prefix}
    async with running_gateway(sandbox, tmp_path, gateway=shared) as gw:
        assert isinstance(gw.process.store, RedisOperationStore)
        status, _, first = await gw.call("POST", "/process/v1/orders", json=req, headers=hdr)
        assert status == 201, first
        status, headers, again = await gw.call("POST", "/process/v1/orders", json=req, headers=hdr)
        assert status == 201 and again == first and headers["Idempotent-Replayed"] == "true"
        r = aioredis.Redis.from_url(redis_url)
        entries = await r.xrange(f"{redis_prefix}events")
        await r.aclose()
        subjects = [
            orjson.loads(f[b"event"])["subject"]
            for _, f in entries
            if f[b"type"] == b"order.placed"
        ]
        assert subjects.count(first["id"]) == 1
