"""The client-credentials flow end to end, driven by authlib's own OAuth client over real HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
import yaml
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jws

from gateway.oauth.clients import ClientAuthenticator, PresentedCredentials
from gateway.oauth.config import ClientConfig

from .conftest import AUDIENCE, ISSUER, RunFactory, secret_of


async def test_authlib_client_gets_a_token_and_calls_a_protected_route(
    run_gateway: RunFactory,
) -> None:
    async with run_gateway() as gw:
        async with AsyncOAuth2Client(
            client_id="orders-service",
            client_secret=secret_of("orders-service"),
            token_endpoint_auth_method="client_secret_basic",
        ) as client:
            token = await client.fetch_token(
                gw.base_url + "/oauth/token", grant_type="client_credentials"
            )
            assert token["token_type"] == "Bearer"
            assert token["expires_in"] == 900
            assert set(token["scope"].split()) == {"process:read", "process:write"}
            r = await client.get(gw.base_url + "/orders")
            assert r.status_code == 200, r.text
            r = await client.post(gw.base_url + "/orders")
            assert r.status_code == 200, r.text

        header = jws.extract_compact(token["access_token"].encode()).headers()
        assert header["typ"] == "at+jwt" and header["alg"] == "ES256" and header["kid"]
        introspected = await gw.http.post(
            "/oauth/introspect",
            data={"token": token["access_token"]},
            auth=("orders-service", secret_of("orders-service")),
        )
        body = introspected.json()
        assert body["active"] is True and body["client_id"] == "orders-service"
        assert body["iss"] == ISSUER and body["sub"] == "orders-service"


async def test_client_secret_post_and_the_issued_claims(run_gateway: RunFactory) -> None:
    async with run_gateway(access_token_lifetime_s=120) as gw:
        async with AsyncOAuth2Client(
            client_id="partner-acme",
            client_secret=secret_of("partner-acme"),
            token_endpoint_auth_method="client_secret_post",
        ) as client:
            token = await client.fetch_token(
                gw.base_url + "/oauth/token", grant_type="client_credentials"
            )
        import orjson

        payload = orjson.loads(jws.extract_compact(token["access_token"].encode()).payload)
        assert payload["iss"] == ISSUER and payload["aud"] == AUDIENCE
        assert payload["sub"] == payload["client_id"] == "partner-acme"
        assert payload["scope"] == "partner" and payload["jti"]
        assert payload["exp"] - payload["iat"] == 120
        r = await gw.get("/whoami", token["access_token"])
        assert r.json() == {
            "client_id": "partner-acme",
            "scopes": ["partner"],
            "tier": "partner-standard",
            "issuer": ISSUER,
            "subject": "partner-acme",
        }


async def test_scope_request_is_narrowed_and_bounded(run_gateway: RunFactory) -> None:
    async with run_gateway() as gw:
        narrow = await gw.http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": "process:read"},
            auth=("orders-service", secret_of("orders-service")),
        )
        assert narrow.json()["scope"] == "process:read"
        token = narrow.json()["access_token"]
        assert (await gw.get("/orders", token)).status_code == 200
        refused = await gw.http.post("/orders", headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 403
        assert refused.headers["www-authenticate"] == (
            'Bearer realm="trellis", error="insufficient_scope", scope="process:write"'
        )

        too_wide = await gw.http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": "process:read admin"},
            auth=("orders-service", secret_of("orders-service")),
        )
        assert too_wide.status_code == 400
        assert too_wide.json()["error"] == "invalid_scope"


@pytest.mark.parametrize(
    ("path", "method", "client_id", "needed"),
    [
        ("/orders", "GET", "partner-acme", "process:read"),
        ("/orders", "POST", "partner-acme", "process:write"),
        ("/partner/orders", "GET", "orders-service", "partner"),
        ("/partner/orders", "POST", "ops-admin", "partner"),
        ("/admin", "GET", "orders-service", "admin"),
    ],
)
async def test_each_protected_route_refuses_a_token_without_its_scope(
    run_gateway: RunFactory, path: str, method: str, client_id: str, needed: str
) -> None:
    async with run_gateway() as gw:
        token = await gw.token(client_id)
        r = await gw.http.request(method, path, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 403
        assert r.headers["content-type"] == "application/problem+json"
        assert f'error="insufficient_scope", scope="{needed}"' in r.headers["www-authenticate"]
        assert r.json()["required_scopes"] == [needed]


async def test_no_token_gets_401_with_the_realm_and_public_routes_stay_public(
    run_gateway: RunFactory,
) -> None:
    async with run_gateway() as gw:
        r = await gw.get("/orders")
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Bearer realm="trellis"'
        assert r.json()["status"] == 401
        public = await gw.get("/public", "not-a-token")
        assert public.status_code == 200 and public.json()["auth_error"] == "malformed"


def _oauth_error(r: httpx.Response, status: int, error: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["cache-control"] == "no-store"
    assert r.json()["error"] == error


async def test_rfc6749_errors(run_gateway: RunFactory) -> None:
    grant = {"grant_type": "client_credentials"}
    async with run_gateway() as gw:
        wrong = await gw.http.post("/oauth/token", data=grant, auth=("orders-service", "nope"))
        _oauth_error(wrong, 401, "invalid_client")
        assert wrong.headers["www-authenticate"].startswith("Basic")
        unknown = await gw.http.post("/oauth/token", data=grant, auth=("who", "who-secret"))
        _oauth_error(unknown, 401, "invalid_client")
        assert unknown.json()["detail"] == wrong.json()["detail"]  # indistinguishable
        posted = await gw.http.post(
            "/oauth/token", data={**grant, "client_id": "orders-service", "client_secret": "nope"}
        )
        _oauth_error(posted, 401, "invalid_client")
        anonymous = await gw.http.post("/oauth/token", data=grant)
        _oauth_error(anonymous, 401, "invalid_client")
        auth = ("orders-service", secret_of("orders-service"))
        _oauth_error(
            await gw.http.post("/oauth/token", data={"grant_type": "password"}, auth=auth),
            400,
            "unsupported_grant_type",
        )
        _oauth_error(await gw.http.post("/oauth/token", data={}, auth=auth), 400, "invalid_request")
        _oauth_error(
            await gw.http.post("/oauth/token", json=grant, auth=auth), 400, "invalid_request"
        )
        _oauth_error(
            await gw.http.post(
                "/oauth/token",
                content="grant_type=client_credentials&scope=a&scope=b",
                headers={"content-type": "application/x-www-form-urlencoded"},
                auth=auth,
            ),
            400,
            "invalid_request",
        )
        _oauth_error(
            await gw.http.post("/oauth/token", data=grant, headers={"Authorization": "Basic !!!"}),
            401,
            "invalid_client",
        )

        async with AsyncOAuth2Client(client_id="orders-service", client_secret="nope") as c:
            with pytest.raises(OAuthError) as raised:
                await c.fetch_token(gw.base_url + "/oauth/token", grant_type="client_credentials")
        assert raised.value.error == "invalid_client"


async def test_discovery_documents(run_gateway: RunFactory) -> None:
    async with run_gateway() as gw:
        jwks = (await gw.get("/.well-known/jwks.json")).json()
        assert len(jwks["keys"]) == 1
        assert {"kid", "alg", "kty", "x", "y"} <= set(jwks["keys"][0])
        assert "d" not in jwks["keys"][0]
        meta = (await gw.get("/.well-known/oauth-authorization-server")).json()
        assert meta["issuer"] == ISSUER
        assert meta["token_endpoint"] == ISSUER + "/oauth/token"
        assert meta["grant_types_supported"] == ["client_credentials"]
        assert "client_secret_basic" in meta["token_endpoint_auth_methods_supported"]


@pytest.mark.slow  # argon2 of every shipped client
async def test_shipped_sandbox_clients_authenticate_with_their_documented_secret() -> None:
    raw = yaml.safe_load(await asyncio.to_thread(Path("config/clients.yaml").read_text))
    shipped = {cid: ClientConfig.model_validate(v) for cid, v in raw.items()}
    assert set(shipped) == {
        "web-app",
        "mobile-app",
        "support-desk",
        "partner-acme",
        "partner-globex",
        "orders-service",
        "ops-admin",
        "systems-integration",
    }
    assert shipped["ops-admin"].scopes == ["admin", "system:read"]
    assert shipped["partner-acme"].tier == "partner-standard"
    authenticator = ClientAuthenticator(shipped)
    await authenticator.start()
    for cid in shipped:
        ok = await authenticator.authenticate(PresentedCredentials(cid, f"{cid}-secret", "basic"))
        assert ok is shipped[cid]
        bad = await authenticator.authenticate(PresentedCredentials(cid, "wrong", "basic"))
        assert bad is None
