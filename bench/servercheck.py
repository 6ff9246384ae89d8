"""A tiny ASGI app that proves a server runs the lifespan and drains in-flight requests.

bench/run.py serves it with uvicorn and with granian, starts ``GET /slow`` (1 s), sends
SIGTERM while it is in flight, and checks: the slow request still got its 200, startup and
shutdown each ran once (``BENCH_MARKER`` file), and the server exited by itself.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _mark(event: str) -> None:
    path = os.environ.get("BENCH_MARKER")
    if path:
        with Path(path).open("a", encoding="utf-8") as f:
            f.write(event + "\n")


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _mark("startup")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                _mark("shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(1.0)
        _mark("slow-done")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
