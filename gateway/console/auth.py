"""Who may use the console: sign-in with an admin client's credentials, the session cookie,
CSRF tokens and sign-out.

A browser cannot hold client credentials, so the sign-in form posts them once. The gateway
checks them exactly as its token endpoint does (the same brute-force guard first, then the
argon2 authenticator) and issues one of its own access tokens for that client, with only the
``admin`` scope and the console's short lifetime, into an HttpOnly, SameSite=Strict cookie
scoped to ``/console`` (Secure when the request came over TLS). Every page verifies it with the
gateway's token verifier, so expiry, key rotation and revocation apply; signing out revokes
its ``jti``. Nothing is kept per session on the server, so any worker serves any request.

A request that already carries a verified bearer token with ``admin`` (an SSO proxy in front
injecting an external issuer's token) is let in the same way, without the form.

The CSRF token of a page is a hash of the credential that authenticated it: a page of another
origin can neither read the HttpOnly cookie nor this page, so it cannot forge the token, and
the server needs no state to check it. State-changing requests also must not come from
another ``Origin``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from gateway.oauth import OAuth
from gateway.oauth.clients import PresentedCredentials
from gateway.oauth.middleware import presented_token
from gateway.oauth.verify import TokenRefused
from gateway.principal import Principal, principal_of

from .config import ConsoleConfig

ADMIN_SCOPE = "admin"
COOKIE = "trellis_console"
COOKIE_PATH = "/console"
CSRF_FIELD = "csrf"
_CSRF_CONTEXT = b"trellis-console-csrf\x00"


def csrf_token(credential: str) -> str:
    """The CSRF token bound to a session (or bearer) credential."""
    digest = hashlib.sha256(_CSRF_CONTEXT + credential.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    """A signed-in operator: the verified principal and how it came."""

    principal: Principal
    credential: str
    via: Literal["session", "bearer"]

    @property
    def csrf(self) -> str:
        return csrf_token(self.credential)

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented, self.csrf)


@dataclass(frozen=True, slots=True)
class SignIn:
    """The outcome of a sign-in attempt."""

    outcome: Literal["ok", "wrong", "not_admin", "limited"]
    token: str | None = None
    retry_after_s: float | None = None


class ConsoleAuth:
    def __init__(self, oauth: OAuth, config: ConsoleConfig) -> None:
        self.oauth = oauth
        self.config = config

    async def user(self, request: Request) -> ConsoleUser | None:
        """The operator behind this request, or None (no, expired or revoked session)."""
        principal = principal_of(request.scope)
        if principal is not None and ADMIN_SCOPE in principal.scopes:
            bearer = presented_token(request.scope, self.oauth.config.max_token_bytes)
            if isinstance(bearer, str):
                return ConsoleUser(principal, bearer, "bearer")
        token = request.cookies.get(COOKIE)
        if not token or len(token) > self.oauth.config.max_token_bytes:
            return None
        try:
            principal = await self.oauth.verifier.verify(token)
        except TokenRefused:
            return None
        if ADMIN_SCOPE not in principal.scopes:
            return None
        return ConsoleUser(principal, token, "session")

    async def sign_in(self, request: Request, client_id: str, secret: str) -> SignIn:
        """Check the credentials as the token endpoint does; a session token if they hold."""
        address = request.client.host if request.client else None
        retry_after = await self.oauth.guard.admit(client_id or None, address)
        if retry_after is not None:
            return SignIn("limited", retry_after_s=retry_after)
        client = await self.oauth.authenticator.authenticate(
            PresentedCredentials(client_id, secret, "post")
        )
        if client is None:
            return SignIn("wrong")
        if ADMIN_SCOPE not in client.scopes:
            return SignIn("not_admin")
        issued = self.oauth.issue(client_id, [ADMIN_SCOPE], self.config.session_ttl_s)
        return SignIn("ok", token=issued.access_token)

    async def sign_out(self, user: ConsoleUser) -> None:
        """Revoke the session's token (a bearer from a proxy is the proxy's to end)."""
        jti = user.principal.token_id
        if user.via == "session" and jti is not None:
            await self.oauth.revocations.revoke(jti, user.principal.expires_at)

    def set_session(
        self, request: Request, response: Response, token: str, path: str = COOKIE_PATH
    ) -> None:
        """``path``: the console's path as the browser sees it (under a root path, if any)."""
        response.set_cookie(
            COOKIE,
            token,
            max_age=self.config.session_ttl_s,
            path=path,
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )

    @staticmethod
    def clear_session(request: Request, response: Response, path: str = COOKIE_PATH) -> None:
        response.delete_cookie(
            COOKIE,
            path=path,
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from a page of another origin.

    ``Sec-Fetch-Site`` when the browser sends it, else ``Origin`` against ``Host``; a client
    that sends neither (not a browser) still needs the CSRF token.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return True
    if origin == "null":
        return False
    return urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()
