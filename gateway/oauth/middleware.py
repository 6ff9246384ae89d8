"""The bearer-token middleware: verifies a presented token and records the outcome in the scope.

It never answers by itself: public routes (health, discovery, the token endpoint) simply ignore
a bad token, and protected routes refuse through :class:`gateway.oauth.scopes.RequireScopes`.
Pure ASGI, so it costs microseconds and keeps contextvars intact.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.oauth.verify import TokenRefused, TokenVerifier
from gateway.principal import AUTH_ERROR_KEY, PRINCIPAL_KEY
from gateway.problems import problem_response

log = logging.getLogger(__name__)

_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
"""RFC 6750 §2.1 ``b64token``: anything else is malformed before any parsing."""


def presented_token(scope: Scope, max_bytes: int) -> str | TokenRefused | None:
    """The bearer token as sent, its syntax not yet checked (``well_formed``); a refusal if
    it cannot be one; None if there is none."""
    values = [v for k, v in scope.get("headers", ()) if k == b"authorization"]
    if not values:
        return None
    if len(values) > 1:
        return TokenRefused("malformed")
    value: bytes = values[0]
    if value[:7].lower() != b"bearer ":
        return None
    raw: bytes = value[7:].strip()
    if len(raw) > max_bytes:
        return TokenRefused("too_large")
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        return TokenRefused("malformed")


def well_formed(token: str) -> bool:
    return _B64TOKEN.fullmatch(token) is not None


class BearerMiddleware:
    """Puts a :class:`~gateway.principal.Principal` or the refusal reason into the scope."""

    def __init__(
        self,
        app: ASGIApp,
        verifier: TokenVerifier | Callable[[], TokenVerifier],
        max_token_bytes: int,
    ) -> None:
        """``verifier``, or a function returning the current one: the gateway's verifier is
        made (and replaced on key rotation) by the OAuth component's lifespan, after the app."""
        self.app = app
        if isinstance(verifier, TokenVerifier):
            fixed = verifier
            self.verifier_of: Callable[[], TokenVerifier] = lambda: fixed
        else:
            self.verifier_of = verifier
        self.max_token_bytes = max_token_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A coroutine function, so servers given this middleware as their app detect ASGI 3.
        if scope["type"] in ("http", "websocket"):
            found = presented_token(scope, self.max_token_bytes)
            if isinstance(found, str):
                try:
                    verifier = self.verifier_of()
                    # the usual case: a token verified before (so well formed then), no await
                    known = verifier.verify_known(found)
                except Exception as exc:  # not started yet, or the store closing under us
                    await self._unavailable(scope, receive, send, exc)
                    return
                if known is not None:
                    scope[PRINCIPAL_KEY] = known
                elif well_formed(found):
                    await self._verify(scope, receive, send, verifier, found)
                    return
                else:
                    self._refused(scope, TokenRefused("malformed"))
            elif found is not None:
                self._refused(scope, found)
        await self.app(scope, receive, send)

    async def _verify(
        self, scope: Scope, receive: Receive, send: Send, verifier: TokenVerifier, token: str
    ) -> None:
        try:
            scope[PRINCIPAL_KEY] = await verifier.verify(token)
        except TokenRefused as refused:
            self._refused(scope, refused)
        except Exception as exc:  # the revocation store (Redis) is down or stalled
            await self._unavailable(scope, receive, send, exc)
            return
        await self.app(scope, receive, send)

    @staticmethod
    async def _unavailable(scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
        """503 with Retry-After when the token cannot be checked (never a 500)."""
        log.warning("token check unavailable: %s", type(exc).__name__)
        if scope["type"] != "http":
            raise exc
        response = problem_response(
            503,
            scope=scope,
            problem="authentication-unavailable",
            detail="the token could not be checked; retry shortly",
            headers={"Retry-After": "1"},
        )
        await response(scope, receive, send)

    @staticmethod
    def _refused(scope: Scope, refused: TokenRefused) -> None:
        scope[AUTH_ERROR_KEY] = refused.reason
        log.debug("bearer token refused: %s", refused.reason)
