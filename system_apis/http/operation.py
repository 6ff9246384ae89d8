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
    )

    def attach(fn: F) -> F:
        setattr(fn, SPEC_ATTR, spec)
        return fn

    return attach


def spec_of(endpoint: Any) -> OperationSpec | None:
    spec = getattr(endpoint, SPEC_ATTR, None)
    return spec if isinstance(spec, OperationSpec) else None


PAGE_QUERY: tuple[QueryParam, ...] = (
    QueryParam("cursor", "Opaque cursor from the previous page's next_cursor."),
    QueryParam("limit", "Page size (1-200).", type="integer"),
)
