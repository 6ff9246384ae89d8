"""RFC 9457 problem+json: the one shape of every error a client sees.

Every error body carries ``trace_id``; validation failures carry ``errors`` with field paths.
Nothing here ever echoes a stack trace, a secret or an internal host name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Scope

from gateway.policies.scope_keys import TRACE_ID_KEY

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://trellis.dev/problems/"


def trace_id_of(scope: Scope | None) -> str | None:
    """The trace id the request carries (set by the tracing / request-id policy)."""
    if scope is None:
        return None
    value = scope.get(TRACE_ID_KEY)
    return value if isinstance(value, str) else None


def problem_body(
    status: int,
    *,
    title: str | None = None,
    detail: str | None = None,
    type_: str | None = None,
    instance: str | None = None,
    trace_id: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body: dict[str, Any] = {
        "type": type_ or TYPE_BASE + phrase.lower().replace(" ", "-"),
        "title": title or phrase,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body["trace_id"] = trace_id
    if errors:
        body["errors"] = list(errors)
    if extra:
        body.update(extra)
    return body


def problem_response(
    status: int,
    *,
    scope: Scope | None = None,
    title: str | None = None,
    detail: str | None = None,
    type_: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    """A problem+json response; pass the ASGI ``scope`` so ``instance``/``trace_id`` are filled."""
    body = problem_body(
        status,
        title=title,
        detail=detail,
        type_=type_,
        instance=scope.get("path") if scope else None,
        trace_id=trace_id_of(scope),
        errors=errors,
        extra=extra,
    )
    return Response(
        orjson.dumps(body), status_code=status, headers=dict(headers or {}), media_type=PROBLEM_JSON
    )
