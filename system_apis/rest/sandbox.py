"""The sandbox of a ``rest`` instance: its declared resources served from a fixture file.

The fixture holds the vendor's raw records per resource (``{resource: [record, ...]}``, YAML or
JSON). The sandbox answers the way the instance's declaration says the vendor does: the same
paths, credentials, paging style and parameter names, the records at ``items_path`` /
``record_path``. It is never more lenient than that contract: a wrong credential is a 401, an
unknown query parameter, a page size over ``max_limit`` or a cursor it did not issue a 400, an
unknown id a 404. Filters match a record's top-level field of the parameter's name exactly.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import jmespath
import orjson
import yaml
from aiohttp import web

from ..config import (
    ApiKeyAuth,
    ApiKeyQueryAuth,
    BasicAuth,
    BearerAuth,
    OAuthClientCredentialsAuth,
)
from .config import ResourceSpec, RestBackendConfig

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
MAX_TOKENS = 1000
"""Access tokens the sandbox remembers (the oldest is forgotten first)."""


class FixtureError(ValueError):
    """The fixture file does not fit the instance's declaration."""


def load_fixture(path: Path, config: RestBackendConfig) -> dict[str, list[dict[str, Any]]]:
    """The records per resource, checked: a mapping of declared resources to lists of objects."""
    text = path.read_text(encoding="utf-8")
    try:
        data = orjson.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
        raise FixtureError(f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}") from exc
    if not isinstance(data, dict):
        raise FixtureError(f"{path}: the top level must map resource names to record lists")
    out: dict[str, list[dict[str, Any]]] = {}
    for name, records in data.items():
        if name not in config.resources:
            raise FixtureError(
                f"{path}: {name}: not a declared resource {sorted(config.resources)}"
            )
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise FixtureError(f"{path}: {name}: must be a list of records (objects)")
        out[name] = records
    for name, spec in config.resources.items():
        for key in (spec.items_path, spec.record_path, spec.paging.next_field):
            if key not in (None, "@") and not _DOTTED.fullmatch(key):
                raise FixtureError(
                    f"resources.{name}: the sandbox builds bodies from dotted paths only, "
                    f"not {key!r}"
                )
    return out


def _place(path: str | None, value: Any, body: dict[str, Any]) -> None:
    if path is None:
        return
    *parents, last = path.split(".")
    node = body
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _wrap(path: str, value: Any) -> Any:
    if path == "@":
        return value
    body: dict[str, Any] = {}
    _place(path, value, body)
    return body


def _problem(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def _cursor_of(offset: int) -> str:
    return "c_" + base64.urlsafe_b64encode(f"o{offset}".encode()).decode().rstrip("=")


def _offset_of(cursor: str) -> int | None:
    if not cursor.startswith("c_"):
        return None
    raw = cursor[2:]
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return int(text[1:]) if re.fullmatch(r"o[0-9]{1,9}", text) else None


class Vendor:
    """The imitated vendor's state: the fixture's records and the tokens it issued."""

    def __init__(self, config: RestBackendConfig, records: dict[str, list[dict[str, Any]]]):
        self.config = config
        self.records = records
        self.tokens: OrderedDict[str, None] = OrderedDict()

    # --- credentials ---------------------------------------------------------------------

    def authorized(self, request: web.Request) -> bool:
        auth = self.config.auth
        header = request.headers.get("Authorization", "")
        if isinstance(auth, ApiKeyAuth):
            expected = auth.prefix + auth.key.get_secret_value()
            return secrets.compare_digest(request.headers.get(auth.header, ""), expected)
        if isinstance(auth, ApiKeyQueryAuth):
            given = request.query.get(auth.param, "")
            return secrets.compare_digest(given, auth.key.get_secret_value())
        if isinstance(auth, BearerAuth):
            return secrets.compare_digest(header, "Bearer " + auth.token.get_secret_value())
        if isinstance(auth, BasicAuth):
            raw = f"{auth.username}:{auth.password.get_secret_value()}".encode()
            return secrets.compare_digest(header, "Basic " + base64.b64encode(raw).decode())
        if isinstance(auth, OAuthClientCredentialsAuth):
            token = header.removeprefix("Bearer ")
            return header.startswith("Bearer ") and token in self.tokens
        return True

    async def token(self, request: web.Request) -> web.Response:
        auth = self.config.auth
        assert isinstance(auth, OAuthClientCredentialsAuth)
        raw = f"{auth.client_id}:{auth.client_secret.get_secret_value()}".encode()
        form = await request.post()
        basic = "Basic " + base64.b64encode(raw).decode()
        if not secrets.compare_digest(request.headers.get("Authorization", ""), basic):
            return _problem(401, "invalid_client", "client authentication failed")
        if form.get("grant_type") != "client_credentials":
            return _problem(400, "unsupported_grant_type", "grant_type must be client_credentials")
        token = secrets.token_urlsafe(24)
        self.tokens[token] = None
        while len(self.tokens) > MAX_TOKENS:
            self.tokens.popitem(last=False)
        return web.json_response(
            {"access_token": token, "token_type": "bearer", "expires_in": 3600}
        )

    # --- resources -----------------------------------------------------------------------

    def list_view(self, name: str, spec: ResourceSpec) -> Handler:
        p = spec.paging
        auth = self.config.auth
        control = {p.limit_param} if p.limit_param and p.style != "none" else set()
        control |= {
            "cursor": {p.cursor_param},
            "page": {p.page_param},
            "link": {p.page_param},
            "next_url": {p.page_param},
            "offset": {p.offset_param},
            "none": set(),
        }[p.style]
        if isinstance(auth, ApiKeyQueryAuth):
            control.add(auth.param)
        filters = {f.param or fname for fname, f in spec.filters.items()}

        async def handler(request: web.Request) -> web.Response:
            records = self.records.get(name, [])
            for key in request.query:
                if key not in control and key not in filters:
                    return _problem(400, "invalid_parameter", f"unknown parameter {key!r}")
            for key in filters & set(request.query):
                value = request.query[key]
                records = [r for r in records if _text(r.get(key)) == value]
            limit = p.default_limit
            if p.limit_param and p.style != "none" and p.limit_param in request.query:
                raw = request.query[p.limit_param]
                if not re.fullmatch(r"[0-9]{1,4}", raw) or not 1 <= int(raw) <= p.max_limit:
                    return _problem(
                        400, "invalid_parameter", f"{p.limit_param} must be 1..{p.max_limit}"
                    )
                limit = int(raw)
            start = 0
            if p.style == "none":
                limit = len(records)
            elif p.style == "cursor":
                given = request.query.get(p.cursor_param)
                if given is not None:
                    offset = _offset_of(given)
                    if offset is None:
                        return _problem(400, "invalid_cursor", "unknown cursor")
                    start = offset
            elif p.style == "offset":
                raw = request.query.get(p.offset_param, "0")
                if not re.fullmatch(r"[0-9]{1,9}", raw):
                    return _problem(400, "invalid_parameter", f"{p.offset_param} must be >= 0")
                start = int(raw)
            else:  # page numbers: page, link, next_url
                raw = request.query.get(p.page_param, str(p.first_page))
                if not re.fullmatch(r"[0-9]{1,9}", raw) or int(raw) < p.first_page:
                    return _problem(
                        400, "invalid_parameter", f"{p.page_param} must be >= {p.first_page}"
                    )
                start = (int(raw) - p.first_page) * limit
            page = records[start : start + limit]
            more = start + limit < len(records)
            body: dict[str, Any] = {}
            headers: dict[str, str] = {}
            if p.style == "cursor":
                _place(p.next_field, _cursor_of(start + limit) if more else None, body)
            elif p.style in ("link", "next_url") and more:
                query = {k: v for k, v in request.query.items() if k != p.page_param}
                number = start // limit + p.first_page + 1
                url = f"{request.url.origin()}{request.path}?" + urlencode(
                    {**query, p.page_param: number}
                )
                if p.style == "link":
                    headers["Link"] = f'<{url}>; rel="next"'
                else:
                    _place(p.next_field, url, body)
            elif p.style == "next_url":
                _place(p.next_field, None, body)
            if p.has_more_field is not None and p.style in ("page", "offset"):
                _place(p.has_more_field, more, body)
            result: Any = page
            if spec.items_path != "@":
                _place(spec.items_path, page, body)
                result = body
            return web.json_response(result, headers=headers, dumps=_dumps)

        return handler

    def get_view(self, name: str, spec: ResourceSpec) -> Handler:
        ident = jmespath.compile(spec.id_field)
        kind = name.rstrip("s") or name

        async def handler(request: web.Request) -> web.Response:
            wanted = request.match_info["id"]
            for record in self.records.get(name, []):
                if _text(ident.search(record)) == wanted:
                    return web.json_response(_wrap(spec.record_path, record), dumps=_dumps)
            return _problem(404, "not_found", f"no {kind} {wanted[:40]!r}")

        return handler


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def create_app(config: Any) -> web.Application:
    """The sandbox of one ``rest`` instance, from its declaration and its fixture file."""
    records = config.fixture_records() if isinstance(config, RestBackendConfig) else None
    if records is None:
        raise LookupError("a rest instance's sandbox needs its configuration with a fixture file")
    vendor = Vendor(config, records)

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/__") or request.path == token_path:
            return await handler(request)
        if not vendor.authorized(request):
            return _problem(401, "unauthorized", "missing or wrong credentials")
        return await handler(request)

    token_path = ""
    app = web.Application(middlewares=[authenticate])
    if isinstance(config.auth, OAuthClientCredentialsAuth):
        token_path = urlsplit(config.auth.token_url).path
        app.router.add_post(token_path, vendor.token)
    for name, spec in config.resources.items():
        if "list" in spec.operations:
            app.router.add_get(spec.path, vendor.list_view(name, spec))
        if "get" in spec.operations:
            app.router.add_get(spec.one_path, vendor.get_view(name, spec))
    return app
