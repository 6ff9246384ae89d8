"""The authorization server's HTTP endpoints: token, introspection, revocation, discovery.

Implemented directly rather than through authlib's ``AuthorizationServer`` (docs/oauth.md says
why): the form is parsed with a size cap and duplicate check, client authentication is async
with argon2 in the threadpool, and errors are RFC 6749 codes inside problem+json bodies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.oauth.bruteforce import ClientAuthGuard
from gateway.oauth.clients import (
    ClientAuthenticator,
    MalformedCredentials,
    claimed_client_id,
    presented_credentials,
)
from gateway.oauth.config import ClientConfig, OAuthConfig
from gateway.oauth.keys import LocalKeys
from gateway.oauth.tokens import issue_access_token
from gateway.oauth.verify import TokenRefused, TokenVerifier
from gateway.policies.scope_keys import CLAIMED_CLIENT_KEY
from gateway.problems import Slug, problem_response
from gateway.stores.revocations import RevocationStore

MAX_FORM_BYTES = 16 * 1024
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
ADMIN_SCOPE = "admin"

_PROBLEMS: dict[str, Slug] = {
    "invalid_request": "oauth-invalid-request",
    "invalid_client": "oauth-invalid-client",
    "unauthorized_client": "oauth-unauthorized-client",
    "unsupported_grant_type": "oauth-unsupported-grant-type",
    "invalid_scope": "oauth-invalid-scope",
}
"""RFC 6749 §5.2 error codes -> problem slugs."""


class OAuthError(Exception):
    """An RFC 6749 §5.2 error: ``error`` code, description, HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


def oauth_error_response(request: Request, exc: OAuthError) -> Response:
    """problem+json with RFC 6749's ``error``/``error_description``, so OAuth clients parse it."""
    headers = dict(NO_STORE)
    if exc.error == "invalid_client":
        headers["WWW-Authenticate"] = 'Basic realm="trellis"'
    return problem_response(
        exc.status,
        scope=request.scope,
        problem=_PROBLEMS.get(exc.error, "oauth-invalid-request"),
        detail=exc.description,
        headers=headers,
        extra={"error": exc.error, "error_description": exc.description},
    )


def json_response(body: Mapping[str, Any], headers: Mapping[str, str] = NO_STORE) -> Response:
    return Response(orjson.dumps(body), media_type="application/json", headers=dict(headers))


async def read_form(request: Request) -> dict[str, str]:
    """The urlencoded body, at most 16 KiB, each parameter at most once (RFC 6749 §3.2)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "Send application/x-www-form-urlencoded.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise OAuthError("invalid_request", "The request body is too large.")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=32)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "The request body is not a valid form.") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise OAuthError("invalid_request", f"Parameter {name!r} is repeated.")
        form[name] = value
    return form


CLAIMED_CLIENT_MAX = 128
"""How much of a claimed client id the access log keeps (ours are short; a guess may not be)."""


class AuthorizationEndpoints:
    """Starlette endpoints over the component's keys, clients, verifier and stores."""

    def __init__(
        self,
        config: OAuthConfig,
        clients: Mapping[str, ClientConfig],
        authenticator: ClientAuthenticator,
        guard: ClientAuthGuard,
        verifier: TokenVerifier,
        revocations: RevocationStore,
        keys: Callable[[], LocalKeys],
    ) -> None:
        self._config = config
        self._clients = clients
        self._authenticator = authenticator
        self._guard = guard
        self._verifier = verifier
        self._revocations = revocations
        self._keys = keys

    async def _authenticated(
        self,
        request: Request,
        form: Mapping[str, str],
        then: Callable[[str, ClientConfig], Awaitable[Response]],
    ) -> Response:
        """Limit, then authenticate the client, then run ``then``; OAuth errors become JSON."""
        address = request.client.host if request.client else None
        claimed = claimed_client_id(request.headers, form)
        if claimed:
            request.scope[CLAIMED_CLIENT_KEY] = claimed[:CLAIMED_CLIENT_MAX]
        retry_after = await self._guard.admit(claimed, address)
        if retry_after is not None:
            return problem_response(
                429,
                scope=request.scope,
                problem="too-many-attempts",
                detail="Wait before trying again.",
                headers={"Retry-After": str(int(retry_after)), **NO_STORE},
            )
        try:
            credentials = presented_credentials(request.headers, form)
        except MalformedCredentials as exc:
            raise OAuthError("invalid_client", str(exc).capitalize() + ".", 401) from None
        if credentials is None:
            raise OAuthError("invalid_client", "Client authentication is required.", 401)
        client = await self._authenticator.authenticate(credentials)
        if client is None:
            raise OAuthError("invalid_client", "Client authentication failed.", 401)
        return await then(credentials.client_id, client)

    async def token(self, request: Request) -> Response:
        """RFC 6749 §4.4 client-credentials grant."""
        try:
            form = await read_form(request)
            grant_type = form.get("grant_type")
            if not grant_type:
                raise OAuthError("invalid_request", "grant_type is required.")
            if grant_type != "client_credentials":
                raise OAuthError("unsupported_grant_type", "Only client_credentials is supported.")

            async def grant(client_id: str, client: ClientConfig) -> Response:
                allowed = set(client.scopes)
                requested = set(form.get("scope", "").split())
                if requested - allowed:
                    raise OAuthError("invalid_scope", "A requested scope is not allowed.")
                issued = issue_access_token(
                    self._config, self._keys(), client_id, requested or allowed
                )
                return json_response(
                    {
                        "access_token": issued.access_token,
                        "token_type": "Bearer",
                        "expires_in": issued.expires_in,
                        "scope": issued.scope,
                    }
                )

            return await self._authenticated(request, form, grant)
        except OAuthError as exc:
            return oauth_error_response(request, exc)

    async def introspect(self, request: Request) -> Response:
        """RFC 7662: a client sees its own tokens, an ``admin`` client every token."""
        try:
            form = await read_form(request)

            async def answer(client_id: str, client: ClientConfig) -> Response:
                token = form.get("token")
                if not token:
                    raise OAuthError("invalid_request", "token is required.")
                try:
                    principal = await self._verifier.verify(token)
                except TokenRefused:
                    return json_response({"active": False})
                if principal.client_id != client_id and ADMIN_SCOPE not in client.scopes:
                    return json_response({"active": False})
                return json_response(
                    {
                        "active": True,
                        "scope": " ".join(sorted(principal.scopes)),
                        "client_id": principal.client_id,
                        "sub": principal.subject,
                        "iss": principal.issuer,
                        "exp": int(principal.expires_at),
                        "jti": principal.token_id,
                        "token_type": "Bearer",
                        "tier": principal.tier,
                    }
                )

            return await self._authenticated(request, form, answer)
        except OAuthError as exc:
            return oauth_error_response(request, exc)

    async def revoke(self, request: Request) -> Response:
        """RFC 7009: revoke one of this gateway's tokens; unknown or invalid tokens are a no-op."""
        try:
            form = await read_form(request)

            async def revoke(client_id: str, client: ClientConfig) -> Response:
                token = form.get("token")
                if not token:
                    raise OAuthError("invalid_request", "token is required.")
                try:
                    principal = await self._verifier.verify(token)
                except TokenRefused:
                    return Response(status_code=200, headers=NO_STORE)
                if principal.issuer != self._config.issuer or principal.token_id is None:
                    return Response(status_code=200, headers=NO_STORE)
                if principal.client_id != client_id and ADMIN_SCOPE not in client.scopes:
                    raise OAuthError(
                        "unauthorized_client", "The token was issued to another client."
                    )
                await self._revocations.revoke(principal.token_id, principal.expires_at)
                return Response(status_code=200, headers=NO_STORE)

            return await self._authenticated(request, form, revoke)
        except OAuthError as exc:
            return oauth_error_response(request, exc)

    async def jwks(self, request: Request) -> Response:
        """Public keys only; short cache so a rotation is picked up within minutes."""
        return json_response(self._keys().jwks(), {"Cache-Control": "public, max-age=300"})

    async def metadata(self, request: Request) -> Response:
        """RFC 8414 authorization server metadata."""
        base = self._config.issuer
        auth_methods = ["client_secret_basic", "client_secret_post"]
        scopes = sorted({s for c in self._clients.values() for s in c.scopes})
        return json_response(
            {
                "issuer": base,
                "token_endpoint": base + "/oauth/token",
                "jwks_uri": base + "/.well-known/jwks.json",
                "introspection_endpoint": base + "/oauth/introspect",
                "revocation_endpoint": base + "/oauth/revoke",
                "grant_types_supported": ["client_credentials"],
                "response_types_supported": [],
                "token_endpoint_auth_methods_supported": auth_methods,
                "introspection_endpoint_auth_methods_supported": auth_methods,
                "revocation_endpoint_auth_methods_supported": auth_methods,
                "scopes_supported": scopes,
            },
            {"Cache-Control": "public, max-age=300"},
        )
