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
