"""RFC 9457 problem+json: the one shape of every error a client sees.

Every error body carries ``trace_id``; validation failures carry ``errors`` with field paths.
Nothing here ever echoes a stack trace, a secret or an internal host name.

Every problem ``type`` and ``title`` comes from ``PROBLEM_TYPES``, the one registry of the
kinds of error the gateway answers: a ``type`` is ``/problems/<slug>``, a URI reference
relative to the gateway, and ``docs/problems.md`` documents each slug in a section of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from starlette.responses import Response
from starlette.types import Scope

from gateway.policies.scope_keys import TRACE_ID_KEY

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "/problems/"

Slug = Literal[
    "bad-request",
    "validation-failed",
    "unsupported-media-type",
    "payload-too-large",
    "authentication-required",
    "invalid-token",
    "insufficient-scope",
    "not-found",
    "method-not-allowed",
    "conflict",
    "gone",
    "rate-limited",
    "too-many-attempts",
    "invalid-webhook-signature",
    "oauth-invalid-request",
    "oauth-invalid-client",
    "oauth-unauthorized-client",
    "oauth-unsupported-grant-type",
    "oauth-invalid-scope",
    "duplicate-customer",
    "request-in-progress",
    "order-not-cancellable",
    "step-failed",
    "operation-interrupted",
    "backend-rejected",
    "bad-gateway",
    "bad-upstream-data",
    "backend-auth-failed",
    "backend-unavailable",
    "circuit-open",
    "upstream-timeout",
    "authentication-unavailable",
    "rate-limit-unavailable",
    "store-unavailable",
    "request-head-too-large",
    "request-timeout",
    "too-many-connections",
    "overloaded",
    "host-not-allowed",
    "client-error",
    "server-error",
]
"""Every problem slug; mypy holds each ``problem=`` argument to one of them."""


@dataclass(frozen=True, slots=True)
class ProblemType:
    """One kind of error: its slug, its title, and its status (None: the cause's status)."""

    slug: Slug
    title: str
    status: int | None

    @property
    def uri(self) -> str:
        return TYPE_BASE + self.slug


PROBLEM_TYPES: Mapping[str, ProblemType] = {
    kind.slug: kind
    for kind in (
        ProblemType("bad-request", "Malformed request", 400),
        ProblemType("validation-failed", "Validation failed", 422),
        ProblemType("unsupported-media-type", "Unsupported media type", 415),
        ProblemType("payload-too-large", "Request body too large", 413),
        ProblemType("authentication-required", "Authentication required", 401),
        ProblemType("invalid-token", "Invalid access token", 401),
        ProblemType("insufficient-scope", "Insufficient scope", 403),
        ProblemType("not-found", "Not found", 404),
        ProblemType("method-not-allowed", "Method not allowed", 405),
        ProblemType("conflict", "Conflict", 409),
        ProblemType("gone", "Gone", 410),
        ProblemType("rate-limited", "Too many requests", 429),
        ProblemType("too-many-attempts", "Too many authentication attempts", 429),
        ProblemType("invalid-webhook-signature", "Invalid webhook signature", 401),
        ProblemType("oauth-invalid-request", "Invalid token request", 400),
        ProblemType("oauth-invalid-client", "Client authentication failed", 401),
        ProblemType("oauth-unauthorized-client", "Client not allowed to do this", 400),
        ProblemType("oauth-unsupported-grant-type", "Unsupported grant type", 400),
        ProblemType("oauth-invalid-scope", "Invalid scope", 400),
        ProblemType("duplicate-customer", "Duplicate customer", 409),
        ProblemType("request-in-progress", "Request in progress", 409),
        ProblemType("order-not-cancellable", "Order cannot be cancelled", 409),
        ProblemType("step-failed", "Operation step failed", None),
        ProblemType("operation-interrupted", "Operation interrupted", 503),
        ProblemType("backend-rejected", "Rejected by backend", 422),
        ProblemType("bad-gateway", "Bad gateway", 502),
        ProblemType("bad-upstream-data", "Bad upstream data", 502),
        ProblemType("backend-auth-failed", "Backend refused our credentials", 502),
        ProblemType("backend-unavailable", "Backend unavailable", 503),
        ProblemType("circuit-open", "Circuit open", 503),
        ProblemType("upstream-timeout", "Upstream timeout", 504),
        ProblemType("authentication-unavailable", "Authentication unavailable", 503),
        ProblemType("rate-limit-unavailable", "Rate limiting unavailable", 503),
        ProblemType("store-unavailable", "Store unavailable", 503),
        ProblemType("request-head-too-large", "Request head too large", 431),
        ProblemType("request-timeout", "Request timeout", 408),
        ProblemType("too-many-connections", "Too many connections", 503),
        ProblemType("overloaded", "Overloaded", 503),
        ProblemType("host-not-allowed", "Host not allowed", 400),
        ProblemType("client-error", "Client error", None),
        ProblemType("server-error", "Server error", None),
    )
}
"""slug -> its kind; ``docs/problems.md`` has a section for each."""

BY_STATUS: Mapping[int, ProblemType] = {
    kind.status: kind for kind in reversed(list(PROBLEM_TYPES.values())) if kind.status is not None
}
"""The kind an answer of that status is when nothing more specific is said: the first kind
registered with the status (``bad-request`` for 400, ``not-found`` for 404...)."""


def problem_kind(slug: str | None, status: int) -> ProblemType:
    """The registered kind ``slug`` names, else the status's own, else client/server error."""
    if slug is not None:
        kind = PROBLEM_TYPES.get(slug)
        if kind is not None:
            return kind
    kind = BY_STATUS.get(status)
    if kind is not None:
        return kind
    return PROBLEM_TYPES["client-error" if status < 500 else "server-error"]


def trace_id_of(scope: Scope | None) -> str | None:
    """The trace id the request carries (set by the tracing / request-id policy)."""
    if scope is None:
        return None
    value = scope.get(TRACE_ID_KEY)
    return value if isinstance(value, str) else None


ECHOED_PATH_CHARS = 256
"""How much of the request path an answer echoes: a client's 8 KB path must not come back
doubled in every error body."""


def echoed_path(path: str) -> str:
    """``path``, or its first ``ECHOED_PATH_CHARS`` characters and an ellipsis."""
    return path if len(path) <= ECHOED_PATH_CHARS else path[:ECHOED_PATH_CHARS] + "..."


def problem_body(
    status: int,
    *,
    problem: Slug | ProblemType | None = None,
    detail: str | None = None,
    instance: str | None = None,
    trace_id: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The body; ``problem`` is a registered kind (the status's own kind when None)."""
    kind = problem if isinstance(problem, ProblemType) else problem_kind(problem, status)
    body: dict[str, Any] = {"type": kind.uri, "title": kind.title, "status": status}
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
    problem: Slug | ProblemType | None = None,
    detail: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    """A problem+json response; pass the ASGI ``scope`` so ``instance``/``trace_id`` are filled.

    ``problem`` names the kind (its ``type`` and ``title``); without it, the status's own kind.
    """
    body = problem_body(
        status,
        problem=problem,
        detail=detail,
        instance=echoed_path(scope["path"]) if scope else None,
        trace_id=trace_id_of(scope),
        errors=errors,
        extra=extra,
    )
    return Response(
        orjson.dumps(body), status_code=status, headers=dict(headers or {}), media_type=PROBLEM_JSON
    )
