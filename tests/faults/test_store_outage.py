"""A shared store (Redis) that goes away and comes back.

While it is down every call that needs it is a 503 problem ``store-unavailable`` with
``Retry-After`` (never a 500, never a dropped keep-alive connection); when it is back, the
first call on each pooled connection that went stale meanwhile succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from pathlib import Path

import aiohttp
import pytest

from system_apis.sandbox import seed
from tests.conftest import SandboxThread
from tests.faults.conftest import relayed_url
from tests.faults.tcp_proxy import TcpRelay
from tests.process.harness import assert_problem, running_gateway

pytestmark = pytest.mark.slow

PERSON = seed.people()[7]
TOKEN_FORM = {"grant_type": "client_credentials"}


def basic(client: str) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(client, f"{client}-secret")}


async def test_token_endpoint_while_redis_is_down_is_503_on_a_kept_connection(
    sandbox: SandboxThread,
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
    redis_relay: TcpRelay,
) -> None:
    url = relayed_url(redis_url, redis_relay)
    async with running_gateway(
        sandbox, tmp_path, gateway={"redis_url": url, "redis_prefix": redis_prefix}
    ) as gw:
        opened: list[object] = []

        async def count(*_: object) -> None:
            opened.append(object())

        trace = aiohttp.TraceConfig()
        trace.on_connection_create_end.append(count)
        connector = aiohttp.TCPConnector(limit=1)  # one connection: the keep-alive one
        async with aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as s:
            token = gw.url + "/oauth/token"
            async with s.post(token, data=TOKEN_FORM, headers=basic("web-app")) as r:
                assert r.status == 200, await r.text()
            await redis_relay.stop()
            async with s.post(token, data=TOKEN_FORM, headers=basic("web-app")) as r:
                body = await r.json(content_type=None)
                assert_problem(r.status, r.headers, body, 503)
                assert body["type"].endswith("/store-unavailable"), body
                assert int(r.headers["Retry-After"]) >= 1
            # the same connection answers the next request: the outage did not drop it
            async with s.get(gw.url + "/healthz") as r:
                assert r.status == 200
            assert len(opened) == 1

            await redis_relay.start()
            # the pooled Redis connections went stale: the first call after Redis returns succeeds
            async with s.post(token, data=TOKEN_FORM, headers=basic("web-app")) as r:
                assert r.status == 200, await r.text()


async def test_authenticated_calls_while_redis_is_down_are_503_problems(
    sandbox: SandboxThread,
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
    redis_relay: TcpRelay,
) -> None:
    url = relayed_url(redis_url, redis_relay)
    async with running_gateway(
        sandbox,
        tmp_path,
        gateway={"redis_url": url, "redis_prefix": redis_prefix},
        ratelimit={"enabled": True, "fail_open": False, "storage_timeout_ms": 2000},
    ) as gw:
        status, _, body = await gw.call("GET", f"/process/v1/customers/{PERSON.crm_contact_id}")
        assert status == 200, body
        await redis_relay.stop()
        status, headers, body = await gw.call(
            "GET", f"/process/v1/customers/{PERSON.crm_contact_id}"
        )
        assert_problem(status, headers, body, 503)
        assert "Retry-After" in headers
        await redis_relay.start()
        await asyncio.sleep(0)
        status, _, body = await gw.call("GET", f"/process/v1/customers/{PERSON.crm_contact_id}")
        assert status == 200, body


async def test_a_locked_sqlite_store_is_503_and_the_retry_completes_once(
    sandbox: SandboxThread, tmp_path: Path
) -> None:
    """SQLite held by another writer (``BEGIN EXCLUSIVE``) past the busy timeout: a 503 problem
    naming the store, nothing done at any backend; the retry with the same key places one order."""
    async with running_gateway(sandbox, tmp_path) as gw:
        sku = next(s.sku for s in seed.skus() if s.on_hand >= 150)
        req = {"customer_id": PERSON.crm_contact_id, "lines": [{"sku": sku, "quantity": 1}]}
        hdr = {"Idempotency-Key": uuid.uuid4().hex}
        db = Path(gw.settings.gateway.data_dir) / "trellis.db"
        holder = sqlite3.connect(db, isolation_level=None)
        with contextlib.closing(holder):
            holder.execute("BEGIN EXCLUSIVE")
            status, headers, body = await gw.call(
                "POST", "/process/v1/orders", json=req, headers=hdr
            )
            holder.execute("ROLLBACK")
        assert_problem(status, headers, body, 503)
        assert body["type"].endswith("/store-unavailable"), body
        assert int(headers["Retry-After"]) >= 1
        assert gw.outbox("order.placed") == []
        status, _, order = await gw.call("POST", "/process/v1/orders", json=req, headers=hdr)
        assert status == 201, order
        placed = gw.outbox("order.placed")
        assert [e["subject"] for e in placed] == [order["id"]]
