"""Serve an ASGI app with uvicorn on a free loopback port, inside the test's event loop."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from starlette.types import ASGIApp

from tests.eventually import eventually

CLIENT_TLS = ssl.create_default_context()
"""One TLS context for the tests' httpx clients: each client would otherwise build its own and
load the CA bundle again (a real cost in a short test), although loopback is plain HTTP."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def serve(app: ASGIApp, port: int | None = None) -> AsyncIterator[str]:
    """Yield the base URL while uvicorn serves ``app`` (lifespan included) over real HTTP."""
    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", proxy_headers=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started or task.done(), timeout=10, interval=0.01)
    except AssertionError:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        raise RuntimeError(f"uvicorn did not start on port {port} within 10 s") from None
    if task.done():
        task.result()  # raises the startup error
        raise RuntimeError("server stopped during startup")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
