"""The peer gateway: ``premier`` (PyPI) forwarding to the bench backend with a rate limit.

premier 0.4.10's own ``servers=`` mode cannot start: its ``ForwardService`` calls
``aiohttp.ClienSession()`` (a typo) when no session is given. So we build premier's
``ForwardService`` ourselves with a real session, in the lifespan, and hand it to
``ASGIGateway`` as the downstream app: the forwarding code and the rate limiter are premier's.
The limit (fixed window, in memory) is checked on every request but set high enough never to
refuse one, as in Trellis's full chain.

Serve it with ``uvicorn --factory bench.peer_premier:create_app``; ``BENCH_UPSTREAM`` as for
the pass-through. The client sends ``X-Api-Key`` (premier forwards request headers).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

QUOTA_PER_MINUTE = 1_000_000_000


class _Forwarder:
    """premier's ForwardService, created inside the running loop on lifespan startup."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.service: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self.service.forward_http_request(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        from premier.asgi.forward import ForwardService

        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.service = ForwardService([self.upstream], session=aiohttp.ClientSession())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.service is not None:
                    await self.service.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(upstream: str | None = None) -> ASGIApp:
    """premier's ASGIGateway with a fixed-window limit on every path."""
    from premier.asgi import ASGIGateway, FeatureConfig, GatewayConfig, PathConfig
    from premier.asgi import RateLimitConfig as PremierLimit

    base = upstream or os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:9300")
    limit = PremierLimit(quota=QUOTA_PER_MINUTE, duration=60, algorithm="fixed_window")
    config = GatewayConfig(
        paths=[PathConfig(pattern="/*", features=FeatureConfig(rate_limit=limit))],
        keyspace="bench",
    )
    gateway: ASGIApp = ASGIGateway(config=config, app=_Forwarder(base))
    return gateway
