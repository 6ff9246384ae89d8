"""Outbound authentication to backends: API keys (in a header or the query), bearer tokens,
basic auth, cached OAuth client credentials.

The client-credentials provider is a small cached, single-flight token fetcher; it posts to
the token endpoint through the backend client's own transport (``Send``), so the token fetch
shares its connection pool, timeouts and error mapping style.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol
from urllib.parse import urlencode, urljoin

import orjson

from . import observe
from .config import (
    ApiKeyAuth,
    ApiKeyQueryAuth,
    BackendAuth,
    BasicAuth,
    BearerAuth,
    OAuthClientCredentialsAuth,
)
from .errors import BackendAuthFailed, BackendTimeout, BackendUnavailable, BadBackendData
from .transport import Response, TransportError

Send = Callable[[str, str, Mapping[str, str], bytes | str | None, float], Awaitable[Response]]
"""``send(method, absolute_url, headers, body, timeout_s)``: one HTTP exchange, no retries.
Raises ``TimeoutError`` or a ``TransportError``."""


class AuthProvider(Protocol):
    refreshable: bool
    """Whether ``invalidate()`` can lead to different credentials (worth one retry on 401)."""

    async def headers(self, send: Send) -> dict[str, str]: ...

    def ready_headers(self) -> dict[str, str] | None:
        """The headers when known without I/O (no await); None: call ``headers``."""
        ...

    def invalidate(self) -> None: ...


class StaticHeaders:
    refreshable = False

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = headers

    async def headers(self, send: Send) -> dict[str, str]:
        return self._headers

    def ready_headers(self) -> dict[str, str] | None:
        return self._headers

    def invalidate(self) -> None:
        return None


class ClientCredentialsToken:
    """Fetches and caches a bearer token; refreshes it ``refresh_skew_s`` before expiry."""

    refreshable = True

    def __init__(
        self, backend: str, base_url: str, cfg: OAuthClientCredentialsAuth, timeout_s: float
    ) -> None:
        self.backend = backend
        self.token_url = urljoin(base_url.rstrip("/") + "/", cfg.token_url.lstrip("/"))
        self.cfg = cfg
        self.timeout_s = timeout_s
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0

    def invalidate(self) -> None:
        self._token = None

    async def headers(self, send: Send) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token(send)}"}

    def ready_headers(self) -> dict[str, str] | None:
        if self._token and time.monotonic() < self._expires_at:
            return {"Authorization": f"Bearer {self._token}"}
        return None

    async def token(self, send: Send) -> str:
        if self._token and time.monotonic() < self._expires_at:
            return self._token
        async with self._lock:  # single flight: concurrent callers share one fetch
            if self._token and time.monotonic() < self._expires_at:
                return self._token
            await self._fetch(send)
            assert self._token is not None
            return self._token

    async def _fetch(self, send: Send) -> None:
        form = {"grant_type": "client_credentials"}
        if self.cfg.scope:
            form["scope"] = self.cfg.scope
        secret = self.cfg.client_secret.get_secret_value()
        basic = base64.b64encode(f"{self.cfg.client_id}:{secret}".encode()).decode()
        self.fetches += 1
        try:
            # the token fetch is a backend call of its own: its own client span and metrics
            with observe.attempt(self.backend, "POST", 1, "closed") as seen:
                resp = await send(
                    "POST",
                    self.token_url,
                    {
                        "Authorization": f"Basic {basic}",
                        "Accept": "application/json",
                        "Content-Type": "application/x-www-form-urlencoded",
                        **observe.trace_headers(),
                    },
                    urlencode(form),
                    self.timeout_s,
                )
                seen.status = resp.status
                body = resp.body
            if resp.status in (400, 401, 403):
                raise BackendAuthFailed(
                    self.backend, f"token endpoint refused our client ({resp.status})"
                )
            if resp.status != 200:
                raise BackendUnavailable(self.backend, f"token endpoint answered {resp.status}")
        except TimeoutError as exc:
            raise BackendTimeout(self.backend, "token endpoint timed out") from exc
        except TransportError as exc:
            raise BackendUnavailable(self.backend, "token endpoint unreachable") from exc
        try:
            data = orjson.loads(body)
            token = data["access_token"]
            lifetime = float(data.get("expires_in", 3600))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise BadBackendData(
                self.backend, "token response unreadable", field="access_token"
            ) from exc
        if not isinstance(token, str) or not token:
            raise BadBackendData(self.backend, "token response has no token", field="access_token")
        self._token = token
        self._expires_at = time.monotonic() + max(0.0, lifetime - self.cfg.refresh_skew_s)


def make_auth_provider(
    backend: str, base_url: str, cfg: BackendAuth, timeout_s: float
) -> AuthProvider:
    if isinstance(cfg, OAuthClientCredentialsAuth):
        return ClientCredentialsToken(backend, base_url, cfg, timeout_s)
    if isinstance(cfg, ApiKeyAuth):
        return StaticHeaders({cfg.header: cfg.prefix + cfg.key.get_secret_value()})
    if isinstance(cfg, BearerAuth):
        return StaticHeaders({"Authorization": "Bearer " + cfg.token.get_secret_value()})
    if isinstance(cfg, BasicAuth):
        raw = f"{cfg.username}:{cfg.password.get_secret_value()}".encode()
        return StaticHeaders({"Authorization": "Basic " + base64.b64encode(raw).decode()})
    return StaticHeaders({})  # no credentials in headers (none, or a key in the query)


def auth_query(cfg: BackendAuth) -> dict[str, str]:
    """Query parameters every authenticated call carries (an API key taken in the query)."""
    if isinstance(cfg, ApiKeyQueryAuth):
        return {cfg.param: cfg.key.get_secret_value()}
    return {}
