"""``GET /openapi.json`` and ``GET /docs``: the API described for machines and for people.

The docs page is Swagger UI served by the gateway itself from the ``swagger-ui-bundle-v2``
package, never from a CDN, so it works offline and under the strict CSP the edge sets for
``/docs``: no inline script, the initialiser is a static file of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from system_apis.http.operation import operation

from .openapi import build_openapi
from .problems import problem_response

OPENAPI_PATH = "/openapi.json"
DOCS_PATH = "/docs"
STATIC_PREFIX = "/docs/static/"
INIT_SCRIPT = "trellis-docs.js"

DOCS_PATHS: tuple[str, ...] = (OPENAPI_PATH, DOCS_PATH, STATIC_PREFIX + "{name}")
"""The route paths ``docs_routes`` adds; all three are public."""

_VENDOR_FILES: dict[str, str] = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
"""The only vendor files served: an allow-list, so no path ever reaches the file system."""

_INIT_JS = """\
// Starts Swagger UI; a file of its own so the page needs no inline script (strict CSP).
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-spec-url"),
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    tryItOutEnabled: false,
    persistAuthorization: false,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
});
"""

_PAGE = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="{static}swagger-ui.css">
<link rel="icon" type="image/png" href="{static}favicon-32x32.png">
</head>
<body>
<div id="swagger-ui" data-spec-url="{spec}"></div>
<script src="{static}swagger-ui-bundle.js"></script>
<script src="{static}{init}"></script>
</body>
</html>
"""

RoutesProvider = Callable[[], Sequence[BaseRoute]]


def swagger_ui_dir() -> Path:
    """Where the installed bundle keeps Swagger UI's files (fails loudly if it is missing)."""
    from swagger_ui_bundle import swagger_ui_path

    path = Path(str(swagger_ui_path))
    missing = [name for name in _VENDOR_FILES if not (path / name).is_file()]
    if missing:
        raise RuntimeError(f"swagger-ui bundle at {path} lacks {', '.join(missing)}")
    return path


@cache
def _static_file(name: str) -> bytes:
    """Read once: the bundle is immutable for the life of the process."""
    if name == INIT_SCRIPT:
        return _INIT_JS.encode()
    return (swagger_ui_dir() / name).read_bytes()


def docs_routes(
    routes_of: RoutesProvider | None = None, *, title: str = "Trellis API gateway"
) -> list[BaseRoute]:
    """The public documentation routes; the document is built on first request and kept.

    ``routes_of`` returns the routes to describe; by default the routes of the app serving the
    request (``request.app``), which is the whole gateway when these routes sit at its top.
    """
    built: dict[str, bytes] = {}

    def document(request: Request) -> bytes:
        if "doc" not in built:
            routes = routes_of() if routes_of is not None else request.app.routes
            built["doc"] = orjson.dumps(build_openapi(routes, title=title))
        return built["doc"]

    @operation("The OpenAPI 3.1 document of this gateway", response=dict[str, Any], tags=["docs"])
    async def openapi_json(request: Request) -> Response:
        return Response(document(request), media_type="application/json")

    @operation(
        "Interactive API documentation (Swagger UI)",
        response=str,
        media_type="text/html",
        tags=["docs"],
    )
    async def docs_page(request: Request) -> Response:
        root = request.scope.get("root_path", "")
        page = _PAGE.format(
            title=title, static=root + STATIC_PREFIX, spec=root + OPENAPI_PATH, init=INIT_SCRIPT
        )
        return Response(page, media_type="text/html; charset=utf-8")

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name == INIT_SCRIPT:
            media_type = "text/javascript; charset=utf-8"
        elif name in _VENDOR_FILES:
            media_type = _VENDOR_FILES[name]
        else:
            return problem_response(404, scope=request.scope, detail="no such docs asset")
        return Response(
            _static_file(name),
            media_type=media_type,
            headers={"Cache-Control": "public, max-age=86400"},
        )

    return [
        Route(OPENAPI_PATH, openapi_json, methods=["GET"]),
        Route(DOCS_PATH, docs_page, methods=["GET"]),
        Route(STATIC_PREFIX + "{name}", static, methods=["GET"], include_in_schema=False),
    ]
