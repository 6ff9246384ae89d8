"""Route protection by scope, with RFC 6750 answers in problem+json.

Read scopes apply to GET/HEAD/OPTIONS, write scopes to every other method; the token must hold
all scopes of the applicable set. A refusal says which scope is missing, never why a token
failed (that stays in ``scope["trellis.auth_error"]`` for logs).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from gateway.principal import AUTH_ERROR_KEY, principal_of
from gateway.problems import problem_response

REALM = "trellis"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Endpoint = Callable[[Request], Awaitable[Response]]


def authorization_failure(scope: Scope, needed: frozenset[str]) -> Response | None:
    """The 401/403 response for this request, or None when its principal holds ``needed``."""
    principal = principal_of(scope)
    if principal is None:
        if scope.get(AUTH_ERROR_KEY) is None:
            return problem_response(
                401,
                scope=scope,
                problem="authentication-required",
                detail="Send an OAuth 2.0 bearer token in the Authorization header.",
                headers={"WWW-Authenticate": f'Bearer realm="{REALM}"'},
            )
        return problem_response(
            401,
            scope=scope,
            problem="invalid-token",
            detail="The access token is invalid, expired or revoked.",
            headers={"WWW-Authenticate": f'Bearer realm="{REALM}", error="invalid_token"'},
        )
    if not needed <= principal.scopes:
        wanted = " ".join(sorted(needed))
        return problem_response(
            403,
            scope=scope,
            problem="insufficient-scope",
            detail=f"This operation requires the scope(s): {wanted}.",
            headers={
                "WWW-Authenticate": (
                    f'Bearer realm="{REALM}", error="insufficient_scope", scope="{wanted}"'
                )
            },
            extra={"required_scopes": sorted(needed)},
        )
    return None


class RequireScopes:
    """Wraps an ASGI app (a route, a Mount, a router) so only tokens with its scopes reach it."""

    def __init__(
        self, app: ASGIApp, read: Iterable[str], write: Iterable[str] | None = None
    ) -> None:
        self.app = app
        self.read = frozenset(read)
        self.write = frozenset(write) if write is not None else self.read

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # not a coroutine of its own: the app's (or the refusal's) awaitable is returned, so
        # every await of the request's coroutine chain passes one frame fewer
        if scope["type"] not in ("http", "websocket"):
            return self.app(scope, receive, send)
        failure = self.refusal(scope)
        if failure is None:
            return self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return WebSocketClose(code=1008)(scope, receive, send)
        return failure(scope, receive, send)

    def refusal(self, scope: Scope) -> Response | None:
        """The 401/403 answer to this request, or None when its token holds the scopes."""
        needed = self.read if scope.get("method", "GET") in SAFE_METHODS else self.write
        return authorization_failure(scope, needed)


def requires(*scopes: str) -> Callable[[Endpoint], Endpoint]:
    """Decorator for one Starlette endpoint function: the token must hold all ``scopes``."""
    needed = frozenset(scopes)

    def decorate(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            failure = authorization_failure(request.scope, needed)
            return failure if failure is not None else await endpoint(request)

        return guarded

    return decorate
