"""Overload: past its limit of requests in progress a worker answers a fast 503, never queues.

A real gateway served by uvicorn, in front of a sandbox backend held slow by a fault
(``response_ms``), is sent many times its limit at once. Every request gets its normal answer
or a 503 problem with ``Retry-After``; the worker never holds more than its limit; the
refusals come back before any admitted request could (they never wait for the backend), and
health probes are still answered at the limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from gateway.app import Gateway, create_app
from tests.conftest import SandboxThread
from tests.gateway.helpers import test_settings, token
from tests.servers import serve

LIMIT = 6
BACKEND_MS = 1000
ROUTE = "/system/v1/inventory/stock/SKU-0001"


@dataclass
class Answer:
    status: int
    elapsed_s: float
    retry_after: str | None
    content_type: str
    problem_type: str | None


@pytest.fixture
async def gateway(
    clean_sandbox: SandboxThread, tmp_path: Path
) -> AsyncIterator[tuple[Gateway, str, str]]:
    settings = test_settings(
        clean_sandbox.base_port,
        tmp_path,
        gateway={"admission": {"max_in_flight": LIMIT, "retry_after_s": 2}},
    )
    app = create_app(settings)
    async with serve(app) as url:
        bearer = await token(url, "test-everything", "system:read admin")
        await clean_sandbox.set_faults("inventory", response_ms=BACKEND_MS)
        yield app, url, bearer


async def call(session: aiohttp.ClientSession, url: str, bearer: str) -> Answer:
    started = time.monotonic()
    async with session.get(url, headers={"Authorization": f"Bearer {bearer}"}) as r:
        body = await r.json(content_type=None)
        return Answer(
            r.status,
            time.monotonic() - started,
            r.headers.get("Retry-After"),
            r.headers.get("Content-Type", ""),
            body.get("type") if isinstance(body, dict) else None,
        )


async def test_many_times_the_limit_gets_answers_or_fast_503s(
    gateway: tuple[Gateway, str, str],
) -> None:
    app, url, bearer = gateway
    connector = aiohttp.TCPConnector(limit=0)  # every request on its own connection, at once
    async with aiohttp.ClientSession(connector=connector) as s:
        answers = await asyncio.gather(*(call(s, url + ROUTE, bearer) for _ in range(8 * LIMIT)))

    admitted = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status == 503]
    assert len(admitted) + len(refused) == len(answers), sorted({a.status for a in answers})
    assert len(admitted) >= LIMIT and refused  # the limit was used whole, the rest refused
    for a in refused:
        assert a.retry_after == "2"
        assert a.content_type.startswith("application/problem+json")
        assert a.problem_type is not None and a.problem_type.endswith("/overloaded")
    # never more in progress than the limit, and nothing left held
    assert app.admission.peak == LIMIT
    assert app.admission.in_flight == 0
    assert app.admission.rejected == len(refused)
    # a refusal never waits for the backend: each came back before any admitted answer did
    assert max(a.elapsed_s for a in refused) < min(a.elapsed_s for a in admitted)


async def test_probes_and_metrics_answer_at_the_limit(gateway: tuple[Gateway, str, str]) -> None:
    app, url, bearer = gateway
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as s:
        slow = [asyncio.create_task(call(s, url + ROUTE, bearer)) for _ in range(LIMIT)]
        for _ in range(500):  # until the slow requests hold every place
            if app.admission.in_flight >= LIMIT:
                break
            await asyncio.sleep(0.01)
        over = await call(s, url + ROUTE, bearer)
        async with s.get(url + "/healthz") as health:
            health_status = health.status
        async with s.get(url + "/metrics", headers={"Authorization": f"Bearer {bearer}"}) as m:
            metrics_status, metrics = m.status, await m.text()
        held = app.admission.in_flight
        answers = await asyncio.gather(*slow)
    assert over.status == 503
    assert held == LIMIT  # the probes were answered while every place was held
    assert health_status == 200
    assert metrics_status == 200
    assert 'trellis_admission_rejections_total{limit="in_flight"} 1.0' in metrics
    assert [a.status for a in answers] == [200] * LIMIT
