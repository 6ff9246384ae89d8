"""The OAuth 2.0 component the app assembles: routes, middleware and their lifespan."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import aiohttp
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from gateway.oauth.bruteforce import ClientAuthGuard
from gateway.oauth.clients import ClientAuthenticator
from gateway.oauth.config import ClientConfig, OAuthConfig
from gateway.oauth.endpoints import AuthorizationEndpoints
from gateway.oauth.jwks import RemoteKeySet
from gateway.oauth.keys import LocalKeys, load_local_keys
from gateway.oauth.middleware import BearerMiddleware
from gateway.oauth.tokens import IssuedToken, issue_access_token
from gateway.oauth.verify import TokenVerifier
from gateway.stores.limits_storage import LimitsStorage, open_limits_storage
from gateway.stores.redis_options import DEFAULT_PREFIX
from gateway.stores.revocations import RevocationStore, open_revocation_store


class OAuth:
    """Authorization server plus resource protection; ``start``/``close`` belong in lifespan."""

    def __init__(
        self,
        config: OAuthConfig,
        clients: Mapping[str, ClientConfig],
        *,
        redis_url: str | None,
        redis_prefix: str = DEFAULT_PREFIX,
        data_dir: Path,
    ) -> None:
        self.config = config
        self.clients = clients
        self.redis_url = redis_url
        self.redis_prefix = redis_prefix
        self.data_dir = data_dir
        self._keys: LocalKeys | None = None
        self._revocations: RevocationStore | None = None
        self._limits: LimitsStorage | None = None
        self._session: aiohttp.ClientSession | None = None
        self._verifier: TokenVerifier | None = None
        self._endpoints: AuthorizationEndpoints | None = None
        self._authenticator: ClientAuthenticator | None = None
        self._guard: ClientAuthGuard | None = None
        self.remote_key_sets: dict[str, RemoteKeySet] = {}
        """External issuers' JWKS by issuer (exposed for observability and tests)."""

    async def start(self) -> None:
        """Load (or generate) keys, open the stores and the JWKS session; fail loudly on error."""
        self._keys = await run_in_threadpool(load_local_keys, self.config)
        self._revocations = await open_revocation_store(
            self.redis_url,
            self.data_dir,
            redis_prefix=self.redis_prefix,
            staleness_s=self.config.revocation_staleness_s,
        )
        self._limits = open_limits_storage(self.redis_url, prefix=self.redis_prefix)
        if self.config.external_issuers:
            self._session = aiohttp.ClientSession(raise_for_status=False)
        for ext in self.config.external_issuers:
            assert self._session is not None
            self.remote_key_sets[ext.issuer] = RemoteKeySet(
                ext.jwks_url,
                self._session,
                min_interval=self.config.jwks_min_refresh_interval_s,
                max_age=self.config.jwks_max_age_s,
                timeout=self.config.jwks_timeout_s,
            )
        self._verifier = TokenVerifier(
            self.config, self.clients, self._keys, self._revocations, self.remote_key_sets
        )
        authenticator = self._authenticator = ClientAuthenticator(self.clients)
        await authenticator.start()
        self._guard = ClientAuthGuard(self.config.token_endpoint_limits, self._limits)
        self._endpoints = AuthorizationEndpoints(
            self.config,
            self.clients,
            authenticator,
            self._guard,
            self._verifier,
            self._revocations,
            self._current_keys,
        )

    async def reload_keys(self) -> None:
        """Re-read the signing keys (rotation without restart); drops the verified-token cache."""
        keys = await run_in_threadpool(load_local_keys, self.config)
        self._keys = keys
        if self._verifier is not None:
            self._verifier.set_local_keys(keys)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._revocations is not None:
            await self._revocations.close()
            self._revocations = None
        if self._limits is not None:
            await self._limits.close()
            self._limits = None

    @property
    def verifier(self) -> TokenVerifier:
        if self._verifier is None:
            raise RuntimeError("OAuth.start() has not run (call it from the app's lifespan)")
        return self._verifier

    @property
    def authenticator(self) -> ClientAuthenticator:
        """Checks client secrets (the token endpoint's, for other sign-in forms)."""
        if self._authenticator is None:
            raise RuntimeError("OAuth.start() has not run")
        return self._authenticator

    @property
    def guard(self) -> ClientAuthGuard:
        """The token endpoint's brute-force limit, shared by every form that checks secrets."""
        if self._guard is None:
            raise RuntimeError("OAuth.start() has not run")
        return self._guard

    @property
    def revocations(self) -> RevocationStore:
        if self._revocations is None:
            raise RuntimeError("OAuth.start() has not run")
        return self._revocations

    def issue(self, client_id: str, scopes: Iterable[str], lifetime_s: int) -> IssuedToken:
        """A token of this gateway for ``client_id`` living ``lifetime_s`` (a console sign-in)."""
        config = self.config.model_copy(update={"access_token_lifetime_s": lifetime_s})
        return issue_access_token(config, self._current_keys(), client_id, scopes)

    def _current_keys(self) -> LocalKeys:
        if self._keys is None:
            raise RuntimeError("OAuth.start() has not run")
        return self._keys

    def routes(self) -> list[BaseRoute]:
        """The authorization server's public routes (no token needed to reach them)."""

        def endpoints() -> AuthorizationEndpoints:
            if self._endpoints is None:
                raise RuntimeError("OAuth.start() has not run")
            return self._endpoints

        async def token(request: Request) -> Response:
            return await endpoints().token(request)

        async def introspect(request: Request) -> Response:
            return await endpoints().introspect(request)

        async def revoke(request: Request) -> Response:
            return await endpoints().revoke(request)

        async def jwks(request: Request) -> Response:
            return await endpoints().jwks(request)

        async def metadata(request: Request) -> Response:
            return await endpoints().metadata(request)

        return [
            Route("/oauth/token", token, methods=["POST"], name="oauth_token"),
            Route("/oauth/introspect", introspect, methods=["POST"], name="oauth_introspect"),
            Route("/oauth/revoke", revoke, methods=["POST"], name="oauth_revoke"),
            Route("/.well-known/jwks.json", jwks, methods=["GET"], name="jwks"),
            Route(
                "/.well-known/oauth-authorization-server",
                metadata,
                methods=["GET"],
                name="oauth_metadata",
            ),
        ]

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Wrap ``app`` with bearer verification (the verifier is resolved per request)."""
        return BearerMiddleware(app, lambda: self.verifier, self.config.max_token_bytes)
