"""The top-level router's prefix index and the lean endpoint call: same answers as Starlette's."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.oauth.scopes import RequireScopes
from gateway.policies.routing import PrefixRouter, lean_endpoints, route_template
from gateway.principal import PRINCIPAL_KEY, Principal


def echo(request: Request) -> Response:
    scope = request.scope
    return JSONResponse(
        {
            "template": route_template(scope),
            "root_path": scope.get("root_path"),
            "params": dict(request.path_params),
        }
    )


async def aecho(request: Request) -> Response:
    return echo(request)


async def boom(request: Request) -> Response:
    raise HTTPException(418, "teapot")


class Tagged:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def tagged(message: dict) -> None:  # type: ignore[type-arg]
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-tagged", b"1")]
            await send(message)

        await self.app(scope, receive, tagged)


def routes() -> list[BaseRoute]:
    return [
        Route("/system/v1/shadow/{x}", aecho),  # an earlier route inside a later mount's prefix
        Mount("/system/v1/crm", routes=[Route("/customers/{id}", aecho, methods=["GET"])]),
        Mount("/system/v1/shadow", routes=[Route("/{x}", aecho)]),
        Mount("/process/v1", routes=[Route("/orders/{id}", aecho), Route("/boom", boom)]),
        Mount("/v1/{tenant}", routes=[Route("/items", aecho)]),  # parameters: Starlette's way
        Route("/healthz", aecho),
        Route("/tagged", aecho, middleware=[Middleware(Tagged)]),
        # a wrapper acting on responses (as experience versioning does): its routes' errors
        # must still pass through it
        Mount("/wrapped", app=Tagged(Router(routes=[Route("/boom", boom)]))),
        # a router behind a scope guard: the guard answers first, whatever the path below
        Mount("/guarded", app=RequireScopes(Router(routes=[Route("/x/{id}", aecho)]), read=["r"])),
        Mount(
            "/multi",
            routes=[
                Route("/same", aecho, methods=["POST"]),  # a partial match before a full one
                Route("/same", aecho, methods=["GET"]),
                Route("/slash/", aecho),  # GET /multi/slash: Starlette's redirect
                Route("/{any}/deep", aecho),  # no literal start: always tried
                Route("/n/{num:int}/{rest:path}", aecho),  # convertors applied
            ],
        ),
        # a router with middleware of its own keeps its own dispatch
        Mount("/own", app=Router(routes=[Route("/t", aecho)], middleware=[Middleware(Tagged)])),
    ]


def apps() -> tuple[Starlette, Starlette]:
    plain = Starlette(routes=routes())
    fast = Starlette(routes=routes())
    fast.router = PrefixRouter(fast.router.routes)
    lean_endpoints(fast.router.routes)
    return plain, fast


async def test_prefix_router_answers_every_path_as_starlette_does() -> None:
    plain, fast = apps()
    paths = [
        ("GET", "/system/v1/crm/customers/7"),
        ("POST", "/system/v1/crm/customers/7"),  # 405 from the mounted router
        ("GET", "/system/v1/crm/nothing"),
        ("GET", "/system/v1/crm"),  # the mount itself: redirect or 404 as Starlette decides
        ("GET", "/system/v1/shadow/a"),  # the earlier Route wins, not the mount
        ("GET", "/process/v1/orders/o-1"),
        ("GET", "/v1/acme/items"),
        ("GET", "/healthz"),
        ("GET", "/nowhere/at/all"),
        ("GET", "/system/v1/crmx/customers/7"),
        ("GET", "/system/v1/crm/customers/a%0Ab"),  # a newline: Starlette's patterns refuse it
        ("GET", "/system/v1/crm/customers/7%0A"),
        ("GET", "/wrapped/boom"),
        ("GET", "/guarded/x/1"),
        ("POST", "/guarded/x/1"),
        ("GET", "/guarded/nothing"),
        ("GET", "/multi/same"),
        ("POST", "/multi/same"),
        ("DELETE", "/multi/same"),
        ("GET", "/multi/slash"),
        ("GET", "/multi/slash/"),
        ("GET", "/multi/q/deep"),
        ("GET", "/multi/q/shallow"),
        ("GET", "/multi/n/5/a/b"),
        ("GET", "/multi/n/x/a"),
        ("GET", "/own/t"),
    ]
    transports = [httpx.ASGITransport(app=a) for a in (plain, fast)]
    async with (
        httpx.AsyncClient(transport=transports[0], base_url="http://t") as a,
        httpx.AsyncClient(transport=transports[1], base_url="http://t") as b,
    ):
        for method, path in paths:
            ra = await a.request(method, path, follow_redirects=False)
            rb = await b.request(method, path, follow_redirects=False)
            assert (rb.status_code, rb.text) == (ra.status_code, ra.text), path
            assert rb.headers.get("location") == ra.headers.get("location"), path
            assert rb.headers.get("allow") == ra.headers.get("allow"), path
            assert rb.headers.get("x-tagged") == ra.headers.get("x-tagged"), path
    assert isinstance(fast.router, Router)


async def test_lean_endpoints_keep_error_handling_and_route_middleware() -> None:
    _, fast = apps()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fast), base_url="http://t") as c:
        teapot = await c.get("/process/v1/boom")
        assert teapot.status_code == 418 and teapot.text == "teapot"
        tagged = await c.get("/tagged")
        assert tagged.status_code == 200 and tagged.headers["x-tagged"] == "1"
        wrapped = await c.get("/wrapped/boom")
        assert wrapped.status_code == 418 and wrapped.headers["x-tagged"] == "1"
        sync_view = Starlette(routes=[Route("/s", echo)])
        assert lean_endpoints(sync_view.router.routes) == 0  # sync views keep the threadpool


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


class ScopesFromHeader:
    """A principal holding the scopes listed in ``x-scopes`` (the bearer middleware's place)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        for name, value in scope.get("headers", []):
            if name == b"x-scopes":
                scope[PRINCIPAL_KEY] = Principal(
                    client_id="c",
                    scopes=frozenset(value.decode().split(",")),
                    tier="internal",
                    issuer="test",
                    subject="c",
                    token_id=None,
                    expires_at=0.0,
                )
        await self.app(scope, receive, send)


async def test_a_guarded_router_lets_the_scope_through_as_starlette_does() -> None:
    plain, fast = apps()
    clients = [
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=ScopesFromHeader(a)), base_url="http://t"
        )
        for a in (plain, fast)
    ]
    try:
        for scopes in ("r", "w", "r,w"):
            for method, path in (("GET", "/guarded/x/1"), ("GET", "/guarded/nothing")):
                ra = await clients[0].request(method, path, headers={"x-scopes": scopes})
                rb = await clients[1].request(method, path, headers={"x-scopes": scopes})
                assert (rb.status_code, rb.text) == (ra.status_code, ra.text), (scopes, path)
        ok = await clients[1].get("/guarded/x/7", headers={"x-scopes": "r"})
        assert ok.status_code == 200 and ok.json()["params"] == {"id": "7"}
    finally:
        for c in clients:
            await c.aclose()
