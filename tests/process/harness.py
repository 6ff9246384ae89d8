"""A whole gateway on loopback against the sandbox, with real tokens and backend clients to
check the backends' state after each operation (not just the status codes)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDict

from gateway.app import create_app
from gateway.settings import Settings
from process_apis.service import ProcessApis
from system_apis.config import BACKEND_NAMES
from system_apis.registry import SystemApis
from tests.conftest import SandboxThread
from tests.gateway.helpers import test_settings, token
from tests.servers import serve

FAST_ERP = {"min_ms": 0, "max_ms": 3}
CLIENTS = (
    "orders-service",
    "web-app",
    "mobile-app",
    "support-desk",
    "partner-acme",
    "partner-globex",
)

# Fail fast and never trip a breaker: tests inject 100% faults on purpose, one after another.
RESILIENCE = {
    "timeouts": {"connect_s": 1, "read_s": 2, "total_s": 3},
    "retry": {"max_attempts": 2, "base_delay_s": 0.01, "max_delay_s": 0.02},
    "breaker": {"failure_threshold": 10_000, "reset_timeout_s": 0.1},
}


def settings_for(sandbox: SandboxThread, tmp: Path, **overrides: Any) -> Settings:
    backends = {name: dict(RESILIENCE) for name in BACKEND_NAMES}
    merged: dict[str, Any] = {"backends": backends, "ratelimit": {"enabled": False}}
    merged.update(overrides)
    return test_settings(sandbox.base_port, tmp, **merged)


class Gw:
    """The running gateway: ``call`` as a client would, ``systems`` to look behind it."""

    def __init__(
        self,
        url: str,
        tokens: dict[str, str],
        systems: SystemApis,
        sandbox: SandboxThread,
        settings: Settings,
        process: ProcessApis,
    ) -> None:
        self.url, self.tokens, self.systems = url, tokens, systems
        self.sandbox, self.settings, self.process = sandbox, settings, process
        self.session = aiohttp.ClientSession()

    def outbox(self, type_: str) -> list[dict[str, Any]]:
        """Events of ``type_`` in the SQLite outbox, oldest first (CloudEvent dicts)."""
        path = Path(self.settings.gateway.data_dir) / "trellis.db"
        with contextlib.closing(sqlite3.connect(path)) as conn:
            rows = conn.execute(
                "SELECT event FROM outbox WHERE type = ? ORDER BY seq", (type_,)
            ).fetchall()
        return [orjson.loads(r[0]) for r in rows]

    async def call(
        self, method: str, path: str, client: str | None = "orders-service", **kw: Any
    ) -> tuple[int, Any, Any]:
        headers = dict(kw.pop("headers", {}))
        if client:
            headers["Authorization"] = f"Bearer {self.tokens[client]}"
        async with self.session.request(method, self.url + path, headers=headers, **kw) as r:
            raw = await r.read()
            try:
                body = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                body = raw
            return r.status, CIMultiDict(r.headers), body


@contextlib.asynccontextmanager
async def running_gateway(sandbox: SandboxThread, tmp: Path, **overrides: Any) -> AsyncIterator[Gw]:
    before = await sandbox.control("erp", "GET", "/__latency")
    await sandbox.control("erp", "POST", "/__latency", FAST_ERP)
    settings = settings_for(sandbox, tmp, **overrides)
    systems = SystemApis.from_config(settings.backends, settings.backend_url)
    await systems.start()
    try:
        app = create_app(settings)
        async with serve(app) as url:
            tokens = {c: await token(url, c) for c in CLIENTS}
            assert app.layers.process is not None
            gw = Gw(url, tokens, systems, sandbox, settings, app.layers.process)
            try:
                yield gw
            finally:
                await gw.session.close()
    finally:
        await systems.close()
        await sandbox.control("erp", "POST", "/__latency", before)


def assert_problem(status: int, headers: Any, body: Any, expected: int) -> None:
    assert status == expected, body
    assert headers["Content-Type"].startswith("application/problem+json"), headers
    assert body["status"] == expected
    assert "Traceback" not in str(body)
