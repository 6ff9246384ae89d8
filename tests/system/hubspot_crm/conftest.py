"""The HubSpot CRM sandbox on loopback, in its own thread and event loop (as a vendor would be).

One sandbox for the session; before each test its rate limits are set back to HubSpot's and
its counters emptied, so one test's calls never spend another's limit.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from system_apis.config import BackendConfig
from system_apis.hubspot_crm import HubSpotCrmClient
from system_apis.sandbox.hubspot_crm import TOKEN
from system_apis.sandbox.server import make_backend_app
from tests.servers import CLIENT_TLS, free_port


class HubSpotSandbox:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._runner: web.AppRunner | None = None
        self.thread = threading.Thread(target=self._run, name="hubspot-sandbox", daemon=True)

    async def _start(self) -> None:
        self._runner = web.AppRunner(
            make_backend_app("hubspot-crm", connector="hubspot-crm"),
            access_log=None,
            handle_signals=False,
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._start())
        except BaseException as exc:  # surfaced to the fixture that waits for readiness
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        if self._runner is not None:
            self.loop.run_until_complete(self._runner.cleanup())

    def start(self) -> None:
        self.thread.start()
        self._ready.wait(30)
        if self._error:
            raise self._error

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        async with httpx.AsyncClient(base_url=self.url, verify=CLIENT_TLS) as h:
            r = await h.request(method, path, json=body)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="session")
def hubspot_sandbox() -> Iterator[HubSpotSandbox]:
    sb = HubSpotSandbox()
    sb.start()
    yield sb
    sb.stop()


@pytest.fixture
async def hubspot(hubspot_sandbox: HubSpotSandbox) -> AsyncIterator[HubSpotSandbox]:
    """The sandbox with HubSpot's limits, fresh counters, no faults."""
    await hubspot_sandbox.control("POST", "/__limits", {})
    await hubspot_sandbox.control("DELETE", "/__faults")
    await hubspot_sandbox.control("DELETE", "/__stats")
    yield hubspot_sandbox
    await hubspot_sandbox.control("DELETE", "/__faults")


@pytest.fixture
async def api(hubspot: HubSpotSandbox) -> AsyncIterator[httpx.AsyncClient]:
    """Raw HTTP to the sandbox with the private app's token."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=hubspot.url, headers=headers, verify=CLIENT_TLS) as h:
        yield h


def config(token: str = TOKEN, **overrides: Any) -> BackendConfig:
    return BackendConfig.model_validate(
        {
            "sandbox": True,
            "auth": {
                "kind": "api_key",
                "header": "Authorization",
                "prefix": "Bearer ",
                "key": token,
            },
            "retry": {"max_attempts": 3, "base_delay_s": 0.01},
            **overrides,
        }
    )


@pytest.fixture
async def client(hubspot: HubSpotSandbox) -> AsyncIterator[HubSpotCrmClient]:
    c = HubSpotCrmClient(config(), base_url=hubspot.url)
    await c.start()
    yield c
    await c.close()
