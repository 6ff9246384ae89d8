"""An OAuth component served on loopback in a small Starlette app; helpers to mint tokens."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from argon2 import PasswordHasher
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, request_response

from gateway.oauth import ClientConfig, OAuth, OAuthConfig, RequireScopes, requires
from gateway.oauth.keys import load_local_keys
from gateway.principal import principal_of
from gateway.stores.redis_options import DEFAULT_PREFIX
from tests.servers import CLIENT_TLS, serve

ISSUER = "https://trellis.test"
AUDIENCE = "trellis"

# Cheap argon2 parameters: the tests hash and verify many times; the shipped file uses defaults.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)

CLIENTS_SPEC = {
    "orders-service": (["process:read", "process:write"], "internal"),
    "partner-acme": (["partner"], "partner-standard"),
    "partner-globex": (["partner"], "partner-standard"),
    "ops-admin": (["admin", "system:read"], "internal"),
}


def secret_of(client_id: str) -> str:
    return f"{client_id}-secret"


@pytest.fixture(scope="session")
def clients() -> dict[str, ClientConfig]:
    return {
        cid: ClientConfig(secret_hash=FAST_HASHER.hash(secret_of(cid)), scopes=scopes, tier=tier)
        for cid, (scopes, tier) in CLIENTS_SPEC.items()
    }


def oauth_config(tmp: Path, **overrides: Any) -> OAuthConfig:
    values: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "keys_dir": tmp / "keys",
        "generate_if_missing": True,
        "token_endpoint_limits": {"per_client": "1000/minute", "per_address": "1000/minute"},
    }
    values.update(overrides)
    return OAuthConfig.model_validate(values)


async def whoami(request: Request) -> Response:
    p = principal_of(request.scope)
    assert p is not None
    return JSONResponse(
        {
            "client_id": p.client_id,
            "scopes": sorted(p.scopes),
            "tier": p.tier,
            "issuer": p.issuer,
            "subject": p.subject,
        }
    )


async def ok(request: Request) -> Response:
    return JSONResponse({"ok": True, "method": request.method})


async def public(request: Request) -> Response:
    """A public route: shows what the middleware recorded, proving it never answers itself."""
    p = principal_of(request.scope)
    return JSONResponse(
        {
            "auth_error": request.scope.get("trellis.auth_error"),
            "client_id": p.client_id if p else None,
        }
    )


@requires("admin")
async def admin_only(request: Request) -> Response:
    return JSONResponse({"admin": True})


def build_app(oauth: OAuth) -> Any:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await oauth.start()
        try:
            yield
        finally:
            await oauth.close()

    routes = [
        *oauth.routes(),
        Route("/public", public),
        Route("/whoami", requires()(whoami)),
        Route(
            "/orders",
            RequireScopes(request_response(ok), read=["process:read"], write=["process:write"]),
            methods=["GET", "POST"],
        ),
        Route(
            "/partner/orders",
            RequireScopes(request_response(ok), read=["partner"]),
            methods=["GET", "POST"],
        ),
        Route("/admin", admin_only),
    ]
    return oauth.middleware(Starlette(routes=routes, lifespan=lifespan))


@dataclass
class Running:
    base_url: str
    oauth: OAuth
    http: httpx.AsyncClient

    async def token(self, client_id: str, scope: str | None = None, **extra: str) -> str:
        data = {"grant_type": "client_credentials", **extra}
        if scope is not None:
            data["scope"] = scope
        r = await self.http.post("/oauth/token", data=data, auth=(client_id, secret_of(client_id)))
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    async def get(self, path: str, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return await self.http.get(path, headers=headers)

    async def auth_error(self, token: str) -> str | None:
        """The reason the middleware recorded for ``token`` (None if accepted)."""
        r = await self.http.get("/public", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
        return r.json()["auth_error"]


RunFactory = Callable[..., AbstractAsyncContextManager[Running]]


@pytest.fixture
def run_gateway(tmp_path: Path, clients: dict[str, ClientConfig]) -> RunFactory:
    """``async with run_gateway(**config) as gw``: an OAuth app over real HTTP on loopback."""

    @asynccontextmanager
    async def run(
        *,
        data_dir: Path | None = None,
        redis_url: str | None = None,
        redis_prefix: str | None = None,
        database_url: str | None = None,
        clients_override: dict[str, ClientConfig] | None = None,
        **overrides: Any,
    ) -> AsyncIterator[Running]:
        assert not redis_url or redis_prefix, "a test on the shared Redis takes redis_prefix"
        config = oauth_config(tmp_path, **overrides)
        oauth = OAuth(
            config,
            clients_override or clients,
            redis_url=redis_url,
            redis_prefix=redis_prefix or DEFAULT_PREFIX,
            data_dir=data_dir or tmp_path / "data",
            database_url=database_url,
        )
        async with (
            serve(build_app(oauth)) as base_url,
            httpx.AsyncClient(base_url=base_url, verify=CLIENT_TLS) as http,
        ):
            yield Running(base_url, oauth, http)

    return run


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "orders-service",
        "client_id": "orders-service",
        "scope": "process:read process:write",
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(
    key: ECKey | RSAKey,
    kid: str,
    payload: dict[str, Any],
    *,
    alg: str | None = None,
    typ: str = "at+jwt",
) -> str:
    alg = alg or ("RS256" if isinstance(key, RSAKey) else "ES256")
    return jwt.encode({"alg": alg, "kid": kid, "typ": typ}, payload, key, algorithms=[alg])


def local_signing_key(config: OAuthConfig) -> tuple[str, ECKey | RSAKey]:
    keys = load_local_keys(config)
    return keys.signing.kid, keys.signing.key


def unsigned(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join(
        [b64url(orjson.dumps(header)), b64url(orjson.dumps(payload)), b64url(signature)]
    )
