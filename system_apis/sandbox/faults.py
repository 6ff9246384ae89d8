"""Fault injection for the sandbox backends, set from config or at run time over HTTP.

``POST /__faults`` with a JSON body of ``Faults`` fields replaces the faults, ``DELETE`` clears
them, ``GET`` shows them. ``GET /__stats`` counts the requests each path received, so tests can
count retries from the backend's side.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


class Faults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    latency_ms: float = Field(0, ge=0, description="Added to every request.")
    jitter_ms: float = Field(0, ge=0, description="Extra uniform random latency.")
    response_ms: float = Field(
        0,
        ge=0,
        description="Hold each response until this long after its request arrived, the "
        "sandbox's own work included: a vendor's response time, which the other backends "
        "sharing this process do not stretch (latency_ms adds, and their work queues after).",
    )
    error_rate: float = Field(0, ge=0, le=1, description="Share of requests answered 500/503.")
    error_statuses: list[int] = Field(default_factory=lambda: [500, 503])
    fail_next: int = Field(0, ge=0, description="The next N requests fail with error_statuses.")
    burst_429: int = Field(0, ge=0, description="The next N requests answer 429.")
    retry_after_s: float = Field(1, ge=0, description="Retry-After sent with injected 429s.")
    reset_rate: float = Field(0, ge=0, le=1, description="Share of connections reset.")
    malformed_rate: float = Field(0, ge=0, le=1, description="Share of bodies made garbage.")
    truncated_rate: float = Field(0, ge=0, le=1, description="Share of bodies cut short.")
    truncate_next: int = Field(
        0, ge=0, description="The next N responses are cut short (after the work was done)."
    )
    paths: list[str] = Field(
        default_factory=list, description="Only requests whose path starts with one of these."
    )


class FaultState:
    """The live faults and request counters of one sandbox backend."""

    def __init__(self, faults: Faults | None = None, seed: int = 7) -> None:
        self.faults = faults or Faults()
        self.hits: Counter[str] = Counter()
        self.trace_ids: Counter[str] = Counter()
        """Trace ids of the W3C traceparent headers received: proves propagation end to end."""
        self._rng = random.Random(seed)

    def applies(self, path: str) -> bool:
        return not path.startswith("/__") and (
            not self.faults.paths or any(path.startswith(p) for p in self.faults.paths)
        )

    def roll(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate


def _control_routes(state: FaultState) -> list[web.RouteDef]:
    async def get_faults(request: web.Request) -> web.Response:
        return web.json_response(state.faults.model_dump())

    async def set_faults(request: web.Request) -> web.Response:
        try:
            state.faults = Faults.model_validate(orjson.loads(await request.read()))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(state.faults.model_dump())

    async def clear_faults(request: web.Request) -> web.Response:
        state.faults = Faults()
        return web.json_response(state.faults.model_dump())

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "hits": dict(state.hits),
                "total": sum(state.hits.values()),
                "trace_ids": dict(state.trace_ids),
            }
        )

    async def reset_stats(request: web.Request) -> web.Response:
        state.hits.clear()
        state.trace_ids.clear()
        return web.json_response({"hits": {}, "total": 0})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    return [
        web.get("/__faults", get_faults),
        web.post("/__faults", set_faults),
        web.delete("/__faults", clear_faults),
        web.get("/__stats", stats),
        web.delete("/__stats", reset_stats),
        web.get("/__health", health),
    ]


def fault_middleware(state: FaultState) -> Middleware:
    @web.middleware
    async def inject(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not state.applies(request.path):
            return await handler(request)
        arrived = asyncio.get_running_loop().time()
        state.hits[f"{request.method} {request.path}"] += 1
        traceparent = request.headers.get("traceparent", "")
        if traceparent.count("-") == 3:
            state.trace_ids[traceparent.split("-")[1]] += 1
        f = state.faults
        delay = f.latency_ms + (state._rng.uniform(0, f.jitter_ms) if f.jitter_ms else 0)
        if delay:
            await asyncio.sleep(delay / 1000)
        if f.burst_429 > 0:
            f.burst_429 -= 1
            return web.json_response(
                {"error": "rate_limited", "message": "Too many requests"},
                status=429,
                headers={"Retry-After": f"{f.retry_after_s:g}"},
            )
        if f.fail_next > 0 or state.roll(f.error_rate):
            if f.fail_next > 0:
                f.fail_next -= 1
            status = state._rng.choice(f.error_statuses or [500])
            return web.json_response(
                {"error": "injected", "message": "injected fault"}, status=status
            )
        if state.roll(f.reset_rate):
            if request.transport is not None:
                request.transport.abort()
            raise web.HTTPInternalServerError()  # never sent: the connection is gone
        response = await handler(request)
        if f.response_ms:
            held = arrived + f.response_ms / 1000 - asyncio.get_running_loop().time()
            if held > 0:
                await asyncio.sleep(held)
        if isinstance(response, web.Response) and response.body is not None:
            body = response.body if isinstance(response.body, bytes) else b""
            if body and state.roll(f.malformed_rate):
                response.body = b"<<garbage" + body[: len(body) // 3] + b"\x00}{"
            elif body and (f.truncate_next > 0 or state.roll(f.truncated_rate)):
                if f.truncate_next > 0:
                    f.truncate_next -= 1
                # Declare the full length but send half, then drop the connection.
                resp = web.StreamResponse(status=response.status, headers=response.headers)
                resp.content_length = len(body)
                await resp.prepare(request)
                await resp.write(body[: len(body) // 2])
                if request.transport is not None:
                    request.transport.abort()
                return resp
        return response

    return inject


def install_faults(app: web.Application, state: FaultState) -> None:
    """Add the fault middleware and the control endpoints to a sandbox app."""
    app.middlewares.append(fault_middleware(state))  # type: ignore[arg-type]
    app.add_routes(_control_routes(state))
