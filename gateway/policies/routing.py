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
from typing import Any, NamedTuple

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Host, Match, Mount, Route, Router
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


class _Target(NamedTuple):
    """A mount found by prefix, and, when its app is a plain router (behind a scope guard or
    not), that router's routes to try directly, each with the literal start of its paths."""

    mount: Mount
    guard: RequireScopes | None
    router: Router | None
    routes: tuple[tuple[str, BaseRoute], ...]


class PrefixRouter(Router):
    """Starlette's router, with mounts found by their path prefix instead of one by one.

    The gateway's top level is a dozen mounts (``/system/v1/{backend}``, ``/process/v1``, the
    experience channels...), and Starlette tries each route's pattern in order. Here a mount
    whose prefix no earlier route could also match is found with one dict lookup per prefix
    depth. When that mount's app is a router (behind a ``RequireScopes`` guard or not), its
    routes are tried here too, in their order, skipping those whose literal start the path
    lacks, and a full match's endpoint is called directly: four coroutine frames fewer on every
    await of the request (Mount, Router twice, Route). Anything else (a partial match's 405, a
    redirect, a 404, overlapping prefixes, lifespan, websockets) is Starlette's own dispatch.
    """

    def __init__(self, routes: Sequence[BaseRoute] | None = None, **kwargs: object) -> None:
        super().__init__(routes=routes, **kwargs)  # type: ignore[arg-type]
        self._by_prefix: dict[str, _Target] = {}
        literals: list[str] = []  # what paths each earlier route can match start with
        for route in self.routes:
            if isinstance(route, Mount) and route.path and "{" not in route.path:
                prefix = route.path
                if not any(
                    prefix.startswith(lit) or lit.startswith(prefix + "/") for lit in literals
                ):
                    self._by_prefix.setdefault(prefix, _target(route))
            literals.append(_literal(route))
        self._depths = sorted({p.count("/") for p in self._by_prefix})

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:  # type: ignore[override]
        # Router.__call__ without a coroutine of its own (one frame fewer on every await)
        if "router" not in scope:
            scope["router"] = self
        return self.middleware_stack(scope, receive, send)

    def _mount_for(self, path: str) -> _Target | None:
        # the slashes of the path, up to the deepest prefix, found once (C-level splits)
        parts = path.split("/", self._depths[-1] + 1)
        by_prefix = self._by_prefix
        for depth in self._depths:  # ascending
            if len(parts) <= depth + 1:
                return None  # the path ends before: no slash closes a prefix this deep
            target = by_prefix.get("/".join(parts[: depth + 1]))
            if target is not None:
                return target
        return None

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        # Starlette's patterns never match a newline (``.``), and ``$`` matches before a final
        # one: such paths take Starlette's own dispatch, as does any root_path
        if path and self._by_prefix and not scope.get("root_path") and "\n" not in path:
            target = self._mount_for(path)
            if target is not None:
                mount = target.mount
                # what Mount.matches would put in the scope for a prefix without parameters,
                # without its pattern match (the prefix lookup already matched)
                if "router" not in scope:
                    scope["router"] = self
                scope["route"] = mount
                scope["path_params"] = dict(scope.get("path_params", {}))
                scope["app_root_path"] = scope.get("app_root_path", "")
                scope["root_path"] = mount.path
                scope["endpoint"] = mount.app
                if target.router is None:
                    await mount.handle(scope, receive, send)
                    return
                if target.guard is not None:
                    refusal = target.guard.refusal(scope)
                    if refusal is not None:
                        await refusal(scope, receive, send)
                        return
                rest = path[len(mount.path) :]  # what get_route_path gives the routes
                method = scope["method"]
                for literal, route in target.routes:
                    if not rest.startswith(literal):
                        continue  # its pattern cannot match this path
                    if type(route) is not Route:
                        match, child_scope = route.matches(scope)
                        if match is Match.FULL:
                            scope["route"] = route
                            scope.update(child_scope)
                            await route.handle(scope, receive, send)
                            return
                        if match is Match.PARTIAL:
                            break
                        continue
                    # Route.matches, for a path already relative to the mount
                    found = route.path_regex.match(rest)
                    if found is None:
                        continue
                    if route.methods and method not in route.methods:
                        break  # a partial match: 405, or a later full one, as the router decides
                    params = found.groupdict()
                    if params:
                        convertors = route.param_convertors
                        for key, value in params.items():
                            params[key] = convertors[key].convert(value)
                        scope["path_params"].update(params)  # our own copy, made above
                    scope["route"] = route
                    scope["endpoint"] = route.endpoint
                    await route.app(scope, receive, send)  # Route.handle, the method allowed
                    return
                await target.router(scope, receive, send)
                return
        await super().app(scope, receive, send)


def _target(mount: Mount) -> _Target:
    app: Any = mount.app
    guard = None
    if isinstance(app, RequireScopes):
        guard, app = app, app.app
    # a router with middleware of its own (or a subclass) keeps its own dispatch
    if type(app) is Router and app.middleware_stack == app.app:
        routes = tuple((_literal(route), route) for route in app.routes)
        return _Target(mount, guard, app, routes)
    return _Target(mount, None, None, ())


def _literal(route: BaseRoute) -> str:
    """The literal start of every path ``route`` matches ("" when it could match any path)."""
    if isinstance(route, Mount | Route):
        return route.path.split("{", 1)[0]
    return ""


def lean_endpoints(routes: Iterable[BaseRoute]) -> int:
    """Call each function endpoint with one coroutine instead of Starlette's three.

    Starlette's ``request_response`` wraps every endpoint in its own exception handling
    (``wrap_app_handling_exceptions``: two more closures and a ``send`` wrapper per request)
    although the app's error handlers outside the router (``gateway.errors.ErrorHandlers``)
    apply the same handlers with the same "response already started" rule. Routes with
    middleware of their own, and class or ASGI endpoints, are left as Starlette made them.
    Returns how many were changed.
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
