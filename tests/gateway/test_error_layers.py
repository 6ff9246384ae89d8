"""Error answers of the gateway's stack: Starlette's exception handlers (its public
``exception_handlers`` API) inside the request envelope. Every error is problem+json (or the
registered handler's answer) with the envelope's headers; CORS (user middleware) on every
answer but a crash's; a wrapper inside a mount (an experience version's headers) sees the
error answers of its routes."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, Router
from starlette.types import Receive, Scope, Send

from experience_apis.config import VersionPolicy
from experience_apis.versioning import Versioned
from gateway.app import Gateway
from gateway.errors import HANDLERS, handled_within
from gateway.observability import Observability, ObservabilityConfig
from gateway.policies.admission import AdmissionConfig, AdmissionLimit
from gateway.policies.edge import EdgeConfig
from gateway.problems import TYPE_BASE
from system_apis.errors import BackendNotFound
from system_apis.http.common import InvalidInput


class Sync(Exception):
    """Handled by a plain (threadpool) handler."""


class Odd(Exception):
    """No handler of its own: the 500 handler's."""


async def teapot(request: Request) -> Response:
    raise HTTPException(418, "short and stout")


async def gone(request: Request) -> Response:
    raise HTTPException(410, "gone")  # has a status handler below


async def backend(request: Request) -> Response:
    raise BackendNotFound("crm", "no customer 7")


async def invalid(request: Request) -> Response:
    raise InvalidInput("bad body", [{"path": "body/x", "message": "required", "type": "missing"}])


async def sync(request: Request) -> Response:
    raise Sync("sync")


async def crash(request: Request) -> Response:
    raise Odd("unexpected")


async def fine(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def late(scope: Scope, receive: Receive, send: Send) -> None:
    """Starts a response, then raises an exception that has a handler."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise BackendNotFound("crm", "after the start")


def sync_handler(request: Request, exc: Exception) -> Response:
    return PlainTextResponse(f"sync handled: {exc}", status_code=409)


async def gone_handler(request: Request, exc: Exception) -> Response:
    return PlainTextResponse("gone, by status", status_code=410)


def routes() -> list[Any]:
    return [
        Route("/teapot", teapot),
        Route("/gone", gone),
        Route("/backend", backend),
        Route("/invalid", invalid),
        Route("/sync", sync),
        Route("/crash", crash),
        Route("/fine", fine, methods=["GET"]),
        Mount("/raw/late", app=late),  # a raw ASGI app: starts, then raises
        Mount(
            "/experience/web/v1",
            app=handled_within(  # as gateway.layers mounts an experience version
                Versioned(
                    Router(routes=[Route("/backend", backend), Route("/fine", fine)]),
                    "web",
                    "v1",
                    VersionPolicy.model_validate(
                        {"status": "deprecated", "deprecated_at": "2026-06-01T00:00:00Z"}
                    ),
                )
            ),
        ),
    ]


class Counted:
    """The 500 handler, counting its calls (Starlette calls it even when it cannot answer)."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, request: Request, exc: Exception) -> Response:
        self.calls += 1
        return await HANDLERS[Exception](request, exc)


CORS = Middleware(CORSMiddleware, allow_origins=["https://app.example.com"])
ORIGIN = {"Origin": "https://app.example.com"}
PROBLEM = "application/problem+json"


def gateway() -> tuple[Gateway, Counted]:
    """The gateway's own stack builder over these routes, with CORS as user middleware."""
    server_error = Counted()
    handlers = {**HANDLERS, Exception: server_error, Sync: sync_handler, 410: gone_handler}
    app = Gateway(routes=routes(), exception_handlers=handlers, middleware=[CORS])
    app.observability = Observability(ObservabilityConfig(), configure_logs=False)
    app.admission = AdmissionLimit(AdmissionConfig())
    app.settings = SimpleNamespace(gateway=SimpleNamespace(edge=EdgeConfig()))  # type: ignore[assignment]
    return app, server_error


CASES = [
    # method, path, status, content type
    ("GET", "/teapot", 418, PROBLEM),
    ("GET", "/gone", 410, "text/plain; charset=utf-8"),  # the status handler
    ("GET", "/backend", 404, PROBLEM),
    ("GET", "/invalid", 422, PROBLEM),
    ("GET", "/sync", 409, "text/plain; charset=utf-8"),  # a plain (threadpool) handler
    ("GET", "/crash", 500, PROBLEM),
    ("GET", "/fine", 200, "application/json"),
    ("POST", "/fine", 405, PROBLEM),
    ("GET", "/nowhere", 404, PROBLEM),
    ("GET", "/experience/web/v1/backend", 404, PROBLEM),
]


@pytest.mark.parametrize(("method", "path", "status", "kind"), CASES)
async def test_each_error_is_answered_with_the_envelope_and_cors_headers(
    method: str, path: str, status: int, kind: str
) -> None:
    app, server_error = gateway()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.request(method, path, headers=ORIGIN)
    assert response.status_code == status
    assert response.headers["content-type"] == kind
    if kind == PROBLEM:
        body = response.json()
        assert body["type"].startswith(TYPE_BASE) and body["status"] == status
        assert body["trace_id"] == response.headers["x-trace-id"]
    # the envelope's headers on every answer, the crash's 500 included
    for name in ("x-request-id", "x-trace-id", "x-content-type-options"):
        assert name in response.headers, (path, name)
    # CORS (user middleware) on every answer but a crash's, which Starlette's server-error
    # layer gives outside the user middleware
    cors = response.headers.get("access-control-allow-origin")
    assert cors == (None if path == "/crash" else "https://app.example.com"), path
    assert server_error.calls == (1 if path == "/crash" else 0)


async def test_a_deprecated_versions_error_answers_carry_its_headers() -> None:
    app, _ = gateway()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        error = await client.get("/experience/web/v1/backend")
        fine = await client.get("/experience/web/v1/fine")
    assert error.status_code == 404 and fine.status_code == 200
    assert error.headers["deprecation"] == fine.headers["deprecation"] == "@1780272000"


async def test_a_crash_is_re_raised_for_the_server_to_log() -> None:
    app, _ = gateway()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        with pytest.raises(Odd):
            await client.get("/crash")


async def test_a_handled_exception_after_the_start_is_cut_short_and_logged_once() -> None:
    app, server_error = gateway()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        late = await client.get("/raw/late/")
    assert late.status_code == 200 and late.content == b""  # started, then cut short
    assert server_error.calls == 1  # the RuntimeError reached the 500 handler (it logs)
