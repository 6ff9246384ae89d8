"""Sandbox latency faults: ``latency_ms`` adds to a response, ``response_ms`` sets its time."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from tests.conftest import SandboxThread

KEY = {"X-Api-Key": "inv-sandbox-key"}


async def _timed_get(session: aiohttp.ClientSession, url: str) -> float:
    started = time.perf_counter()
    async with session.get(url, headers=KEY) as r:
        await r.read()
        assert r.status == 200
    return time.perf_counter() - started


async def test_response_ms_is_a_floor_including_the_sandboxes_own_work(
    clean_sandbox: SandboxThread,
) -> None:
    url = clean_sandbox.url("inventory") + "/v1/stock/SKU-0001"
    async with aiohttp.ClientSession() as s:
        await _timed_get(s, url)  # warm the connection
        await clean_sandbox.set_faults("inventory", response_ms=150)
        alone = await _timed_get(s, url)
        together = await asyncio.gather(*(_timed_get(s, url) for _ in range(8)))
        await clean_sandbox.set_faults("inventory", latency_ms=150)
        added = await _timed_get(s, url)
    assert 0.15 <= alone < 0.3
    # concurrent requests each answer at their own floor: the work of the others is inside it
    assert all(0.15 <= t < 0.3 for t in together)
    assert added >= 0.15
