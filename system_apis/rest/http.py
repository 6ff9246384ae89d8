"""The canonical views of a ``rest`` instance: ``GET /{resource}`` (a page, in the
``{"items", "next_cursor"}`` shape) and ``GET /{resource}/{id}`` for each declared resource,
each with its OpenAPI description built from the declared model."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..errors import InvalidInput
from ..http.common import json_response, query_int
from ..http.operation import BACKEND_ERRORS, QueryParam, operation, page_query
from ..models import Page
from . import paging
from .client import Resource, RestClient

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _bad_filter(name: str, message: str) -> InvalidInput:
    return InvalidInput(
        f"query parameter {name} {message}",
        [{"path": f"query/{name}", "message": message, "type": "filter"}],
        status=400,
    )


def filters_of(request: Request, resource: Resource) -> dict[str, str]:
    """The declared filters the caller gave, each checked (length, controls, pattern)."""
    out: dict[str, str] = {}
    for name, spec in resource.spec.filters.items():
        value = request.query_params.get(name)
        if value is None or value == "":
            continue
        if len(value) > spec.max_length:
            raise _bad_filter(name, f"is longer than {spec.max_length} characters")
        if _CONTROL.search(value):
            raise _bad_filter(name, "holds a control character")
        if spec.pattern is not None and re.fullmatch(spec.pattern, value, re.ASCII) is None:
            raise _bad_filter(name, "does not have the expected form")
        out[name] = value
    return out


def _list_view(client: RestClient, res: Resource) -> Any:
    p = res.spec.paging
    query = (
        *(page_query(p.max_limit) if p.style != "none" else ()),
        *(
            QueryParam(name, f.description or f"Passed to the vendor as {f.param or name}.")
            for name, f in res.spec.filters.items()
        ),
    )

    @operation(
        res.spec.description or f"{res.name}, one page at a time",
        response=Page[res.mapper.model],  # type: ignore[name-defined]
        query=query,
        errors=[400, *BACKEND_ERRORS],
        description=f"Served by {client.name}: GET {res.spec.path}.",
    )
    async def list_records(request: Request) -> Response:
        if p.style == "none":
            token, limit = None, p.default_limit
        else:
            token = paging.decode(request.query_params.get("cursor"), res.numeric_cursor)
            limit = query_int(request, "limit", p.default_limit, hi=p.max_limit)
        page = await client.list_page(res.name, token, limit, filters_of(request, res))
        return json_response({"items": page.items, "next_cursor": page.next_cursor})

    return list_records


def _get_view(client: RestClient, res: Resource) -> Any:
    @operation(
        f"One of {res.name} by id",
        response=res.mapper.model,
        errors=[404, *BACKEND_ERRORS],
        description=f"Served by {client.name}: GET {res.spec.one_path}.",
    )
    async def get_record(request: Request) -> Response:
        return json_response(await client.get_one(res.name, request.path_params["id"]))

    return get_record


def routes(client: RestClient) -> list[BaseRoute]:
    """Two routes per resource (those its ``operations`` name), in the order declared."""
    out: list[BaseRoute] = []
    for res in client.resources.values():
        if "get" in res.spec.operations:
            out.append(Route(f"/{res.name}/{{id}}", _get_view(client, res), methods=["GET"]))
        if "list" in res.spec.operations:
            out.append(Route(f"/{res.name}", _list_view(client, res), methods=["GET"]))
    return out
