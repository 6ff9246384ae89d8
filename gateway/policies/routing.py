"""The route template of a request, for span names, metric labels and access logs.

Routing itself is Starlette's router (``Gateway``'s routes are flat mounts, the busiest
first: the router tries them in order). It records the matched route in ``scope["route"]``
(each router level in turn, so the innermost route last) and accumulates mount prefixes in
``scope["root_path"]``, both in place, so a policy reads the template AFTER calling the app.
Templates (``/customers/{id}``) keep label cardinality bounded; raw paths never appear in
telemetry.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Receive, Scope, Send

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
        return _mount_template(root, "", scope) or "/"
    path_format = getattr(route, "path_format", None)
    if not isinstance(path_format, str):
        return UNMATCHED
    if root:
        root = root.rstrip("/")
        params = scope.get("path_params")
        if params and len(params) > path_format.count("{"):  # a mount's parameters
            root = _mount_template(root, path_format, scope)
    return root + path_format or "/"


def _mount_template(root: str, path_format: str, scope: Scope) -> str:
    """``root`` (the matched mount prefixes, with their parameters' values) with each value of
    a parameter the route's own ``path_format`` lacks put back as ``{name}``: a mount with
    parameters must not put raw values in telemetry."""
    params = scope.get("path_params")
    if not params or len(params) <= path_format.count("{"):
        return root  # no mount parameters (the usual case)
    segments = root.split("/")
    for name, value in params.items():
        if "{" + name + "}" in path_format or "{" + name + ":" in path_format:
            continue
        text = str(value)
        for i in range(len(segments) - 1, 0, -1):  # the right-most: the innermost mount's
            if segments[i] == text:
                segments[i] = "{" + name + "}"
                break
    return "/".join(segments)


class ViewApp:
    """A view function (``Request -> Response``) served as an ASGI app.

    Starlette's ``Route`` runs a plain function through ``request_response``, which handles
    exceptions once more inside the route (the app's ``ExceptionMiddleware`` already does,
    with the same handlers); given an ASGI app instead, ``Route`` calls it as it is, and an
    exception reaches the app's handlers directly. Only for routes with nothing between the
    route and the mount that acts on responses: such a wrapper (an experience version's
    headers) must see error answers too, which the route-level handling gives it. Attributes
    of the view (its ``__name__``, the OpenAPI operation attached to it) are kept.
    """

    def __init__(self, view: Callable[[Request], Awaitable[Response]]) -> None:
        self.view = view
        self.__dict__.update(getattr(view, "__dict__", {}))
        self.__name__ = getattr(view, "__name__", type(view).__name__)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.view(Request(scope, receive, send))
        await response(scope, receive, send)


def served_directly(routes: Sequence[BaseRoute]) -> list[BaseRoute]:
    """``routes`` with each function endpoint served as a :class:`ViewApp`."""
    served: list[BaseRoute] = []
    for route in routes:
        if isinstance(route, Route) and inspect.iscoroutinefunction(route.endpoint):
            route = Route(
                route.path, ViewApp(route.endpoint), methods=route.methods, name=route.name
            )
        served.append(route)
    return served
