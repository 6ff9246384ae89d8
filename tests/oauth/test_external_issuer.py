"""Tokens from an external identity provider whose JWKS is served by aiohttp on loopback."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from joserfc.jwk import ECKey, RSAKey

from .conftest import RunFactory, sign

IDP = "https://idp.test/"
IDP_AUDIENCE = "trellis-web"


class IdentityProvider:
    """A JWKS endpoint whose keys the test rotates, counting every fetch."""

    def __init__(self) -> None:
        self.keys: dict[str, RSAKey | ECKey] = {}
        self.fetches = 0
        self.url = ""

    def add_key(self) -> str:
        kid = f"idp-{uuid.uuid4().hex[:8]}"
        self.keys[kid] = RSAKey.generate_key(2048)
        return kid

    async def jwks(self, request: web.Request) -> web.Response:
        self.fetches += 1
        return web.json_response(
            {
                "keys": [
                    key.as_dict(private=False, kid=kid, alg="RS256", use="sig")
                    for kid, key in self.keys.items()
                ]
            }
        )

    def token(self, kid: str, **overrides: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": IDP,
            "aud": IDP_AUDIENCE,
            "sub": "user-42",
            "azp": "web-app",
            "scp": ["experience:web", "process:read"],
            "iat": now,
            "exp": now + 300,
        }
        claims.update(overrides)
        return sign(self.keys[kid], kid, claims, typ="JWT")


@pytest.fixture
async def idp() -> AsyncIterator[IdentityProvider]:
    provider = IdentityProvider()
    app = web.Application()
    app.router.add_get("/jwks", provider.jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    provider.url = f"http://127.0.0.1:{port}/jwks"
    yield provider
    await runner.cleanup()


def _external(idp: IdentityProvider, **extra: Any) -> dict[str, Any]:
    return {
        "external_issuers": [
            {
                "issuer": IDP,
                "audience": IDP_AUDIENCE,
                "jwks_url": idp.url,
                "algorithms": ["RS256"],
                "tier": "internal",
                "scopes_claim": "scp",
                "allowed_scopes": ["experience:web", "process:read"],
            }
        ],
        **extra,
    }


async def test_external_token_is_accepted_with_its_claims(
    run_gateway: RunFactory, idp: IdentityProvider
) -> None:
    kid = idp.add_key()
    async with run_gateway(**_external(idp)) as gw:
        r = await gw.get("/whoami", idp.token(kid))
        assert r.status_code == 200, r.text
        assert r.json() == {
            "client_id": f"{IDP}#web-app",  # never mistaken for our own client "web-app"
            "scopes": ["experience:web", "process:read"],
            "tier": "internal",
            "issuer": IDP,
            "subject": "user-42",
        }
        assert (await gw.get("/orders", idp.token(kid))).status_code == 200
        assert (await gw.get("/partner/orders", idp.token(kid))).status_code == 403

        assert await gw.auth_error(idp.token(kid, aud="other")) == "invalid_aud"
        assert await gw.auth_error(idp.token(kid, exp=int(time.time()) - 600)) == "expired"
        foreign = sign(
            ECKey.generate_key("P-256"),
            kid,
            {"iss": IDP, "aud": IDP_AUDIENCE, "exp": int(time.time()) + 60},
        )
        assert await gw.auth_error(foreign) == "algorithm_not_allowed"  # ES256 not allowed
        forged = sign(
            RSAKey.generate_key(2048),
            kid,
            {"iss": IDP, "aud": IDP_AUDIENCE, "exp": int(time.time()) + 60},
        )
        assert await gw.auth_error(forged) == "bad_signature"
        assert idp.fetches == 1  # the JWKS was fetched once and then cached


async def test_external_scopes_are_capped_by_the_issuers_allow_list(
    run_gateway: RunFactory, idp: IdentityProvider
) -> None:
    kid = idp.add_key()
    config = _external(idp)
    del config["external_issuers"][0]["allowed_scopes"]  # default: the frontend channels only
    async with run_gateway(**config) as gw:
        r = await gw.get("/whoami", idp.token(kid))
        assert r.json()["scopes"] == ["experience:web"]  # process:read was not the IdP's to give
        assert (await gw.get("/orders", idp.token(kid))).status_code == 403


async def test_kid_rotation_at_the_issuer_is_followed_with_one_fetch(
    run_gateway: RunFactory, idp: IdentityProvider
) -> None:
    first = idp.add_key()
    async with run_gateway(**_external(idp, jwks_min_refresh_interval_s=0)) as gw:
        assert (await gw.get("/orders", idp.token(first))).status_code == 200
        assert idp.fetches == 1

        retired = idp.keys.pop(first)
        second = idp.add_key()
        tokens = [idp.token(second) for _ in range(10)]
        answers = await asyncio.gather(*(gw.get("/orders", t) for t in tokens))
        assert [a.status_code for a in answers] == [200] * 10
        assert idp.fetches == 2  # single-flight: ten unknown-kid requests, one fetch

        # The first key left the JWKS: a token signed with it now is refused.
        now = int(time.time())
        late = sign(retired, first, {"iss": IDP, "aud": IDP_AUDIENCE, "exp": now + 60})
        assert await gw.auth_error(late) == "unknown_key"


async def test_random_kids_cannot_force_jwks_fetches(
    run_gateway: RunFactory, idp: IdentityProvider
) -> None:
    kid = idp.add_key()
    async with run_gateway(**_external(idp, jwks_min_refresh_interval_s=3600)) as gw:
        assert (await gw.get("/orders", idp.token(kid))).status_code == 200
        assert idp.fetches == 1
        attacker = RSAKey.generate_key(2048)
        for _ in range(20):
            random_kid = uuid.uuid4().hex
            forged = sign(
                attacker,
                random_kid,
                {"iss": IDP, "aud": IDP_AUDIENCE, "exp": int(time.time()) + 60},
            )
            assert (await gw.get("/orders", forged)).status_code == 401
        assert idp.fetches == 1
        assert gw.oauth.remote_key_sets[IDP].fetch_count == 1


async def test_unreachable_jwks_refuses_tokens_without_crashing(
    run_gateway: RunFactory, idp: IdentityProvider
) -> None:
    kid = idp.add_key()
    config = _external(idp)
    config["external_issuers"][0]["jwks_url"] = "http://127.0.0.1:9/jwks"  # discard port
    async with run_gateway(**config) as gw:
        r = await gw.get("/orders", idp.token(kid))
        assert r.status_code == 401
        assert await gw.auth_error(idp.token(kid)) == "unknown_key"
