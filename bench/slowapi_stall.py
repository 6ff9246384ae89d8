"""How long a 300 ms Redis stall freezes the event loop: slowapi 0.1.10 vs our limits.aio policy.

Each variant serves a small Starlette app with uvicorn on loopback, in this process's loop.
A probe task sleeps 5 ms repeatedly and records the worst overshoot (= the longest time the
loop could not run anything else) while four callers hit a rate-limited route and Redis is
frozen with ``CLIENT PAUSE 300 ALL`` (the server here refuses ``DEBUG SLEEP``).

    .venv/bin/python bench/slowapi_stall.py [redis://127.0.0.1:6379/15] [rounds]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.policies.ratelimit import (
    RateLimitConfig,
    RateLimitMiddleware,
    RateLimitPolicy,
)
from tests.servers import serve

LIMIT = "100000/hour"


async def items(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def slowapi_app(redis_url: str) -> Starlette:
    """slowapi at its best: its pure ASGI middleware (not the BaseHTTPMiddleware one)."""
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.middleware import SlowAPIASGIMiddleware
    from slowapi.util import get_remote_address

    limiter = Limiter(
        key_func=get_remote_address,
        storage_uri=redis_url,
        default_limits=[LIMIT],
        key_prefix="bench-" + uuid.uuid4().hex[:8],
    )
    app = Starlette(
        routes=[Route("/items", items)],
        middleware=[Middleware(SlowAPIASGIMiddleware)],
        exception_handlers={RateLimitExceeded: _rate_limit_exceeded_handler},  # type: ignore[dict-item]
    )
    app.state.limiter = limiter
    return app


def limits_aio_app(redis_url: str, timeout_ms: float = 50) -> Starlette:
    cfg = RateLimitConfig(
        strategy="fixed-window",
        unauthenticated={"sustained": LIMIT},
        namespace="bench-" + uuid.uuid4().hex[:8],
        storage_timeout_ms=timeout_ms,
    )
    policy = RateLimitPolicy(cfg, redis_url)
    return Starlette(
        routes=[Route("/items", items)],
        middleware=[Middleware(RateLimitMiddleware, policy=policy)],
    )


async def one_round(make: Callable[[str], Starlette], redis_url: str) -> tuple[float, float, int]:
    """(worst loop lag before the stall, during it, requests served) in one stall."""
    admin = aioredis.Redis.from_url(redis_url)
    async with serve(make(redis_url)) as url, httpx.AsyncClient(base_url=url) as http:
        for _ in range(20):  # warm the connection pools and the scripts
            (await http.get("/items")).raise_for_status()
        lag = 0.0
        stop = asyncio.Event()

        async def probe() -> None:
            nonlocal lag
            while not stop.is_set():
                t0 = time.perf_counter()
                await asyncio.sleep(0.005)
                lag = max(lag, time.perf_counter() - t0 - 0.005)

        served = 0

        async def caller() -> None:
            nonlocal served
            end = time.perf_counter() + 0.45
            while time.perf_counter() < end:
                await http.get("/items")
                served += 1

        task = asyncio.create_task(probe())
        await asyncio.gather(*(caller() for _ in range(2)))
        before, lag = lag, 0.0
        await admin.execute_command("CLIENT", "PAUSE", "300", "ALL")  # type: ignore[no-untyped-call]
        await asyncio.gather(*(caller() for _ in range(4)))
        stop.set()
        await task
    await admin.aclose()
    return before, lag, served


async def main() -> None:
    redis_url = sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/15"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    variants: list[tuple[str, Callable[[str], Starlette]]] = [
        ("slowapi 0.1.10 SlowAPIASGIMiddleware (sync limits storage)", slowapi_app),
        ("limits.aio RateLimitMiddleware, 50 ms budget (fails open)", limits_aio_app),
        (
            "limits.aio RateLimitMiddleware, 1 s budget (waits for Redis)",
            lambda url: limits_aio_app(url, timeout_ms=1000),
        ),
    ]
    for name, make in variants:
        results = [await one_round(make, redis_url) for _ in range(rounds)]
        before = max(r[0] for r in results) * 1000
        during = [r[1] * 1000 for r in results]
        print(
            f"{name}: worst loop stall during a 300 ms Redis pause: "
            f"median {statistics.median(during):.1f} ms, max {max(during):.1f} ms "
            f"(no pause: max {before:.1f} ms) over {rounds} rounds"
        )


if __name__ == "__main__":
    asyncio.run(main())
