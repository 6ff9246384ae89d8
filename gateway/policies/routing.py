"""The route template of a request, for span names, metric labels and access logs.

Routing itself is Starlette's router (``Gateway``'s routes are flat mounts, the busiest
first: the router tries them in order). It records the matched route in ``scope["route"]``
(each router level in turn, so the innermost route last) and accumulates mount prefixes in
``scope["root_path"]``, both in place, so a policy reads the template AFTER calling the app.
Templates (``/customers/{id}``) keep label cardinality bounded; raw paths never appear in
telemetry.
"""

from __future__ import annotations

from starlette.routing import Mount
from starlette.types import Scope

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
