"""Helpers of the contract tests: a sandbox backend of their own, recording what it is sent."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import pytest
from aiohttp import web

from tests.servers import free_port_block


@dataclass(frozen=True)
class Sent:
    """One request as the backend received it."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Recorded:
    url: str
    sent: list[Sent] = field(default_factory=list)


async def serve_recorded(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, Recorded]:
    """Serve ``app`` on a free loopback port; every request that reaches its routes is kept.

    The recorder is the innermost middleware, so what it keeps passed the vendor's own checks
    (authentication) as the real vendor would see it.
    """
    port = free_port_block(1)
    scheme = "https" if ssl_context else "http"
    recorded = Recorded(f"{scheme}://127.0.0.1:{port}")

    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        body = await request.read()
        recorded.sent.append(
            Sent(
                request.method,
                request.path,
                list(request.query.items()),
                dict(request.headers),
                body,
            )
        )
        return await handler(request)

    app.middlewares.append(record)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context).start()
    return runner, recorded


class Backend(Protocol):
    def __call__(
        self, app: web.Application, ssl_context: ssl.SSLContext | None = None
    ) -> Awaitable[Recorded]: ...


@pytest.fixture
async def recorded_backend() -> AsyncIterator[Backend]:
    """``await recorded_backend(app)`` serves a fresh sandbox app and answers its record."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> Recorded:
        runner, recorded = await serve_recorded(app, ssl_context)
        runners.append(runner)
        return recorded

    yield start
    for runner in runners:
        await runner.cleanup()
