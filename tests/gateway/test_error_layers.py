"""The gateway's lean error layers (the envelope as the 500 layer, ``ErrorHandlers`` around the
router) answer every error as Starlette's ServerErrorMiddleware + ExceptionMiddleware do, with
the endpoints leaned as ``create_app`` leans them and CORS (user middleware) on every answer."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.app import Gateway
from gateway.errors import HANDLERS, ErrorHandlers
from gateway.observability import Observability, ObservabilityConfig
from gateway.policies.admission import AdmissionConfig, AdmissionLimit
from gateway.policies.edge import EdgeConfig
from gateway.policies.routing import lean_endpoints
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
    ]


class Counted:
    """The 500 handler, counting its calls (Starlette calls it even when it cannot answer)."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, request: Request, exc: Exception) -> Response:
        self.calls += 1
        return await HANDLERS[Exception](request, exc)


def handlers(server_error: Counted) -> dict[Any, Any]:
    return {**HANDLERS, Exception: server_error, Sync: sync_handler, 410: gone_handler}


class Reference(Starlette):
    """Starlette's own stack inside the envelope: how the gateway was wired before."""

    obs: Observability

    def build_middleware_stack(self) -> ASGIApp:
        return self.obs.wrap(super().build_middleware_stack(), EdgeConfig())


class Lean(Starlette):
    """Starlette with the gateway's own stack builder (the method under test)."""

    build_middleware_stack = Gateway.build_middleware_stack  # type: ignore[assignment]


CORS = Middleware(CORSMiddleware, allow_origins=["https://app.example.com"])
ORIGIN = {"Origin": "https://app.example.com"}


def apps() -> tuple[Starlette, Starlette, Counted, Counted]:
    obs = Observability(ObservabilityConfig(), configure_logs=False)
    ref_500, lean_500 = Counted(), Counted()
    reference = Reference(routes=routes(), exception_handlers=handlers(ref_500), middleware=[CORS])
    reference.obs = obs
    lean_routes = routes()
    assert lean_endpoints(lean_routes) == 7  # as create_app does: route-level handling gone
    lean = Lean(routes=lean_routes, exception_handlers=handlers(lean_500), middleware=[CORS])
    lean.observability = obs  # type: ignore[attr-defined]
    lean.admission = AdmissionLimit(AdmissionConfig())  # type: ignore[attr-defined]
    lean.settings = SimpleNamespace(gateway=SimpleNamespace(edge=EdgeConfig()))  # type: ignore[attr-defined]
    return reference, lean, ref_500, lean_500


def comparable(response: httpx.Response) -> tuple[int, str, Any]:
    kind = response.headers.get("content-type", "")
    body: Any = response.text
    if "json" in kind:
        body = json.loads(body)
        body.pop("trace_id", None)  # differs per request
    return response.status_code, kind, body


CASES = [
    ("GET", "/teapot"),
    ("GET", "/gone"),
    ("GET", "/backend"),
    ("GET", "/invalid"),
    ("GET", "/sync"),
    ("GET", "/crash"),
    ("GET", "/fine"),
    ("POST", "/fine"),  # 405
    ("GET", "/nowhere"),  # 404
    ("GET", "/raw/late/"),  # a handled exception after the start: the response is cut short
]


@pytest.mark.parametrize(("method", "path"), CASES)
async def test_each_error_is_answered_as_by_starlettes_own_layers(method: str, path: str) -> None:
    reference, lean, ref_500, lean_500 = apps()
    got = []
    for app in (reference, lean):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            got.append(await client.request(method, path, headers=ORIGIN))
    ref, new = got
    assert comparable(new) == comparable(ref), path
    # the envelope's headers on every answer, the crash's 500 included
    for name in ("x-request-id", "x-trace-id", "x-content-type-options"):
        assert name in new.headers, (path, name)
    # CORS (user middleware) acts on the handled errors as Starlette's order has it
    cors = ref.headers.get("access-control-allow-origin")
    assert new.headers.get("access-control-allow-origin") == cors, path
    if path not in ("/crash", "/raw/late/"):  # answered inside the user middleware
        assert cors == "https://app.example.com", path
    assert lean_500.calls == ref_500.calls, path  # the 500 handler ran as often


async def test_a_crash_is_a_problem_500_carrying_the_trace_id() -> None:
    _, lean, _, lean_500 = apps()
    transport = httpx.ASGITransport(app=lean, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        crash = await client.get("/crash")
    assert crash.status_code == 500
    assert crash.headers["content-type"] == "application/problem+json"
    assert crash.json()["trace_id"] == crash.headers["x-trace-id"]
    assert lean_500.calls == 1


async def test_a_crash_is_re_raised_for_the_server_to_log() -> None:
    _, lean, _, _ = apps()
    transport = httpx.ASGITransport(app=lean, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        with pytest.raises(Odd):
            await client.get("/crash")


async def test_a_handled_exception_after_the_start_is_cut_short_and_logged_once() -> None:
    _, lean, _, lean_500 = apps()
    transport = httpx.ASGITransport(app=lean, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        late = await client.get("/raw/late/")
    assert late.status_code == 200 and late.content == b""  # started, then cut short
    assert lean_500.calls == 1  # the RuntimeError reached the 500 handler (it logs)


async def test_without_the_envelope_starlettes_exception_middleware_does_the_work() -> None:
    lean_routes = routes()
    lean_endpoints(lean_routes)
    app = ErrorHandlers(Router(routes=lean_routes), handlers(Counted()))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/teapot")).status_code == 418
        assert (await client.get("/sync")).text == "sync handled: sync"
        assert (await client.get("/gone")).text == "gone, by status"
