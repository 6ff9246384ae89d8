"""The Python limit: a bare Starlette + aiohttp pass-through, nothing else.

One route, one pooled ``ClientSession`` made in the lifespan, the upstream's status, type and
body copied back. It adds the backend's API key itself, as a gateway would. Every Python
gateway in the benchmark is compared with this.

Serve it with ``uvicorn --factory bench.passthrough:create_app`` (or granian) and set
``BENCH_UPSTREAM=http://127.0.0.1:9300``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

API_KEY = "inv-sandbox-key"


def create_app(upstream: str | None = None) -> Starlette:
    """The pass-through app; ``upstream`` defaults to ``$BENCH_UPSTREAM``."""
    base = (upstream or os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:9300")).rstrip("/")
    state: dict[str, aiohttp.ClientSession] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=64, keepalive_timeout=15)
        async with aiohttp.ClientSession(base, connector=connector) as session:
            state["session"] = session
            yield

    async def forward(request: Request) -> Response:
        session = state["session"]
        async with session.get(request.url.path, headers={"X-Api-Key": API_KEY}) as resp:
            body = await resp.read()
            return Response(body, resp.status, media_type=resp.content_type)

    return Starlette(routes=[Route("/{path:path}", forward)], lifespan=lifespan)
