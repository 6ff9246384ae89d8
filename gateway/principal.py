"""Who is calling: the authenticated principal every layer below the edge may read.

The OAuth middleware puts it in the ASGI scope; process and experience APIs import only this
module (never the OAuth machinery) to authorise by data ownership, e.g. a partner sees only
its own records.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import Scope

from gateway.policies.scope_keys import AUTH_ERROR_KEY, PRINCIPAL_KEY

__all__ = ["AUTH_ERROR_KEY", "PRINCIPAL_KEY", "Principal", "principal_of"]


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified bearer token, reduced to what authorisation needs."""

    client_id: str
    scopes: frozenset[str]
    tier: str
    issuer: str
    subject: str
    token_id: str | None
    expires_at: float

    def has_scopes(self, needed: frozenset[str] | set[str]) -> bool:
        """True when every scope in ``needed`` was granted."""
        return needed <= self.scopes


def principal_of(scope: Scope) -> Principal | None:
    """The principal of this request, or None when no valid bearer token came with it."""
    value = scope.get(PRINCIPAL_KEY)
    return value if isinstance(value, Principal) else None
