"""The OpenAPI 3.1 document, built by walking the app's routes rather than kept by hand.

Each view's ``@operation`` spec gives its schemas; the ``RequireScopes`` wrapper of the mount a
route sits under gives its security. Walking the real routes means a route cannot exist without
appearing here: a view nobody annotated still shows up, marked ``x-trellis-undocumented``.
Only the OAuth and health endpoints, which the gateway owns and which take forms or answer
free-form JSON, are described by hand below.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import JsonSchemaMode
from starlette.convertors import (
    Convertor,
    FloatConvertor,
    IntegerConvertor,
    PathConvertor,
    UUIDConvertor,
)
from starlette.endpoints import HTTPEndpoint
from starlette.routing import BaseRoute, Host, Mount, Route

from gateway.oauth.scopes import SAFE_METHODS, RequireScopes
from gateway.problems import PROBLEM_JSON, TYPE_BASE
from system_apis.http.operation import OperationSpec, spec_of

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{model}"
REF_PREFIX = "#/components/schemas/"
SECURITY_SCHEME = "oauth2"
CLIENT_AUTH_SCHEME = "clientBasic"
UNDOCUMENTED = "x-trellis-undocumented"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "patch", "trace")

SCOPE_DESCRIPTIONS: Mapping[str, str] = {
    "system:read": "Read the canonical system APIs (one per backend).",
    "system:write": "Write through the canonical system APIs.",
    "process:read": "Read business views that compose several backends.",
    "process:write": "Run business operations (onboarding, orders, deals, leads).",
    "experience:web": "The web dashboard's views.",
    "experience:mobile": "The mobile app's views.",
    "experience:support": "The support desk's views.",
    "partner": "The partner API: only the partner's own records, PII masked.",
    "admin": "Operate the gateway (dead letters, replays, introspection of any token).",
}
"""Descriptions for scopes we know; a scope found on a route but not here is still listed."""


@dataclass(frozen=True, slots=True)
class Guard:
    """The scopes a mount demands: ``read`` for safe methods, ``write`` for the others."""

    read: frozenset[str]
    write: frozenset[str]

    def scopes_for(self, method: str) -> frozenset[str]:
        return self.read if method.upper() in SAFE_METHODS else self.write

    def inside(self, outer: Guard | None) -> Guard:
        """Nested guards must all pass, so their requirements add up."""
        if outer is None:
            return self
        return Guard(self.read | outer.read, self.write | outer.write)


@dataclass(frozen=True, slots=True)
class Site:
    """One method on one route as the router sees it: the unit the document describes."""

    path: str  # OpenAPI template, e.g. /system/v1/crm/contacts/{id}
    method: str  # lower case
    spec: OperationSpec | None
    scopes: frozenset[str] | None  # None: reachable without a token
    path_params: tuple[tuple[str, str], ...]  # (name, JSON schema type)
    tags: tuple[str, ...]
    name: str  # the endpoint's function name, for operationId hints and messages


_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::[a-zA-Z_][a-zA-Z0-9_]*)?}")


def _param_type(convertor: Convertor[Any]) -> str:
    if isinstance(convertor, IntegerConvertor):
        return "integer"
    if isinstance(convertor, FloatConvertor):
        return "number"
    if isinstance(convertor, (UUIDConvertor, PathConvertor)):
        return "string"
    return "string"


def _tag_for(mount_path: str) -> tuple[str, ...]:
    """``/system/v1/crm`` -> ``system/crm``: the mount chain names the API a route belongs to."""
    parts = [p for p in mount_path.strip("/").split("/") if p and not re.fullmatch(r"v\d+", p)]
    return ("/".join(parts),) if parts else ()


def _methods_of(route: Route) -> list[tuple[str, Any]]:
    """(method, endpoint) pairs; an ``HTTPEndpoint`` class contributes one per handler."""
    endpoint = route.endpoint
    if inspect.isclass(endpoint) and issubclass(endpoint, HTTPEndpoint):
        return [
            (m, getattr(endpoint, m))
            for m in HTTP_METHODS
            if callable(getattr(endpoint, m, None))
            and (route.methods is None or m.upper() in route.methods)
        ]
    methods = route.methods or {"GET"}
    chosen = [m.lower() for m in methods if m != "HEAD" or methods == {"HEAD"}]
    return [(m, endpoint) for m in sorted(chosen)]


def _unwrap(app: Any, guard: Guard | None) -> tuple[list[BaseRoute] | None, Guard | None]:
    """Peel wrappers (scope guards, middleware) off a mounted app down to its routes."""
    for _ in range(32):
        if isinstance(app, RequireScopes):
            guard = Guard(app.read, app.write).inside(guard)
            app = app.app
            continue
        routes = getattr(app, "routes", None)
        if isinstance(routes, list):
            return routes, guard
        inner = getattr(app, "app", None)
        if inner is None:
            break
        app = inner
    return None, guard


def iter_sites(
    routes: Iterable[BaseRoute], prefix: str = "", guard: Guard | None = None, mount: str = ""
) -> Iterator[Site]:
    """Every (path, method) the app answers, with the scopes that guard it, depth first."""
    for route in routes:
        if isinstance(route, Route):
            if not route.include_in_schema:
                continue
            path = prefix + _PARAM.sub(r"{\1}", route.path)
            params = tuple((n, _param_type(c)) for n, c in route.param_convertors.items())
            own = getattr(route.endpoint, "required_scopes", None)
            # a guard may wrap the endpoint itself: Route("/metrics", RequireScopes(view))
            route_guard, target = guard, route.endpoint
            while isinstance(target, RequireScopes):
                route_guard, target = (
                    Guard(target.read, target.write).inside(route_guard),
                    target.app,
                )
            for method, endpoint in _methods_of(route):
                if endpoint is route.endpoint:
                    endpoint = target
                scopes = route_guard.scopes_for(method) if route_guard is not None else None
                if isinstance(own, (set, frozenset, list, tuple)):
                    scopes = (scopes or frozenset()) | frozenset(own)
                yield Site(
                    path=path,
                    method=method,
                    spec=spec_of(endpoint),
                    scopes=scopes,
                    path_params=params,
                    tags=_tag_for(mount) if mount else _tag_for(route.path.split("/{")[0])[:1],
                    name=getattr(endpoint, "__name__", type(endpoint).__name__),
                )
        elif isinstance(route, Mount):
            here = prefix + _PARAM.sub(r"{\1}", route.path)
            children, inner_guard = _unwrap(route.app, guard)
            if children is None:
                # An opaque ASGI app (static files, a sub-application): list it, undescribed.
                yield Site(
                    path=here + "/{path}",
                    method="get",
                    spec=None,
                    scopes=inner_guard.read if inner_guard else None,
                    path_params=(("path", "string"),),
                    tags=_tag_for(here),
                    name=type(route.app).__name__,
                )
            else:
                yield from iter_sites(children, here, inner_guard, mount + route.path)
        elif isinstance(route, Host):
            children, inner_guard = _unwrap(route.app, guard)
            if children is not None:
                yield from iter_sites(children, prefix, inner_guard, mount)


def _operation_id(site: Site) -> str:
    words = re.sub(r"[^a-zA-Z0-9]+", "_", site.path).strip("_")
    return f"{site.method}_{words}" if words else site.method


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _problem_response(status: int | str, description: str | None = None) -> dict[str, Any]:
    text = description or (_phrase(status) if isinstance(status, int) else "Error")
    return {
        "description": f"{text} (problem+json)",
        "content": {PROBLEM_JSON: {"schema": {"$ref": REF.format(model="Problem")}}},
    }


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details, the shape of every error this gateway returns.",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {
            "type": "string",
            "format": "uri-reference",
            "description": f"The kind of error: {TYPE_BASE}<slug>, a slug docs/problems.md "
            "documents. Branch on this, not on the title.",
        },
        "title": {"type": "string", "description": "The kind's title; fixed per type."},
        "status": {"type": "integer", "minimum": 100, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "trace_id": {"type": ["string", "null"]},
        "errors": {
            "type": "array",
            "description": "Validation failures, one per field path.",
            "items": {"$ref": REF.format(model="FieldError")},
        },
        "backend": {"type": "string", "description": "The backend that failed (5xx)."},
        "required_scopes": {"type": "array", "items": {"type": "string"}},
        "error": {"type": "string", "description": "RFC 6749 error code (OAuth endpoints)."},
        "error_description": {"type": "string"},
    },
    "additionalProperties": True,
}

FIELD_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["path", "message"],
    "properties": {
        "path": {"type": "string", "description": "Slash-separated, e.g. lines/0/quantity."},
        "message": {"type": "string"},
        "type": {"type": "string"},
    },
}

LOCATION_HEADER: dict[str, Any] = {
    "description": "The created resource: the collection's path and the new resource's id.",
    "schema": {"type": "string", "format": "uri-reference"},
}

BODY_ERRORS: tuple[int, ...] = (400, 413, 415, 422)
"""What any view reading a JSON body may answer: unreadable, too large, not JSON, invalid."""


class _Schemas:
    """Collects every pydantic type the operations mention, then renders them in one pass.

    One pass lets pydantic give colliding class names (two ``ContactCreate`` models) distinct
    component names, and a model used both as input and output its two shapes.
    """

    def __init__(self) -> None:
        self._wanted: dict[tuple[int, JsonSchemaMode], TypeAdapter[Any]] = {}
        self._types: dict[int, Any] = {}

    def want(self, tp: Any, mode: JsonSchemaMode) -> tuple[int, JsonSchemaMode]:
        key = (id(tp), mode)
        if key not in self._wanted:
            self._types[id(tp)] = tp  # keep it alive so the id stays unique
            self._wanted[key] = TypeAdapter(tp)
        return key

    def render(self) -> tuple[dict[tuple[int, JsonSchemaMode], Any], dict[str, Any]]:
        if not self._wanted:
            return {}, {}
        inputs = [(key[0], key[1], adapter) for key, adapter in self._wanted.items()]
        schemas, defs = TypeAdapter.json_schemas(inputs, ref_template=REF)
        return dict(schemas), dict(defs.get("$defs", {}))


def _query_param(q: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": q.type}
    if q.enum:
        schema["enum"] = list(q.enum)
    for bound in ("minimum", "maximum"):
        if getattr(q, bound, None) is not None:
            schema[bound] = getattr(q, bound)
    param: dict[str, Any] = {"name": q.name, "in": "query", "required": q.required}
    param["schema"] = schema
    if q.description:
        param["description"] = q.description
    return param


def _header_param(h: Any) -> dict[str, Any]:
    param: dict[str, Any] = {"name": h.name, "in": "header", "required": h.required}
    param["schema"] = {"type": "string", "minLength": 1, "maxLength": 200}
    if h.description:
        param["description"] = h.description
    return param


def _guard_responses() -> dict[str, Any]:
    return {
        "401": _problem_response(401, "Missing, invalid or expired token"),
        "403": _problem_response(403, "The token lacks a required scope"),
    }


def _operation(
    site: Site, schemas: _Schemas, pending: list[tuple[dict[str, Any], tuple[int, Any]]]
) -> dict[str, Any]:
    """One operation object; schema slots are filled after all models are rendered."""
    spec = site.spec
    op: dict[str, Any] = {"operationId": _operation_id(site)}
    params: list[dict[str, Any]] = [
        {"name": n, "in": "path", "required": True, "schema": {"type": t}}
        for n, t in site.path_params
    ]
    responses: dict[str, Any] = {}
    if spec is None:
        op["summary"] = f"{site.method.upper()} {site.path}"
        op["description"] = (
            f"Not described yet: the view `{site.name}` has no @operation annotation."
        )
        op[UNDOCUMENTED] = True
        responses["2XX"] = {"description": "Success (shape not described)."}
    else:
        op["summary"] = spec.summary
        if spec.description:
            op["description"] = spec.description
        if spec.deprecated:
            op["deprecated"] = True
        params += [_query_param(q) for q in spec.query]
        params += [_header_param(h) for h in spec.headers]
        if spec.request is not None:
            media: dict[str, Any] = {}
            op["requestBody"] = {"required": True, "content": {"application/json": media}}
            pending.append((media, schemas.want(spec.request, "validation")))
        ok: dict[str, Any] = {"description": _phrase(spec.status)}
        if spec.status == 201:
            ok["headers"] = {"Location": LOCATION_HEADER}
        if spec.response is not None:
            media = {}
            ok["content"] = {spec.media_type: media}
            pending.append((media, schemas.want(spec.response, "serialization")))
        responses[str(spec.status)] = ok
        for status, text in sorted(spec.extra_responses.items()):
            responses[str(status)] = (
                _problem_response(status, text) if status >= 400 else {"description": text}
            )
        errors = set(spec.errors) | (set(BODY_ERRORS) if spec.request is not None else set())
        if spec.query:
            errors.add(400)  # every query parameter is parsed; a malformed one is a 400 problem
        for status in sorted(errors):
            responses.setdefault(str(status), _problem_response(status))
    if site.scopes is not None:
        op["security"] = [{SECURITY_SCHEME: sorted(site.scopes)}]
        for code, response in _guard_responses().items():
            responses.setdefault(code, response)
    responses["default"] = _problem_response("default", "Any other error")
    if params:
        op["parameters"] = params
    op["tags"] = list(spec.tags) if spec is not None and spec.tags else list(site.tags)
    op["responses"] = dict(sorted(responses.items(), key=lambda kv: (kv[0] == "default", kv[0])))
    return op


def _component_name(name: str) -> str:
    """A class-like component name for one of pydantic's definition names.

    ``OrderLine-Output`` -> ``OrderLine`` (the shape clients read), ``OrderLine-Input`` ->
    ``OrderLineInput``, ``Page_Order_`` -> ``PageOrder``, and a module-qualified name pydantic
    gives two classes of one name (``system_apis__crm__ContactCreate``) -> ``CrmContactCreate``.
    """
    suffix = ""
    if name.endswith("-Output"):
        name = name.removesuffix("-Output")
    elif name.endswith("-Input"):
        name, suffix = name.removesuffix("-Input"), "Input"
    if "__" in name:
        *modules, cls = name.split("__")
        name = f"{modules[-1]}_{cls}"
    words = re.split(r"[^A-Za-z0-9]+", name)
    return "".join(w[:1].upper() + w[1:] for w in words if w) + suffix


def component_names(defs: Mapping[str, Any]) -> dict[str, str]:
    """pydantic's definition names -> unique class-like component names.

    Client generators name a class (and its module) after each schema's name or title: a name
    they must mangle, or two schemas titled alike, lose a schema and every schema using it.
    """
    names = {name: _component_name(name) for name in defs}
    taken = set(MANUAL_SCHEMAS) | {"Problem", "FieldError"}
    seen: dict[str, str] = {}
    for old, new in names.items():
        if new in taken or new in seen:
            raise ValueError(f"schemas {old!r} and {seen.get(new, new)!r} both map to {new!r}")
        seen[new] = old
    return names


def _renamed(node: Any, names: Mapping[str, str]) -> Any:
    """``node`` with every ``$ref`` to a component pointing at its new name."""
    if isinstance(node, dict):
        out = {k: _renamed(v, names) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            old = ref.removeprefix(REF_PREFIX)
            out["$ref"] = REF.format(model=names.get(old, old))
        return out
    if isinstance(node, list):
        return [_renamed(v, names) for v in node]
    return node


def titled(schemas: Mapping[str, Any]) -> dict[str, Any]:
    """Each component schema with its name as its ``title``, so titles are unique too."""
    return {name: {**schema, "title": name} for name, schema in schemas.items()}


def build_openapi(
    routes: Sequence[BaseRoute],
    *,
    title: str = "Trellis API gateway",
    version: str = "1",
    description: str = "",
    servers: Sequence[str] = (),
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``routes`` (pass ``app.routes``: the whole gateway)."""
    schemas = _Schemas()
    pending: list[tuple[dict[str, Any], tuple[int, Any]]] = []
    paths: dict[str, dict[str, Any]] = {}
    scopes: set[str] = set()
    for site in iter_sites(routes):
        item = paths.setdefault(site.path, {})
        manual = MANUAL_OPERATIONS.get((site.path, site.method))
        if manual is not None:
            op = {**manual, "operationId": _operation_id(site)}
            if site.scopes is not None:
                op["security"] = [{SECURITY_SCHEME: sorted(site.scopes)}]
                op["responses"] = {**_guard_responses(), **op["responses"]}
                scopes |= site.scopes
            item[site.method] = op
            continue
        if site.method in item:
            continue  # two routes answer the same path and method: the router picks the first
        item[site.method] = _operation(site, schemas, pending)
        scopes |= site.scopes or set()
    rendered, defs = schemas.render()
    names = component_names(defs)
    for media, key in pending:
        media["schema"] = _renamed(rendered[key], names)
    components: dict[str, Any] = {
        "schemas": titled(
            {
                **dict(sorted((names[k], _renamed(v, names)) for k, v in defs.items())),
                **MANUAL_SCHEMAS,
                "Problem": PROBLEM_SCHEMA,
                "FieldError": FIELD_ERROR_SCHEMA,
            }
        ),
        "securitySchemes": {
            SECURITY_SCHEME: {
                "type": "oauth2",
                "description": "OAuth 2.0 client credentials; send the token as a Bearer token.",
                "flows": {
                    "clientCredentials": {
                        "tokenUrl": "/oauth/token",
                        "scopes": {
                            s: SCOPE_DESCRIPTIONS.get(s, f"Grants access to routes needing {s}.")
                            for s in sorted(scopes)
                        },
                    }
                },
            },
            CLIENT_AUTH_SCHEME: {
                "type": "http",
                "scheme": "basic",
                "description": "OAuth client authentication (client_secret_basic).",
            },
        },
    }
    doc: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": title,
            "version": version,
            "description": description
            or "Experience, process and system APIs of the Trellis gateway. "
            "Every error is application/problem+json (RFC 9457).",
        },
        "paths": dict(sorted(paths.items())),
        "components": components,
    }
    if servers:
        doc["servers"] = [{"url": url} for url in servers]
    return doc


def undocumented_operations(doc: Mapping[str, Any]) -> list[str]:
    """``METHOD path`` of each operation built from a view without ``@operation``."""
    return sorted(
        f"{method.upper()} {path}"
        for path, item in doc.get("paths", {}).items()
        for method, op in item.items()
        if isinstance(op, dict) and op.get(UNDOCUMENTED)
    )


# --- the gateway's own endpoints, described by hand --------------------------------------------

_FORM = "application/x-www-form-urlencoded"
_CLIENT_AUTH: list[dict[str, list[str]]] = [{CLIENT_AUTH_SCHEME: []}, {}]
_CLIENT_FIELDS: dict[str, Any] = {
    "client_id": {"type": "string", "description": "client_secret_post authentication."},
    "client_secret": {"type": "string", "description": "client_secret_post authentication."},
}


def _json(ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model=ref)}}},
    }


def _form(ref: str) -> dict[str, Any]:
    return {"required": True, "content": {_FORM: {"schema": {"$ref": REF.format(model=ref)}}}}


def _oauth_errors() -> dict[str, Any]:
    return {
        "400": _problem_response(400, "RFC 6749 error (invalid_request, invalid_scope, ...)"),
        "401": _problem_response(401, "Client authentication failed (invalid_client)"),
        "429": _problem_response(429, "Too many authentication attempts"),
        "default": _problem_response("default", "Any other error"),
    }


MANUAL_SCHEMAS: dict[str, Any] = {
    "TokenRequest": {
        "type": "object",
        "required": ["grant_type"],
        "properties": {
            "grant_type": {"type": "string", "enum": ["client_credentials"]},
            "scope": {"type": "string", "description": "Space-separated; default: all granted."},
            **_CLIENT_FIELDS,
        },
    },
    "TokenResponse": {
        "type": "object",
        "required": ["access_token", "token_type", "expires_in"],
        "properties": {
            "access_token": {"type": "string", "description": "An RFC 9068 JWT."},
            "token_type": {"type": "string", "enum": ["Bearer"]},
            "expires_in": {"type": "integer"},
            "scope": {"type": "string"},
        },
    },
    "TokenParameter": {
        "type": "object",
        "required": ["token"],
        "properties": {
            "token": {"type": "string"},
            "token_type_hint": {"type": "string"},
            **_CLIENT_FIELDS,
        },
    },
    "Introspection": {
        "type": "object",
        "required": ["active"],
        "properties": {
            "active": {"type": "boolean"},
            "scope": {"type": "string"},
            "client_id": {"type": "string"},
            "sub": {"type": ["string", "null"]},
            "iss": {"type": "string"},
            "exp": {"type": "integer"},
            "jti": {"type": ["string", "null"]},
            "token_type": {"type": "string"},
            "tier": {"type": ["string", "null"]},
        },
    },
    "JWKS": {
        "type": "object",
        "required": ["keys"],
        "properties": {"keys": {"type": "array", "items": {"type": "object"}}},
    },
    "AuthorizationServerMetadata": {
        "type": "object",
        "description": "RFC 8414 authorization server metadata.",
        "required": ["issuer", "token_endpoint"],
        "properties": {
            "issuer": {"type": "string"},
            "token_endpoint": {"type": "string"},
            "jwks_uri": {"type": "string"},
            "introspection_endpoint": {"type": "string"},
            "revocation_endpoint": {"type": "string"},
            "grant_types_supported": {"type": "array", "items": {"type": "string"}},
            "scopes_supported": {"type": "array", "items": {"type": "string"}},
        },
        "additionalProperties": True,
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}},
        "additionalProperties": True,
    },
}

MANUAL_OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("/oauth/token", "post"): {
        "summary": "Issue an access token (client credentials grant)",
        "description": "RFC 6749 §4.4. Authenticate with HTTP Basic or client_id/client_secret "
        "in the form. The token carries the requested scopes, or all the client's.",
        "tags": ["oauth"],
        "security": _CLIENT_AUTH,
        "requestBody": _form("TokenRequest"),
        "responses": {"200": _json("TokenResponse", "The access token"), **_oauth_errors()},
    },
    ("/oauth/introspect", "post"): {
        "summary": "Introspect a token (RFC 7662)",
        "description": "A client sees its own tokens; an admin client sees every token.",
        "tags": ["oauth"],
        "security": _CLIENT_AUTH,
        "requestBody": _form("TokenParameter"),
        "responses": {
            "200": _json("Introspection", "Whether the token is active"),
            **_oauth_errors(),
        },
    },
    ("/oauth/revoke", "post"): {
        "summary": "Revoke a token (RFC 7009)",
        "description": "Unknown or already invalid tokens are a no-op that still answers 200.",
        "tags": ["oauth"],
        "security": _CLIENT_AUTH,
        "requestBody": _form("TokenParameter"),
        "responses": {"200": {"description": "Revoked (or nothing to revoke)"}, **_oauth_errors()},
    },
    ("/.well-known/jwks.json", "get"): {
        "summary": "Public signing keys (JWKS)",
        "tags": ["oauth"],
        "responses": {
            "200": _json("JWKS", "The public keys that verify our tokens"),
            "default": _problem_response("default", "Any other error"),
        },
    },
    ("/.well-known/oauth-authorization-server", "get"): {
        "summary": "Authorization server metadata (RFC 8414)",
        "tags": ["oauth"],
        "responses": {
            "200": _json("AuthorizationServerMetadata", "Discovery document"),
            "default": _problem_response("default", "Any other error"),
        },
    },
    ("/metrics", "get"): {
        "summary": "Prometheus metrics",
        "description": "Requests, latencies, backend calls, breakers and rate-limit rejections "
        "in the Prometheus text format. Needs the configured scope unless configured public.",
        "tags": ["observability"],
        "responses": {
            "200": {
                "description": "Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            "default": _problem_response("default", "Any other error"),
        },
    },
    ("/healthz", "get"): {
        "summary": "Liveness: the process answers",
        "tags": ["health"],
        "responses": {
            "200": _json("Health", "Alive"),
            "default": _problem_response("default", "Any other error"),
        },
    },
    ("/readyz", "get"): {
        "summary": "Readiness: config loaded and the required backends answer",
        "tags": ["health"],
        "responses": {
            "200": _json("Health", "Ready"),
            "503": _json("Health", "Not ready; `reasons` says why"),
            "default": _problem_response("default", "Any other error"),
        },
    },
}
"""The gateway's own form-based and free-form endpoints, keyed by (path, method)."""
