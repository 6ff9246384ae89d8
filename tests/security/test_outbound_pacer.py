"""The outbound pacer's timeout covers the whole wait, queueing included.

A caller that asks for a token within ``timeout_s`` must either get it within that time or be
refused at once: waiting in the queue behind other callers counts against its deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from system_apis.config import VendorRateLimit
from system_apis.errors import BackendUnavailable
from system_apis.resilience import BreakerState, OutboundPacer
from tests.system.test_client_resilience import Backend, make_client


class SteppedClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_eight_callers_with_one_second_timeout_none_served_after_its_deadline() -> None:
    # 2.5 tokens a second, burst 1: tokens are due at 0, 0.4, 0.8, 1.2 ... s; with a 1 s
    # timeout only the first three callers can be served in time.
    pacer = OutboundPacer(VendorRateLimit(rate=2.5, period_s=1, burst=1))
    order: list[tuple[int, bool]] = []

    async def caller(n: int) -> None:
        order.append((n, await pacer.acquire(timeout_s=1.0)))

    await asyncio.gather(*(caller(n) for n in range(8)))

    granted = [n for n, ok in order if ok]
    refused = [n for n, ok in order if not ok]
    assert sorted(granted) == [0, 1, 2]
    assert sorted(refused) == [3, 4, 5, 6, 7]
    # the refusals are known at arrival: every refused caller is answered before the callers
    # that wait for their token (1 and 2) are served
    assert [n for n, _ in order[:6]] == [0, 3, 4, 5, 6, 7]


def test_reserved_waits_include_the_callers_queued_ahead() -> None:
    clock = SteppedClock()
    pacer = OutboundPacer(VendorRateLimit(rate=2, period_s=1, burst=2), clock=clock)
    waits = [pacer.reserve(timeout_s=1.0) for _ in range(6)]
    # two from the burst, then one every 0.5 s; the fifth would wait 1.5 s > 1 s
    assert waits == [0.0, 0.0, 0.5, 1.0, None, None]
    clock.now += 1.0  # the two reserved tokens have come due: the bucket is empty again
    assert pacer.reserve(timeout_s=0.0) is None
    assert pacer.reserve(timeout_s=0.5) == 0.5


def test_a_refused_caller_takes_nothing_and_a_cancelled_one_gives_its_token_back() -> None:
    clock = SteppedClock()
    pacer = OutboundPacer(VendorRateLimit(rate=1, period_s=1, burst=1), clock=clock)
    assert pacer.reserve(timeout_s=0.0) == 0.0
    assert pacer.reserve(timeout_s=0.5) is None  # refused: the next wait is still 1 s
    assert pacer.reserve(timeout_s=1.0) == 1.0
    pacer.cancel()  # that caller gave up: the next one waits as if it had never come
    assert pacer.reserve(timeout_s=1.0) == 1.0


async def test_a_cancelled_waiter_frees_its_place() -> None:
    pacer = OutboundPacer(VendorRateLimit(rate=2, period_s=1, burst=1))
    assert await pacer.acquire(timeout_s=1.0)
    waiter = asyncio.create_task(pacer.acquire(timeout_s=1.0))  # due in 0.5 s
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    wait = pacer.reserve(timeout_s=1.0)
    assert wait is not None and wait <= 0.5  # not behind the cancelled caller's token


@pytest.fixture
async def vendor() -> AsyncIterator[Backend]:
    b = Backend()
    await b.runner.setup()
    await web.TCPSite(b.runner, "127.0.0.1", b.port).start()
    yield b
    await b.runner.cleanup()


async def test_a_client_refused_by_its_pacer_fails_fast_without_blaming_the_backend(
    vendor: Backend,
) -> None:
    """Refused by the pacer, a call is not sent: no retry (the queue is as long a moment
    later) and no breaker failure (the vendor did nothing wrong)."""
    c = make_client(
        vendor.url,
        rate_limit={"rate": 2.5, "period_s": 1, "burst": 1},
        breaker={"failure_threshold": 3, "reset_timeout_s": 30},
    )  # timeouts.total_s is 1 s: three of eight calls fit in it
    await c.start()
    try:
        results = await asyncio.gather(
            *(c.request("GET", "/items") for _ in range(8)), return_exceptions=True
        )
    finally:
        await c.close()
    refused = [r for r in results if isinstance(r, BackendUnavailable)]
    assert len(refused) == 5 and len(results) - len(refused) == 3
    assert vendor.hits("GET /items") == 3
    assert c.stats.retries == 0
    assert c.breaker.state is BreakerState.CLOSED
