"""CPU per shared rate-limit decision against a real Redis, exact and synced, in one process.

    python -m bench.redis_client [--redis redis://127.0.0.1:6379/14] [-n 20000] [-c 64]

``-c`` decisions run concurrently (as under load). Reports whether redis-py parses with
hiredis, so the same command run with and without the ``hiredis`` package installed shows
what the parser saves (docs/performance.md, "Scale-out on Redis").
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
import uuid
from typing import Any

from redis.utils import HIREDIS_AVAILABLE

from gateway.policies.ratelimit import RateLimitConfig, RateLimitPolicy
from gateway.principal import PRINCIPAL_KEY, Principal


def scope_of(client_id: str) -> dict[str, Any]:
    principal = Principal(
        client_id=client_id,
        scopes=frozenset(),
        tier="default",
        issuer="bench",
        subject=client_id,
        token_id=None,
        expires_at=math.inf,
    )
    return {"type": "http", "path": "/items", "method": "GET", PRINCIPAL_KEY: principal}


async def run(mode: str, url: str, n: int, concurrency: int) -> float:
    """CPU microseconds per decision (process time: this process's own work only)."""
    config = RateLimitConfig(
        strategy="sliding-window-counter",
        tiers={"default": {"burst": "1000000000/second", "sustained": "1000000000/minute"}},
        namespace="bench" + uuid.uuid4().hex[:8],
        storage_timeout_ms=5000,
        shared={"mode": mode, "sync_interval_ms": 100},
    )
    policy = RateLimitPolicy(config, url, redis_prefix=f"bench-{uuid.uuid4().hex[:8]}:")
    await policy.start()
    scopes = [scope_of(f"client-{i}") for i in range(concurrency)]

    async def worker(scope: dict[str, Any], count: int) -> None:
        for _ in range(count):
            decision = await policy.check(scope)
            assert decision.allowed and not decision.storage_failed

    try:
        await asyncio.gather(*(worker(s, 50) for s in scopes))  # warm: pool and scripts
        cpu0 = time.process_time()
        await asyncio.gather(*(worker(s, n // concurrency) for s in scopes))
        spent = time.process_time() - cpu0
    finally:
        await policy.close()
    return spent / (n // concurrency * concurrency) * 1e6


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.redis_client", description=__doc__)
    p.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    p.add_argument("-n", type=int, default=20_000, help="decisions per mode")
    p.add_argument("-c", type=int, default=64, help="concurrent callers")
    a = p.parse_args()
    print(f"hiredis parser: {'yes' if HIREDIS_AVAILABLE else 'no'}")
    for mode in ("exact", "synced"):
        us = asyncio.run(run(mode, a.redis, a.n, a.c))
        print(f"  {mode:<6} {us:8.1f} us CPU per decision (2 limits, {a.c} concurrent)")


if __name__ == "__main__":
    main()
