"""Declare what an HTTP view takes and returns, once: the OpenAPI document is built from it.

Every layer's views are decorated with ``@operation(...)``; the gateway walks its routes, reads
these specs and the scopes of the mounts they sit under, and renders OpenAPI 3.1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

F = TypeVar("F", bound=Callable[..., Any])

SPEC_ATTR = "__trellis_operation__"


@dataclass(frozen=True, slots=True)
class QueryParam:
    name: str
    description: str = ""
    type: str = "string"  # JSON schema type: string | integer | boolean
    required: bool = False
    enum: tuple[str, ...] = ()  # allowed values, when the parameter is a closed vocabulary
    minimum: int | None = None  # bounds of an integer parameter
    maximum: int | None = None


@dataclass(frozen=True, slots=True)
class HeaderParam:
    name: str
    description: str = ""
    required: bool = False


@dataclass(frozen=True, slots=True)
class OperationSpec:
    summary: str
    request: type[BaseModel] | None = None
    response: Any = None  # a pydantic model type, list[Model], or None for no body
    status: int = 200
    query: tuple[QueryParam, ...] = ()
    headers: tuple[HeaderParam, ...] = ()
    errors: tuple[int, ...] = ()
    tags: tuple[str, ...] = ()
    description: str = ""
    extra_responses: dict[int, str] = field(default_factory=dict)
    media_type: str = "application/json"  # of the success body (e.g. text/html for a page)
    deprecated: bool = False


def operation(
    summary: str,
    *,
    request: type[BaseModel] | None = None,
    response: Any = None,
    status: int = 200,
    query: Sequence[QueryParam] = (),
    headers: Sequence[HeaderParam] = (),
    errors: Sequence[int] = (),
    tags: Sequence[str] = (),
    description: str = "",
    extra_responses: dict[int, str] | None = None,
    media_type: str = "application/json",
    deprecated: bool = False,
) -> Callable[[F], F]:
    """Attach an ``OperationSpec`` to a view function (no behaviour change)."""

    spec = OperationSpec(
        summary=summary,
        request=request,
        response=response,
        status=status,
        query=tuple(query),
        headers=tuple(headers),
        errors=tuple(errors),
        tags=tuple(tags),
        description=description,
        extra_responses=dict(extra_responses or {}),
        media_type=media_type,
        deprecated=deprecated,
    )

    def attach(fn: F) -> F:
        setattr(fn, SPEC_ATTR, spec)
        return fn

    return attach


def spec_of(endpoint: Any) -> OperationSpec | None:
    """The endpoint's spec, following ``functools.wraps`` chains: decorator order is free."""
    seen = 0
    while endpoint is not None and seen < 10:
        spec = getattr(endpoint, SPEC_ATTR, None)
        if isinstance(spec, OperationSpec):
            return spec
        endpoint = getattr(endpoint, "__wrapped__", None)
        seen += 1
    return None


def page_query(max_limit: int = 200) -> tuple[QueryParam, ...]:
    """``cursor`` and ``limit`` as a list view takes them, with that view's page-size cap."""
    return (
        QueryParam("cursor", "Opaque cursor from the previous page's next_cursor."),
        QueryParam("limit", "Page size.", type="integer", minimum=1, maximum=max_limit),
    )


PAGE_QUERY: tuple[QueryParam, ...] = page_query()

BACKEND_ERRORS: tuple[int, ...] = (502, 503, 504)
"""What any view that reaches a backend may answer: bad upstream data, unavailable, timeout."""
