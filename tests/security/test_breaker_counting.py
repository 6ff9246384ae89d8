"""What a circuit breaker counts: only failures that are the backend's.

A breaker is shared by every caller, so anything one caller can cause on its own must not
count: the vendor's 4xx answers to our request, input refused before a call, and our own
concurrency and pacing limits refusing a call. Timeouts, connection failures and 5xx count.
"""

from __future__ import annotations

import asyncio

from system_apis.errors import BackendNotFound, BackendUnavailable
from system_apis.resilience import BreakerState
from tests.system.test_client_resilience import Backend, backend, make_client

__all__ = ["backend"]  # the fixture, re-used

BREAKER = {"failure_threshold": 2, "reset_timeout_s": 30}


async def test_vendor_4xx_answers_never_open_the_breaker(backend: Backend) -> None:
    c = make_client(backend.url, breaker=BREAKER)
    await c.start()
    try:
        for _ in range(10):
            try:
                await c.request("GET", "/missing")
            except BackendNotFound:
                pass
        assert c.breaker.state is BreakerState.CLOSED
        assert (await c.request("GET", "/items")).status == 200
    finally:
        await c.close()


async def test_a_full_bulkhead_does_not_open_the_breaker(backend: Backend) -> None:
    """One caller's burst fills the bulkhead: the excess is refused, the backend is healthy."""
    c = make_client(
        backend.url,
        breaker=BREAKER,
        max_concurrency=1,
        retry={"max_attempts": 1},
        timeouts={"connect_s": 0.05, "read_s": 2, "total_s": 3},
    )
    await c.start()
    try:
        holder = asyncio.create_task(c.request("GET", "/slow", params={"s": "0.8"}))
        await asyncio.sleep(0.1)  # the one slot is taken
        for _ in range(5):
            try:
                await c.request("GET", "/items")
                raise AssertionError("the bulkhead let a second call through")
            except BackendUnavailable as exc:
                assert "bulkhead" in exc.detail, exc
        assert c.breaker.state is BreakerState.CLOSED  # checked while the slot is still held
        assert (await holder).status == 200
        assert (await c.request("GET", "/items")).status == 200  # another caller gets through
    finally:
        await c.close()


async def test_a_full_pacer_queue_does_not_open_the_breaker(backend: Backend) -> None:
    c = make_client(
        backend.url,
        breaker=BREAKER,
        retry={"max_attempts": 1},
        rate_limit={"rate": 1, "period_s": 10, "burst": 1},
        timeouts={"connect_s": 1, "read_s": 0.3, "total_s": 0.2},
    )
    await c.start()
    try:
        assert (await c.request("GET", "/items")).status == 200
        for _ in range(4):
            try:
                await c.request("GET", "/items")
            except BackendUnavailable as exc:
                assert "rate limit" in exc.detail
        assert c.breaker.state is BreakerState.CLOSED
    finally:
        await c.close()


async def test_backend_failures_still_open_it(backend: Backend) -> None:
    c = make_client(backend.url, breaker=BREAKER, retry={"max_attempts": 1})
    await c.start()
    try:
        backend.state.faults.error_rate = 1.0
        for _ in range(2):
            try:
                await c.request("GET", "/items")
            except BackendUnavailable:
                pass
        assert c.breaker.state is BreakerState.OPEN
    finally:
        backend.state.faults.error_rate = 0.0
        await c.close()
