"""Routing helpers: the top-level router's prefix index, and the route template of a request
(for span names, metric labels and access logs).

Starlette's router records the matched route in ``scope["route"]`` and accumulates mount
prefixes in ``scope["root_path"]`` in place, so an outer middleware reads the template AFTER
calling the app. Templates (``/customers/{id}``) keep label cardinality bounded; raw paths
never appear in telemetry.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Host, Mount, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.oauth.scopes import RequireScopes

UNMATCHED = "unmatched"
"""The template of a request no route matched (404, or answered before routing)."""


def route_template(scope: Scope) -> str:
    """``/system/v1/crm/customers/{id}`` for a routed request, else ``"unmatched"``."""
    route = scope.get("route")
    if route is None:
        return UNMATCHED
    root = scope.get("root_path", "") or ""
    if isinstance(route, Mount):
        # a Mount whose app is not a router: the accumulated prefix is all we know
        return root or "/"
    path_format = getattr(route, "path_format", None)
    if not isinstance(path_format, str):
        return UNMATCHED
    return root.rstrip("/") + path_format or "/"


class PrefixRouter(Router):
    """Starlette's router, with mounts found by their path prefix instead of one by one.

    The gateway's top level is a dozen mounts (``/system/v1/{backend}``, ``/process/v1``, the
    experience channels...), and Starlette tries each route's pattern in order. Here a mount
    whose prefix no earlier route could also match is found with one dict lookup per prefix
    depth; everything else (routes, overlapping prefixes, 404/405, redirects, lifespan) is
    Starlette's own dispatch, unchanged.
    """

    def __init__(self, routes: Sequence[BaseRoute] | None = None, **kwargs: object) -> None:
        super().__init__(routes=routes, **kwargs)  # type: ignore[arg-type]
        self._by_prefix: dict[str, Mount] = {}
        literals: list[str] = []  # what paths each earlier route can match start with
        for route in self.routes:
            if isinstance(route, Mount) and route.path and "{" not in route.path:
                prefix = route.path
                if not any(
                    prefix.startswith(lit) or lit.startswith(prefix + "/") for lit in literals
                ):
                    self._by_prefix.setdefault(prefix, route)
            literals.append(_literal(route))
        self._depths = sorted({p.count("/") for p in self._by_prefix})

    def _mount_for(self, path: str) -> Mount | None:
        by_prefix = self._by_prefix
        for depth in self._depths:
            end = 0
            for _ in range(depth):
                end = path.find("/", end + 1)
                if end < 0:
                    return None
            mount = by_prefix.get(path[:end])
            if mount is not None:
                return mount
        return None

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        # Starlette's patterns never match a newline (``.``), and ``$`` matches before a final
        # one: such paths take Starlette's own dispatch, as does any root_path
        if path and self._by_prefix and not scope.get("root_path") and "\n" not in path:
            mount = self._mount_for(path)
            if mount is not None:
                # what Mount.matches would put in the scope for a prefix without parameters,
                # without its pattern match (the prefix lookup already matched)
                if "router" not in scope:
                    scope["router"] = self
                scope["route"] = mount
                scope["path_params"] = dict(scope.get("path_params", {}))
                scope["app_root_path"] = scope.get("app_root_path", "")
                scope["root_path"] = mount.path
                scope["endpoint"] = mount.app
                await mount.handle(scope, receive, send)
                return
        await super().app(scope, receive, send)


def _literal(route: BaseRoute) -> str:
    """The literal start of every path ``route`` matches ("" when it could match any path)."""
    if isinstance(route, Mount | Route):
        return route.path.split("{", 1)[0]
    return ""


def lean_endpoints(routes: Iterable[BaseRoute]) -> int:
    """Call each function endpoint with one coroutine instead of Starlette's three.

    Starlette's ``request_response`` wraps every endpoint in its own exception handling
    (``wrap_app_handling_exceptions``: two more closures and a ``send`` wrapper per request)
    although the app's ``ExceptionMiddleware`` outside the router applies the same handlers
    with the same "response already started" rule. Routes with middleware of their own, and
    class or ASGI endpoints, are left as Starlette made them. Returns how many were changed.
    """
    changed = 0
    for route in routes:
        if isinstance(route, Route):
            made_by = getattr(route.app, "__qualname__", "")
            if made_by == "request_response.<locals>.app" and _is_async_function(route.endpoint):
                route.app = _call_endpoint(route.endpoint)
                changed += 1
        elif isinstance(route, Mount | Host):
            app: Any = route.app
            # only through routers and scope guards: a wrapper of another kind may act on the
            # responses (version headers added in ``send``, say) and must then see the error
            # responses too, which Starlette's route-level handling answers inside it
            while isinstance(app, RequireScopes):
                app = app.app
            if isinstance(app, Router):
                changed += lean_endpoints(app.routes)
    return changed


def _is_async_function(endpoint: Any) -> bool:
    return inspect.iscoroutinefunction(endpoint)


def _call_endpoint(endpoint: Callable[[Request], Awaitable[Response]]) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await endpoint(Request(scope, receive, send))
        await response(scope, receive, send)

    return app
