"""Routing is Starlette's public router; ``route_template`` reads what it leaves in the scope
(span names, metric labels, access lines)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.oauth.scopes import RequireScopes
from gateway.policies.routing import UNMATCHED, route_template
from gateway.principal import PRINCIPAL_KEY, Principal


async def echo(request: Request) -> Response:
    return JSONResponse({"params": dict(request.path_params)})


async def raw(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse("raw")(scope, receive, send)


def routes() -> list[BaseRoute]:
    return [
        Mount("/system/v1/crm", routes=[Route("/customers/{id}", echo, methods=["GET"])]),
        Mount("/process/v1", routes=[Route("/orders/{id}", echo)]),
        Mount("/v1/{tenant}", routes=[Route("/items", echo)]),
        Mount("/guarded", app=RequireScopes(Router(routes=[Route("/x/{id}", echo)]), read=["r"])),
        Mount("/raw", app=raw),
        Mount("/tenant/{tenant}", app=raw),
        Route("/healthz", echo),
        Mount("/n", routes=[Route("/{num:int}/{rest:path}", echo)]),
    ]


class Templates:
    """Reads the template after the app, as the envelope's completion phase does; grants the
    scope guard's ``r`` scope."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[PRINCIPAL_KEY] = Principal(
            client_id="c",
            scopes=frozenset({"r"}),
            tier="internal",
            issuer="test",
            subject="c",
            token_id=None,
            expires_at=0.0,
        )
        try:
            await self.app(scope, receive, send)
        finally:
            self.seen.append(route_template(scope))


CASES = [
    ("GET", "/system/v1/crm/customers/7", 200, "/system/v1/crm/customers/{id}"),
    ("POST", "/system/v1/crm/customers/7", 405, "/system/v1/crm/customers/{id}"),
    ("GET", "/system/v1/crm/nothing", 404, "/system/v1/crm"),  # the mount, no route inside
    ("GET", "/process/v1/orders/o-1", 200, "/process/v1/orders/{id}"),
    ("GET", "/v1/acme/items", 200, "/v1/{tenant}/items"),  # no raw values from mounts
    ("GET", "/v1/v1/items", 200, "/v1/{tenant}/items"),
    ("GET", "/tenant/acme/x", 200, "/tenant/{tenant}"),
    ("GET", "/guarded/x/1", 200, "/guarded/x/{id}"),
    ("GET", "/raw/anything", 200, "/raw"),  # a mounted ASGI app: its prefix
    ("GET", "/healthz", 200, "/healthz"),
    ("GET", "/n/5/a/b", 200, "/n/{num}/{rest}"),  # path_format: no convertors
    ("GET", "/nowhere/at/all", 404, UNMATCHED),
]


@pytest.mark.parametrize(("method", "path", "status", "template"), CASES)
async def test_the_route_template_of_each_kind_of_match(
    method: str, path: str, status: int, template: str
) -> None:
    app = Templates(Starlette(routes=routes()))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.request(method, path)
    assert response.status_code == status
    assert app.seen == [template]


async def test_path_parameters_reach_the_endpoint_converted() -> None:
    app = Templates(Starlette(routes=routes()))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.get("/n/5/a/b")
    assert response.json() == {"params": {"num": 5, "rest": "a/b"}}


def test_no_template_before_routing() -> None:
    scope: dict[str, Any] = {"type": "http", "path": "/system/v1/crm/customers/7"}
    assert route_template(scope) == UNMATCHED


async def test_a_chunked_get_body_is_still_counted_against_the_limit() -> None:
    """Only a Content-Length-framed body, or a GET/HEAD with no body at all, skips counting."""
    from gateway.policies.body_limit import BodyLimitMiddleware

    async def reads_body(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        await request.body()
        await JSONResponse({"ok": True})(scope, receive, send)

    app = BodyLimitMiddleware(reads_body, max_bytes=1024)
    chunks = [b"x" * 600, b"x" * 600]

    async def receive() -> dict:  # type: ignore[type-arg]
        return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}

    sent: list[dict] = []  # type: ignore[type-arg]

    async def send(message: dict) -> None:  # type: ignore[type-arg]
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(b"transfer-encoding", b"chunked")],
        "query_string": b"",
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 413
