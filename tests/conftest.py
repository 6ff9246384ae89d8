"""Shared fixtures: the sandbox backends on loopback (real HTTP), fault control, Redis, PostgreSQL.

Redis is shared by every test run on the machine (``TRELLIS_TEST_REDIS_URL``, db 15 by
default). A test that writes to it takes the ``redis_prefix`` fixture and hands it to what it
starts (``gateway.redis_prefix``): a prefix unique to the test, under one unique to the run, so
concurrent runs and tests never meet in one key; the keys are deleted when the test ends, and
whatever is left under the run's prefix when the run ends.

PostgreSQL likewise (``TRELLIS_TEST_DATABASE_URL``, the role and database that
``.ci/start_postgres.sh`` creates by default): a test that uses it takes the ``database_url``
fixture, a URL whose ``search_path`` is a schema of its own, dropped when the test ends.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis

from gateway.settings import DEFAULT_CONFIG_DIR, load_settings
from system_apis.config import BACKEND_NAMES
from system_apis.sandbox.server import DEFAULT_INSTANCES, Sandbox
from tests import crm_swap
from tests.config_files import copy_config
from tests.servers import free_port_block

# Every test configures its gateway itself: a setting from the shell (a TRELLIS_REDIS_URL
# pointing at a real Redis, say) must not reach the gateways the tests start.
for _name in [n for n in os.environ if n.startswith("TRELLIS_")]:
    if not _name.startswith("TRELLIS_TEST_"):
        del os.environ[_name]

# The seed's cross-references (and every id a test takes from it) are the CRM under test's.
crm_swap.use_seed()

SLOW_DIRECTORIES = ("process", "experience", "console")
"""Every test here drives a whole gateway against every sandbox backend (the console's in a
browser): all are ``slow``.
Elsewhere a module (``pytestmark``) or a test says so itself."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    crm = crm_swap.crm().connector
    for item in items:
        parts = item.path.relative_to(root).parts if item.path.is_relative_to(root) else ()
        if parts and parts[0] in SLOW_DIRECTORIES:
            item.add_marker(pytest.mark.slow)
        vendor = item.get_closest_marker("vendor_crm")
        if vendor is not None and vendor.args[0] != crm:
            item.add_marker(
                pytest.mark.skip(
                    reason=f"about the {vendor.args[0]} CRM; {crm_swap.ENV} runs on {crm}"
                )
            )


class SandboxThread:
    """The sandbox backends of the shipped configuration, from their own thread and event loop.

    A separate loop keeps the backends' latency independent of the test's loop, as a real
    backend would be.
    """

    def __init__(self) -> None:
        self.base_port = free_port_block(len(BACKEND_NAMES))
        # the shipped instances' configs: a `rest` instance's sandbox is made from its own
        shipped = load_settings(DEFAULT_CONFIG_DIR).backends
        self.sandbox = Sandbox(
            "127.0.0.1",
            self.base_port,
            crm_swap.sandbox_instances(dict(DEFAULT_INSTANCES)),
            configs=shipped,
        )
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="sandbox", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.sandbox.start())
        except BaseException as exc:  # surfaced to the test that waits for readiness
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.sandbox.stop())

    def start(self) -> None:
        self.thread.start()
        self._ready.wait(30)
        if self._error:
            raise self._error

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def url(self, name: str) -> str:
        return self.sandbox.url(name)

    async def control(self, name: str, method: str, path: str, body: Any = None) -> Any:
        async with (
            aiohttp.ClientSession() as s,
            s.request(method, self.url(name) + path, json=body) as r,
        ):
            assert r.status == 200, await r.text()
            return await r.json()

    async def set_faults(self, name: str, **faults: Any) -> None:
        await self.control(name, "POST", "/__faults", faults)

    async def clear_faults(self) -> None:
        for name in BACKEND_NAMES:
            await self.control(name, "DELETE", "/__faults")

    async def hits(self, name: str) -> dict[str, int]:
        return dict((await self.control(name, "GET", "/__stats"))["hits"])

    async def reset_hits(self, name: str) -> None:
        await self.control(name, "DELETE", "/__stats")


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A copy of the shipped configuration for the test to edit."""
    return copy_config(tmp_path)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxThread]:
    sb = SandboxThread()
    sb.start()
    yield sb
    sb.stop()


@pytest.fixture
async def clean_sandbox(sandbox: SandboxThread) -> AsyncIterator[SandboxThread]:
    """The sandbox with no faults and zeroed counters before and after the test."""
    await sandbox.clear_faults()
    for name in BACKEND_NAMES:
        await sandbox.reset_hits(name)
    yield sandbox
    await sandbox.clear_faults()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A reachable Redis, or a visible skip (a failure under CI=true)."""
    url = os.environ.get("TRELLIS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    host, port = "127.0.0.1", 6379
    try:
        from urllib.parse import urlparse

        parsed = urlparse(url)
        host, port = parsed.hostname or host, parsed.port or port
        socket.create_connection((host, port), timeout=1).close()
    except OSError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis at {host}:{port} is required under CI: {exc}")
        pytest.skip(f"no Redis at {host}:{port}: {exc}")
    return url


def delete_prefixed(url: str, prefix: str) -> int:
    """Delete every key starting with ``prefix`` (SCAN, never KEYS); return how many."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) == 500:
                deleted += client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += client.unlink(*batch)
        return deleted
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_run_prefix(redis_url: str) -> Iterator[str]:
    """The key prefix of this run (of this xdist worker); its leftovers go when it ends."""
    prefix = f"trellis-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    delete_prefixed(redis_url, prefix)


@pytest.fixture
def redis_prefix(redis_url: str, redis_run_prefix: str) -> Iterator[str]:
    """A key prefix for one test (``gateway.redis_prefix``); its keys go when the test ends."""
    prefix = f"{redis_run_prefix}{uuid.uuid4().hex[:8]}:"
    yield prefix
    delete_prefixed(redis_url, prefix)


DEFAULT_TEST_DATABASE_URL = "postgresql://trellis:trellis@127.0.0.1:5432/trellis_test"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A reachable PostgreSQL, or a visible skip (a failure under CI=true)."""
    url = os.environ.get("TRELLIS_TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)
    from urllib.parse import urlparse

    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 5432
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {host}:{port} is required under CI: {exc}")
        pytest.skip(f"no PostgreSQL at {host}:{port} (.ci/start_postgres.sh starts one): {exc}")
    return url


def postgres_execute(url: str, sql: str) -> None:
    """Run one statement on its own connection, from sync code (in a thread of its own, so a
    test's running event loop is never re-entered)."""

    async def run() -> None:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _capture(errors, lambda: asyncio.run(run())))
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def _capture(errors: list[BaseException], fn: Any) -> None:
    try:
        fn()
    except BaseException as exc:
        errors.append(exc)


@pytest.fixture
def database_url(postgres_url: str) -> Iterator[str]:
    """``gateway.database_url`` for one test: its own schema, dropped when the test ends."""
    schema = f"test_{uuid.uuid4().hex[:16]}"
    try:
        postgres_execute(postgres_url, f"CREATE SCHEMA {schema}")
    except asyncpg.PostgresError as exc:  # the server answers, but not for this role/database
        pytest.fail(f"PostgreSQL refused {postgres_url} ({exc}): bash .ci/start_postgres.sh")
    sep = "&" if "?" in postgres_url else "?"
    yield f"{postgres_url}{sep}search_path={schema}"
    postgres_execute(postgres_url, f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
async def silent_redis() -> AsyncIterator[str]:
    """A TCP server that accepts and never answers: a stalled Redis."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"redis://127.0.0.1:{port}/0"
    for w in held:
        w.close()
    server.close()
