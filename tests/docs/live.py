"""The whole gateway served on loopback from its own thread and event loop.

Synchronous clients (schemathesis, a browser in a subprocess) can then call it from a plain
test without blocking the loop that serves it.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import requests
from argon2 import PasswordHasher

from gateway.app import Gateway, create_app
from gateway.docs import OPENAPI_PATH, docs_routes
from gateway.openapi import SCOPE_DESCRIPTIONS
from tests.gateway.helpers import test_settings
from tests.servers import serve

FUZZER = "docs-fuzzer"
"""A client holding every scope the gateway knows, so generated requests reach every view."""

DOCS_EXEMPT = ["/healthz", "/readyz", "/metrics", "/.well-known/", "/docs", "/openapi.json"]
"""A browser opening /docs fetches ~6 files at once: over the anonymous burst limit."""


def gateway_with_docs(sandbox_base_port: int, tmp: Path) -> Gateway:
    """The test gateway, with the docs routes added unless create_app already has them."""
    hasher = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
    fuzzer = {
        "secret_hash": hasher.hash(f"{FUZZER}-secret"),
        "scopes": sorted(SCOPE_DESCRIPTIONS),
        "tier": "internal",
    }
    settings = test_settings(
        sandbox_base_port,
        tmp,
        # rate limits on, with the exemption the shipped config needs for the docs page
        ratelimit={"enabled": True, "exempt_paths": DOCS_EXEMPT},
        clients={FUZZER: fuzzer},
    )
    app = create_app(settings)
    if not any(getattr(r, "path", None) == OPENAPI_PATH for r in app.routes):
        app.router.routes.extend(docs_routes())
    return app


class GatewayThread:
    def __init__(self, app: Gateway) -> None:
        self.app = app
        self.url = ""
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="gateway", daemon=True)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # surfaced to the fixture waiting for readiness
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with serve(self.app) as url:
            self.url = url
            self._ready.set()
            await self._stop.wait()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the gateway did not start within 60 s")
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def token(self, client_id: str, scope: str | None = None) -> str:
        form = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
        r = requests.post(
            f"{self.url}/oauth/token",
            data=form,
            auth=(client_id, f"{client_id}-secret"),
            timeout=30,
        )
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])
