"""Shared limits in synced mode: decided on local counters, synced to Redis in batches.

The accuracy bound (docs/decisions.md): N processes exceed a limit by at most what the other
N - 1 admit between two syncs, never more than (N - 1) x the quota per window. Exact mode and
a route's ``exact: true`` spend the shared counters on every request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from tests.eventually import eventually
from tests.policies.test_ratelimit import (
    as_client,
    config,
    fresh_id,
    gateway_process,
    running,
    wait_ready,
)
from tests.servers import free_port


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def synced_total(client: aioredis.Redis, prefix: str, who: str) -> int:
    """The global count of ``who`` in Redis (its synced keys' values summed)."""
    keys = [k async for k in client.scan_iter(match=f"{prefix}limits:synced:*{who}*")]
    return sum(int(v or 0) for v in await client.mget(keys)) if keys else 0


def synced(quota: int, **overrides: Any) -> Any:
    base: dict[str, Any] = {
        "strategy": "sliding-window-counter",
        "tiers": {"default": {"sustained": f"{quota}/hour"}},
        "shared": {"mode": "synced", "sync_interval_ms": 100},
        "storage_timeout_ms": 2000,
    }
    base.update(overrides)
    return config(**base)


async def test_hits_reach_redis_in_one_batch_not_per_request(
    redis_url: str, redis_prefix: str, redis_client: aioredis.Redis
) -> None:
    cfg = synced(100, shared={"mode": "synced", "sync_interval_ms": 10_000})
    who = fresh_id()
    async with running(cfg, redis_url, redis_prefix) as (http, policy):
        assert policy.synced is not None
        for _ in range(20):
            r = await http.get("/items", headers=as_client(who))
            assert r.status_code == 200 and "ratelimit" in r.headers
        assert await synced_total(redis_client, redis_prefix, who) == 0  # nothing sent yet
        assert policy.synced.syncs == 0
        await policy.synced.sync()  # what the interval's tick does
        assert policy.synced.syncs == 1
        assert await synced_total(redis_client, redis_prefix, who) == 20
        stats = policy.stats()
    assert stats["shared"] is True and stats["storage_errors"] == {}


async def test_counts_synced_by_another_process_refuse_here(
    redis_url: str, redis_prefix: str
) -> None:
    """Two policies on one Redis (as two processes): what one admitted, the other counts."""
    quota = 10
    cfg = synced(quota, shared={"mode": "synced", "sync_interval_ms": 10_000})
    who = as_client(fresh_id())
    async with (
        running(cfg, redis_url, redis_prefix) as (a, pa),
        running(cfg, redis_url, redis_prefix) as (b, pb),
    ):
        assert pa.synced is not None and pb.synced is not None
        for _ in range(quota - 1):
            assert (await a.get("/items", headers=who)).status_code == 200
        await pa.synced.sync()
        assert (await b.get("/items", headers=who)).status_code == 200  # b's view: 0 + 1
        await pb.synced.sync()  # pushes its hit, pulls a's: the global count is the quota
        refused = await b.get("/items", headers=who)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1


async def test_an_exact_route_spends_redis_on_every_request(
    redis_url: str, redis_prefix: str
) -> None:
    cfg = synced(
        100,
        shared={"mode": "synced", "sync_interval_ms": 10_000},
        routes=[{"path": "/orders", "tiers": {"*": {"sustained": "2/hour"}}, "exact": True}],
    )
    async with (
        running(cfg, redis_url, redis_prefix) as (a, _),
        running(cfg, redis_url, redis_prefix) as (b, _),
    ):
        who = as_client(fresh_id())
        # no sync happens in this test: only per-request counting can refuse the third
        assert (await a.get("/orders", headers=who)).status_code == 200
        assert (await b.get("/orders", headers=who)).status_code == 200
        assert (await a.get("/orders", headers=who)).status_code == 429
        assert (await b.get("/orders", headers=who)).status_code == 429
        assert (await a.get("/items", headers=who)).status_code == 200  # the global set: synced


@pytest.mark.slow  # two uvicorn subprocesses
async def test_two_processes_stay_within_the_accuracy_bound(
    redis_url: str, redis_prefix: str, redis_client: aioredis.Redis
) -> None:
    quota = 40
    cfg = synced(quota)
    burst, after_sync = fresh_id(), fresh_id()
    with (
        gateway_process(cfg, redis_url, redis_prefix) as a,
        gateway_process(cfg, redis_url, redis_prefix) as b,
    ):
        async with httpx.AsyncClient(timeout=10) as http:
            await wait_ready(http, a)
            await wait_ready(http, b)

            # 1. a burst at both: together they admit at most quota + (N - 1) x quota
            responses = await asyncio.gather(
                *(
                    http.get((a, b)[i % 2] + "/items", headers=as_client(burst))
                    for i in range(3 * quota)
                )
            )
            codes = [r.status_code for r in responses]
            assert set(codes) <= {200, 429}
            assert quota <= codes.count(200) <= 2 * quota, codes

            # 2. once synced, both refuse
            async def both_refuse() -> bool:
                statuses = [
                    (await http.get(base + "/items", headers=as_client(burst))).status_code
                    for base in (a, b)
                ]
                return statuses == [429, 429]

            await eventually(both_refuse, message="both processes refuse once synced")

            # 3. a spends the whole quota; once that is in Redis, b admits only what it can
            # before its own next sync, far fewer than the quota it would admit alone
            for _ in range(quota):
                r = await http.get(a + "/items", headers=as_client(after_sync))
                assert r.status_code == 200

            async def all_synced() -> bool:
                return await synced_total(redis_client, redis_prefix, after_sync) == quota

            await eventually(all_synced, message="a's hits synced to Redis")
            admitted_by_b = 0

            async def b_refuses() -> bool:
                nonlocal admitted_by_b
                r = await http.get(b + "/items", headers=as_client(after_sync))
                admitted_by_b += r.status_code == 200
                return r.status_code == 429

            await eventually(b_refuses, message="b refuses what a spent")
            assert admitted_by_b < quota


async def test_redis_down_each_process_limits_alone_and_keeps_its_hits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed_port = free_port()  # nothing listens there
    cfg = synced(3, shared={"mode": "synced", "sync_interval_ms": 10_000}, fail_open=True)
    caplog.set_level(logging.WARNING, logger="trellis.ratelimit")
    who = as_client(fresh_id())
    async with running(cfg, f"redis://127.0.0.1:{closed_port}/0") as (http, policy):
        assert policy.synced is not None
        codes = [(await http.get("/items", headers=who)).status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]  # the local counters still limit
        await policy.synced.sync()
        await policy.synced.sync()
        assert policy.synced.failures == 2 and policy.synced.syncs == 0
        assert policy.stats()["storage_errors"] == {"synced": 2}
        # the hits not pushed are kept for the next sync
        assert policy.synced.pending_hits == 3
    failures = [r.getMessage() for r in caplog.records if "storage failed" in r.getMessage()]
    assert failures and "each process limits alone" in failures[0]
