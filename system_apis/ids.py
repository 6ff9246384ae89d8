"""Vendor id and cursor syntax: what a caller-supplied id or cursor must look like before any
call carries it to a backend.

Each connector declares its vendor's syntaxes once, beside its client, with these two types.
Patterns are ASCII only (``re.ASCII``, ``[0-9]``): ``str.isdigit()`` and ``\\d`` accept digits
from every script (superscripts, Arabic-Indic, fullwidth), which a vendor either refuses with a
5xx or reads as another record. A value outside the syntax never reaches the vendor:

- an id in a path names a resource that cannot exist there: ``BackendNotFound`` (404);
- a cursor is the caller's malformed query parameter: ``InvalidInput`` (400).

Either way no call is made, so the backend's circuit breaker never sees it.
"""

from __future__ import annotations

import re

from .errors import BackendNotFound, InvalidInput

__all__ = ["OPAQUE_CURSOR", "CursorSyntax", "IdSyntax"]


class IdSyntax:
    """One kind of vendor id, e.g. the helpdesk's ticket ids (positive integers)."""

    __slots__ = ("_match", "backend", "kind", "pattern")

    def __init__(self, backend: str, kind: str, pattern: str) -> None:
        self.backend = backend
        self.kind = kind
        self.pattern = pattern
        self._match = re.compile(pattern, re.ASCII).fullmatch

    def matches(self, value: str) -> bool:
        return self._match(value) is not None

    def __call__(self, value: str) -> str:
        """``value`` if it is an id of this kind, else ``BackendNotFound`` (no call made)."""
        if self._match(value) is None:
            raise BackendNotFound(self.backend, f"no {self.kind} {value[:40]!r}")
        return value


class CursorSyntax:
    """What a vendor's page cursor (as we hand it out) can look like."""

    __slots__ = ("_match", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._match = re.compile(pattern, re.ASCII).fullmatch

    def __call__(self, value: str | None, param: str = "cursor") -> str | None:
        """``value`` (None or empty: the first page), else ``InvalidInput`` 400."""
        if not value:
            return None
        if self._match(value) is None:
            raise InvalidInput(
                f"query parameter {param} is not a cursor this API issued",
                [{"path": f"query/{param}", "message": "invalid cursor", "type": "cursor"}],
                status=400,
            )
        return value


OPAQUE_CURSOR = CursorSyntax(r"[A-Za-z0-9._~=+/-]{1,512}")
"""A vendor's opaque token (base64 or URL-safe text): its own charset, bounded."""
