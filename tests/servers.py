"""Serve an ASGI app with uvicorn on a free loopback port, inside the test's event loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from starlette.types import ASGIApp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    for _ in range(500):
        if server.started:
            break
        if task.done():
            task.result()  # raises the startup error
            raise RuntimeError("server stopped during startup")
        await asyncio.sleep(0.01)
    if not server.started:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        raise RuntimeError(f"uvicorn did not start on port {port} within 5 s")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
