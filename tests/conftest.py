"""Shared fixtures: the sandbox backends on loopback (real HTTP), fault control, Redis."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from system_apis.config import BACKEND_NAMES
from system_apis.sandbox.server import Sandbox


def free_port_block(count: int, start: int = 20000, end: int = 60000) -> int:
    """The first port of ``count`` consecutive free loopback ports."""
    import random

    for _ in range(200):
        base = random.randint(start, end - count)
        socks = []
        try:
            for i in range(count):
                s = socket.socket()
                s.bind(("127.0.0.1", base + i))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port block")


class SandboxThread:
    """The six sandbox backends served from their own thread and event loop.

    A separate loop keeps the backends' latency independent of the test's loop, as a real
    backend would be.
    """

    def __init__(self) -> None:
        self.base_port = free_port_block(len(BACKEND_NAMES))
        self.sandbox = Sandbox("127.0.0.1", self.base_port)
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
