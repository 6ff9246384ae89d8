"""The shared client base against a real aiohttp backend on loopback, with injected faults."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from system_apis.client import BackendClient
from system_apis.config import BackendConfig, BreakerPolicy, VendorRateLimit
from system_apis.errors import (
    BackendNotFound,
    BackendTimeout,
    BackendUnavailable,
    BadBackendData,
    CircuitOpen,
)
from system_apis.resilience import BreakerState, CircuitBreaker, OutboundPacer, parse_retry_after
from system_apis.sandbox.faults import Faults, FaultState, install_faults
from tests.eventually import eventually
from tests.servers import free_port


class Backend:
    """A tiny vendor: /items answers JSON, /slow sleeps, /missing 404s; faults injectable."""

    def __init__(self) -> None:
        self.state = FaultState(Faults())
        self.app = web.Application()
        self.posts = 0
        self.app.add_routes(
            [
                web.get("/items", self.items),
                web.post("/items", self.create),
                web.get("/slow", self.slow),
                web.get("/missing", self.missing),
                web.get("/xml", self.xml),
            ]
        )
        install_faults(self.app, self.state)
        self.port = free_port()
        self.runner = web.AppRunner(self.app, access_log=None)

    async def items(self, request: web.Request) -> web.Response:
        return web.json_response({"items": [1, 2, 3]})

    async def create(self, request: web.Request) -> web.Response:
        self.posts += 1
        return web.json_response({"id": self.posts}, status=201)

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "2")))
        return web.json_response({})

    async def missing(self, request: web.Request) -> web.Response:
        return web.json_response({"message": "no such item"}, status=404)

    async def xml(self, request: web.Request) -> web.Response:
        return web.Response(body=b"<a><b>1</b></a>", content_type="application/xml")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def hits(self, key: str) -> int:
        return self.state.hits[key]


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = Backend()
    await b.runner.setup()
    await web.TCPSite(b.runner, "127.0.0.1", b.port).start()
    yield b
    await b.runner.cleanup()


def make_client(url: str, **cfg: Any) -> BackendClient:
    base: dict[str, Any] = {
        "base_url": url,
        "retry": {"max_attempts": 3, "base_delay_s": 0.001, "max_delay_s": 0.01},
        "timeouts": {"connect_s": 1, "read_s": 0.3, "total_s": 1},
    }
    base.update(cfg)
    return BackendClient(BackendConfig.model_validate(base), url, name="vendor")


@pytest.fixture
async def client(backend: Backend) -> AsyncIterator[BackendClient]:
    c = make_client(backend.url)
    await c.start()
    yield c
    await c.close()


async def test_success_parses_json(client: BackendClient) -> None:
    resp = await client.request("GET", "/items")
    assert resp.json() == {"items": [1, 2, 3]}
    assert client.stats.attempts == 1 and client.stats.retries == 0


async def test_transient_5xx_retried_until_success(backend: Backend, client: BackendClient) -> None:
    backend.state.faults = Faults(fail_next=2)
    resp = await client.request("GET", "/items")
    assert resp.status == 200
    assert backend.hits("GET /items") == 3
    assert client.stats.retries == 2


async def test_retries_exhausted_is_503(backend: Backend, client: BackendClient) -> None:
    backend.state.faults = Faults(fail_next=10, error_statuses=[500])
    with pytest.raises(BackendUnavailable) as err:
        await client.request("GET", "/items")
    assert err.value.backend == "vendor"
    assert backend.hits("GET /items") == 3


async def test_post_without_idempotency_key_is_not_retried(
    backend: Backend, client: BackendClient
) -> None:
    backend.state.faults = Faults(fail_next=1, error_statuses=[503])
    with pytest.raises(BackendUnavailable):
        await client.request("POST", "/items", json={"a": 1})
    assert backend.hits("POST /items") == 1


async def test_post_without_key_is_retried_after_429(
    backend: Backend, client: BackendClient
) -> None:
    backend.state.faults = Faults(burst_429=1, retry_after_s=0)
    resp = await client.request("POST", "/items", json={"a": 1})
    assert resp.status == 201
    assert backend.hits("POST /items") == 2 and backend.posts == 1


async def test_post_with_idempotency_key_is_retried(
    backend: Backend, client: BackendClient
) -> None:
    backend.state.faults = Faults(fail_next=1, error_statuses=[503])
    resp = await client.request("POST", "/items", json={"a": 1}, idempotency_key="k-1")
    assert resp.status == 201
    assert backend.hits("POST /items") == 2


async def test_retry_after_is_honoured(backend: Backend, client: BackendClient) -> None:
    backend.state.faults = Faults(burst_429=1, retry_after_s=0.5)
    started = time.monotonic()
    resp = await client.request("GET", "/items")
    assert resp.status == 200
    assert time.monotonic() - started >= 0.45  # behaviour: it waited as the vendor asked
    assert backend.hits("GET /items") == 2


async def test_retry_after_longer_than_policy_fails_fast(
    backend: Backend, client: BackendClient
) -> None:
    backend.state.faults = Faults(burst_429=5, retry_after_s=60)
    with pytest.raises(BackendUnavailable) as err:
        await client.request("GET", "/items")
    assert err.value.retry_after == 60
    assert backend.hits("GET /items") == 1


async def test_429_does_not_open_breaker(backend: Backend) -> None:
    c = make_client(
        backend.url,
        breaker={"failure_threshold": 1, "reset_timeout_s": 5},
        retry={"max_attempts": 1},
    )
    await c.start()
    try:
        backend.state.faults = Faults(burst_429=1, retry_after_s=0)
        with pytest.raises(BackendUnavailable):
            await c.request("GET", "/items")
        assert c.breaker.state is BreakerState.CLOSED
    finally:
        await c.close()


async def test_404_is_typed_and_not_retried(backend: Backend, client: BackendClient) -> None:
    with pytest.raises(BackendNotFound) as err:
        await client.request("GET", "/missing")
    assert "no such item" in err.value.detail
    assert backend.hits("GET /missing") == 1


@pytest.mark.slow  # waits out a timeout
async def test_stalled_backend_times_out(backend: Backend) -> None:
    c = make_client(backend.url, retry={"max_attempts": 2, "base_delay_s": 0.001})
    await c.start()
    try:
        with pytest.raises(BackendTimeout):
            await c.request("GET", "/slow", params={"s": "2"})
        assert backend.hits("GET /slow") == 2
    finally:
        await c.close()


async def test_malformed_json_is_bad_backend_data(backend: Backend, client: BackendClient) -> None:
    backend.state.faults = Faults(malformed_rate=1)
    resp = await client.request("GET", "/items")
    with pytest.raises(BadBackendData) as err:
        resp.json()
    assert err.value.backend == "vendor"


async def test_truncated_body_is_unavailable_after_retries(
    backend: Backend, client: BackendClient
) -> None:
    backend.state.faults = Faults(truncated_rate=1)
    with pytest.raises(BackendUnavailable):
        await client.request("GET", "/items")
    assert backend.hits("GET /items") == 3


async def test_connection_reset_is_retried(backend: Backend, client: BackendClient) -> None:
    backend.state.faults = Faults(reset_rate=1)
    with pytest.raises(BackendUnavailable):
        await client.request("GET", "/items")
    # three attempts of ours; aiohttp itself re-sends once when a pooled connection was reset
    assert client.stats.attempts == 3 and backend.hits("GET /items") >= 3
    backend.state.faults = Faults()
    assert (await client.request("GET", "/items")).status == 200


async def test_connection_refused_is_unavailable() -> None:
    c = make_client(f"http://127.0.0.1:{free_port()}")
    await c.start()
    try:
        with pytest.raises(BackendUnavailable):
            await c.request("GET", "/items")
        assert await c.ping() is not None
    finally:
        await c.close()


async def test_xml_parsing_and_garbage(backend: Backend, client: BackendClient) -> None:
    root = (await client.request("GET", "/xml")).xml()
    assert root.findtext("b") == "1"
    backend.state.faults = Faults(malformed_rate=1)
    with pytest.raises(BadBackendData):
        (await client.request("GET", "/xml")).xml()


async def test_breaker_opens_then_recovers_through_half_open(backend: Backend) -> None:
    c = make_client(
        backend.url,
        retry={"max_attempts": 1},
        breaker={"failure_threshold": 3, "reset_timeout_s": 0.3, "half_open_max_calls": 1},
    )
    await c.start()
    try:
        backend.state.faults = Faults(fail_next=3, error_statuses=[500])
        for _ in range(3):
            with pytest.raises(BackendUnavailable):
                await c.request("GET", "/items")
        assert c.breaker.state is BreakerState.OPEN
        with pytest.raises(CircuitOpen):
            await c.request("GET", "/items")
        assert backend.hits("GET /items") == 3  # the open breaker did not call the backend
        await eventually(lambda: c.breaker.state is BreakerState.HALF_OPEN, interval=0.02)
        assert (await c.request("GET", "/items")).status == 200
        assert c.breaker.state is BreakerState.CLOSED
    finally:
        await c.close()


async def test_half_open_failure_reopens(backend: Backend) -> None:
    c = make_client(
        backend.url,
        retry={"max_attempts": 1},
        breaker={"failure_threshold": 1, "reset_timeout_s": 0.2},
    )
    await c.start()
    try:
        backend.state.faults = Faults(fail_next=2, error_statuses=[503])
        with pytest.raises(BackendUnavailable):
            await c.request("GET", "/items")
        await eventually(lambda: c.breaker.state is BreakerState.HALF_OPEN, interval=0.02)
        with pytest.raises(BackendUnavailable):
            await c.request("GET", "/items")  # the trial call fails
        assert c.breaker.state is BreakerState.OPEN
    finally:
        await c.close()


def test_breaker_half_open_admits_limited_trials() -> None:
    now = [0.0]
    b = CircuitBreaker(
        BreakerPolicy(failure_threshold=1, reset_timeout_s=1, half_open_max_calls=1),
        clock=lambda: now[0],
    )
    b.record_failure()
    assert not b.try_acquire()
    now[0] = 1.5
    assert b.try_acquire()
    assert not b.try_acquire()  # only one trial in flight
    b.record_success()
    assert b.state is BreakerState.CLOSED and b.try_acquire()


async def test_bulkhead_bounds_calls_in_flight(backend: Backend) -> None:
    c = make_client(
        backend.url,
        max_concurrency=2,
        retry={"max_attempts": 1},
        timeouts={"connect_s": 0.1, "read_s": 2, "total_s": 3},
    )
    await c.start()
    try:
        results = await asyncio.gather(
            *(c.request("GET", "/slow", params={"s": "0.5"}) for _ in range(4)),
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, BackendUnavailable)]
        assert len(refused) == 2 and "bulkhead" in refused[0].detail
        assert backend.hits("GET /slow") == 2
    finally:
        await c.close()


@pytest.mark.slow  # paced in real time
async def test_outbound_pacer_holds_the_vendor_rate(backend: Backend) -> None:
    c = make_client(backend.url, rate_limit={"rate": 20, "period_s": 1, "burst": 5})
    await c.start()
    try:
        started = time.monotonic()
        await asyncio.gather(*(c.request("GET", "/items") for _ in range(25)))
        elapsed = time.monotonic() - started
        # 5 immediately, then 20 paced at 20/s: the burst cannot complete faster than ~1 s
        assert elapsed >= 0.9
        assert backend.hits("GET /items") == 25
    finally:
        await c.close()


async def test_pacer_refuses_when_queue_exceeds_timeout() -> None:
    pacer = OutboundPacer(VendorRateLimit(rate=1, period_s=10, burst=1))
    assert await pacer.acquire(timeout_s=0.1)
    assert not await pacer.acquire(timeout_s=0.1)


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3
    assert parse_retry_after(None) is None
    assert parse_retry_after("garbage") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0
