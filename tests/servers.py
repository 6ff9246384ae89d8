"""Serve an ASGI app with uvicorn on a free loopback port, inside the test's event loop."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from tests.eventually import eventually

CLIENT_TLS = ssl.create_default_context()
"""One TLS context for the tests' httpx clients: each client would otherwise build its own and
load the CA bundle again (a real cost in a short test), although loopback is plain HTTP."""


def _port_range() -> tuple[int, int]:
    """Where the tests pick ports: below the kernel's ephemeral range (which every outgoing
    connection draws from, so a port found free there may be taken before it is bound), one
    slice of it for each pytest-xdist worker, so workers never pick the same port."""
    low, high = 20000, 30000
    try:
        ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]
        high = min(high, int(ephemeral))
    except (OSError, ValueError, IndexError):
        pass
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    size = (high - low) // max(workers, 1)
    return low + worker * size, low + (worker + 1) * size


_GIVEN: deque[int] = deque(maxlen=2048)
"""Ports this process handed out lately: free when checked, but a test usually binds them only
later (a sandbox block and a gateway port picked one after the other), so they are not picked
again while their holder may still be starting."""


def free_port_block(count: int) -> int:
    """The first port of ``count`` consecutive free loopback ports, none handed out lately."""
    start, end = _port_range()
    for _ in range(200):
        base = random.randint(start, end - count)
        block = range(base, base + count)
        if any(port in _GIVEN for port in block):
            continue
        socks = []
        try:
            for i in range(count):
                s = socket.socket()
                s.bind(("127.0.0.1", base + i))
                socks.append(s)
            _GIVEN.extend(block)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port block")


def free_port() -> int:
    return free_port_block(1)


@asynccontextmanager
async def serve(
    app: ASGIApp, port: int | None = None, config: uvicorn.Config | None = None, **options: Any
) -> AsyncIterator[str]:
    """Yield the base URL while uvicorn serves ``app`` (lifespan included) over real HTTP.

    ``options`` are uvicorn's (``http=``, ``timeout_keep_alive=``...); or pass a whole
    ``config`` built for ``app`` (its host and port are replaced by loopback and a free port).
    """
    port = port or free_port()
    if config is None:
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            proxy_headers=False,
            **options,
        )
    else:
        config.host, config.port = "127.0.0.1", port
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
