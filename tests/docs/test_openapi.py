"""The OpenAPI document: valid 3.1, covers every route, scopes and problem+json everywhere."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from openapi_spec_validator import validate
from starlette.routing import BaseRoute, Mount, Route

from gateway.app import PUBLIC_PATHS, PUBLIC_PREFIXES, Gateway
from gateway.docs import DOCS_PATHS
from gateway.oauth.scopes import RequireScopes
from gateway.openapi import SCOPE_DESCRIPTIONS, build_openapi, undocumented_operations
from system_apis.config import BACKEND_NAMES
from tests.docs.live import GatewayThread, gateway_with_docs

UNDOCUMENTED_ALLOWED: list[str] = []
"""Operations allowed without an ``@operation`` spec. Keep it empty: add the decorator instead."""

HIDDEN_ROUTES = {"/docs/static/{name}"}
"""Routes deliberately left out of the document (``include_in_schema=False``)."""

READ_METHODS = {"get", "head", "options"}

NON_PROBLEM_ERRORS = {("get", "/readyz", "503")}
"""Error statuses whose body is not problem+json: readiness answers 503 with its report."""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    return gateway_with_docs(9101, tmp_path_factory.mktemp("openapi"))


@pytest.fixture(scope="module")
def doc(app: Gateway) -> dict[str, Any]:
    return build_openapi(app.routes)


def walk(
    routes: list[BaseRoute], prefix: str = "", guard: RequireScopes | None = None
) -> Iterator[tuple[str, str, Route, RequireScopes | None]]:
    """An independent walk of the router: (path, method, route, guard) for every endpoint."""
    for route in routes:
        if isinstance(route, Route):
            path = prefix + re.sub(r"{(\w+):\w+}", r"{\1}", route.path)
            own = route.endpoint if isinstance(route.endpoint, RequireScopes) else guard
            for method in sorted(route.methods or {"GET"}):
                if method != "HEAD":
                    yield path, method.lower(), route, own
        elif isinstance(route, Mount):
            app: Any = route.app
            inner = guard
            while not isinstance(getattr(app, "routes", None), list):
                if isinstance(app, RequireScopes):
                    inner = app
                assert hasattr(app, "app"), f"mount {prefix + route.path} hides its routes"
                app = app.app
            yield from walk(app.routes, prefix + route.path, inner)


def test_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_document_covers_every_route(app: Gateway, doc: dict[str, Any]) -> None:
    in_app = {(p, m) for p, m, _, _ in walk(app.routes)}
    in_doc = {(p, m) for p, item in doc["paths"].items() for m in item}
    shown = {(p, m) for p, m, r, _ in walk(app.routes) if r.include_in_schema}
    # a busiest route the top level tries first is documented once, under its mount
    hidden = {(p, m) for p, m, r, _ in walk(app.routes) if not r.include_in_schema} - shown
    assert {p for p, _ in hidden if not p.startswith("/console")} == HIDDEN_ROUTES
    # the operator console's pages are for people, not API operations: all hidden
    assert any(p.startswith("/console") for p, _ in hidden)
    assert not any(p.startswith("/console") for p, _ in in_doc)
    assert in_doc == in_app - hidden
    # the system APIs of every backend are there, not just some
    for backend in BACKEND_NAMES:
        assert any(p.startswith(f"/system/v1/{backend}/") for p, _ in in_doc), backend


def test_no_operation_hides_without_a_description(doc: dict[str, Any]) -> None:
    """A view without ``@operation`` shows up here by name, so it is annotated, not forgotten."""
    assert undocumented_operations(doc) == UNDOCUMENTED_ALLOWED
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op["summary"], (method, path)


def test_protected_operations_list_their_scopes(app: Gateway, doc: dict[str, Any]) -> None:
    schemes = doc["components"]["securitySchemes"]
    flow = schemes["oauth2"]["flows"]["clientCredentials"]
    assert flow["tokenUrl"] == "/oauth/token"
    for path, method, route, guard in walk(app.routes):
        if not route.include_in_schema:
            continue
        op = doc["paths"][path][method]
        if guard is None:
            public = path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
            assert public, f"{path} is neither public nor guarded"
            assert path in PUBLIC_PATHS or path in DOCS_PATHS or path.startswith("/webhooks/")
            assert "security" not in op or op["security"] in ([{"clientBasic": []}, {}],)
            continue
        needed = guard.read if method in READ_METHODS else guard.write
        assert op["security"] == [{"oauth2": sorted(needed)}], (method, path)
        assert set(needed) <= set(flow["scopes"])
        for status in ("401", "403"):
            assert status in op["responses"], (method, path, status)


def test_every_scope_is_described(doc: dict[str, Any]) -> None:
    """A new scope gets a description (and so the fuzzing client of test_schemathesis holds it)."""
    flow = doc["components"]["securitySchemes"]["oauth2"]["flows"]["clientCredentials"]
    assert set(flow["scopes"]) <= set(SCOPE_DESCRIPTIONS)


def test_system_scopes_are_read_for_get_and_write_otherwise(doc: dict[str, Any]) -> None:
    for path, item in doc["paths"].items():
        if path.startswith("/system/v1/"):
            for method, op in item.items():
                want = "system:read" if method == "get" else "system:write"
                assert op["security"] == [{"oauth2": [want]}], (method, path)


def _resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    return doc["components"]["schemas"][ref.rsplit("/", 1)[1]]  # type: ignore[no-any-return]


def test_errors_are_problem_json(doc: dict[str, Any]) -> None:
    problem = doc["components"]["schemas"]["Problem"]
    assert {"type", "title", "status"} <= set(problem["required"])
    assert {"detail", "instance", "trace_id", "errors"} <= set(problem["properties"])
    for path, item in doc["paths"].items():
        for method, op in item.items():
            responses = op["responses"]
            assert "default" in responses, (method, path)
            for status, response in responses.items():
                if (method, path, status) in NON_PROBLEM_ERRORS:
                    continue
                if status == "default" or status[0] in "45":
                    content = response["content"]
                    assert list(content) == ["application/problem+json"], (method, path, status)
                    assert content["application/problem+json"]["schema"] == {
                        "$ref": "#/components/schemas/Problem"
                    }


def test_declared_errors_and_schemas_reach_the_document(doc: dict[str, Any]) -> None:
    """Spot checks that the @operation specs become schemas: body, response, params, errors."""
    create = doc["paths"]["/system/v1/inventory/reservations"]["post"]
    body = _resolve(doc, create["requestBody"]["content"]["application/json"]["schema"])
    assert {"reference", "lines"} <= set(body["required"])
    assert "201" in create["responses"] and "422" in create["responses"]
    assert {"502", "503", "504"} <= set(create["responses"])
    assert [p["name"] for p in create["parameters"]] == ["Idempotency-Key"]

    get = doc["paths"]["/system/v1/crm/contacts/{id}"]["get"]
    assert get["parameters"][0] == {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    }
    contact = _resolve(doc, get["responses"]["200"]["content"]["application/json"]["schema"])
    assert {"id", "email", "first_name", "last_name"} <= set(contact["properties"])
    assert "404" in get["responses"]

    page = doc["paths"]["/system/v1/billing/invoices"]["get"]
    names = [p["name"] for p in page["parameters"]]
    assert names == ["customer", "status", "cursor", "limit"]
    listed = _resolve(doc, page["responses"]["200"]["content"]["application/json"]["schema"])
    assert set(listed["properties"]) == {"items", "next_cursor"}


def test_colliding_model_names_stay_distinct(doc: dict[str, Any]) -> None:
    """Two views take a model named ContactCreate (CRM and marketing): both schemas survive."""
    crm = doc["paths"]["/system/v1/crm/contacts"]["post"]["requestBody"]
    mkt = doc["paths"]["/system/v1/marketing/contacts"]["post"]["requestBody"]
    a = crm["content"]["application/json"]["schema"]["$ref"]
    b = mkt["content"]["application/json"]["schema"]["$ref"]
    assert a != b


def test_oauth_endpoints_are_described_by_hand(doc: dict[str, Any]) -> None:
    token = doc["paths"]["/oauth/token"]["post"]
    form = token["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    assert _resolve(doc, form)["properties"]["grant_type"]["enum"] == ["client_credentials"]
    assert "200" in token["responses"] and "401" in token["responses"]
    for path in ("/oauth/introspect", "/oauth/revoke"):
        assert "requestBody" in doc["paths"][path]["post"]


def test_served_document_is_the_built_one(live_gateway: GatewayThread, tmp_path: Path) -> None:
    r = requests.get(live_gateway.url + "/openapi.json", timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    served = r.json()
    validate(served)
    assert served == build_openapi(live_gateway.app.routes)


def test_component_names_and_titles_are_unique(doc: dict[str, Any]) -> None:
    """Generators name classes and modules after a schema's title, or its name without one.

    Two schemas titled alike (a model's input and output shapes, two ``ContactCreate``) make a
    generated client drop one of them, and every schema that refers to it.
    """
    schemas = doc["components"]["schemas"]
    for name, schema in schemas.items():
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]*", name), name
        assert schema.get("title") == name, (name, schema.get("title"))
    titles = [schema["title"] for schema in schemas.values()]
    assert len(titles) == len(set(titles))
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', orjson.dumps(doc).decode()))
    assert refs <= set(schemas), refs - set(schemas)


def test_created_answers_declare_location(doc: dict[str, Any]) -> None:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            created = op["responses"].get("201")
            if created is not None:
                assert "Location" in created.get("headers", {}), (method, path)
