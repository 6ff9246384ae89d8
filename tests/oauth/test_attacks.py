"""Forged, altered and stale tokens: each is refused with 401 invalid_token and no detail why."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

import orjson
import pytest
from joserfc.jwk import ECKey, RSAKey

from tests.eventually import eventually

from .conftest import (
    RunFactory,
    b64url,
    claims,
    local_signing_key,
    oauth_config,
    sign,
    unsigned,
)

GENERIC_DETAIL = "The access token is invalid, expired or revoked."


def _hs256_with_public_key(kid: str, key: ECKey | RSAKey) -> str:
    public_pem = key.as_pem(private=False)
    signing_input = ".".join(
        [
            b64url(orjson.dumps({"alg": "HS256", "kid": kid, "typ": "at+jwt"})),
            b64url(orjson.dumps(claims())),
        ]
    )
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(mac)


def _tampered(token: str) -> str:
    header, _, signature = token.split(".")
    return ".".join([header, b64url(orjson.dumps(claims(scope="admin process:read"))), signature])


Attack = Callable[[str, ECKey | RSAKey, str], tuple[str, str]]
"""(kid, our key, a genuine token) -> (forged token, the reason the gateway must record)."""

ATTACKS: dict[str, Attack] = {
    "alg none": lambda kid, key, good: (
        unsigned({"alg": "none", "kid": kid, "typ": "at+jwt"}, claims()),
        "algorithm_not_allowed",
    ),
    "HS256 with the public key as secret": lambda kid, key, good: (
        _hs256_with_public_key(kid, key),
        "algorithm_not_allowed",
    ),
    "tampered payload": lambda kid, key, good: (_tampered(good), "bad_signature"),
    "signed by another key under our kid": lambda kid, key, good: (
        sign(ECKey.generate_key("P-256"), kid, claims()),
        "bad_signature",
    ),
    "expired": lambda kid, key, good: (
        sign(key, kid, claims(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)),
        "expired",
    ),
    "not yet valid": lambda kid, key, good: (
        sign(key, kid, claims(nbf=int(time.time()) + 3600)),
        "invalid_nbf",
    ),
    "wrong audience": lambda kid, key, good: (
        sign(key, kid, claims(aud="someone-else")),
        "invalid_aud",
    ),
    "no expiry": lambda kid, key, good: (sign(key, kid, claims(exp=None)), "invalid_exp"),
    "wrong issuer": lambda kid, key, good: (
        sign(key, kid, claims(iss="https://evil.test")),
        "untrusted_issuer",
    ),
    "unknown kid": lambda kid, key, good: (
        sign(ECKey.generate_key("P-256"), "kid-nobody-has", claims()),
        "unknown_key",
    ),
    "no kid": lambda kid, key, good: (
        unsigned({"alg": "ES256", "typ": "at+jwt"}, claims(), b"x" * 64),
        "unknown_key",
    ),
    "not an access token (typ)": lambda kid, key, good: (
        sign(key, kid, claims(), typ="JWT"),
        "wrong_type",
    ),
    "client no longer configured": lambda kid, key, good: (
        sign(key, kid, claims(client_id="gone", sub="gone")),
        "unknown_client",
    ),
    "garbage": lambda kid, key, good: ("garbage", "malformed"),
    "garbage with dots": lambda kid, key, good: ("a.b.c", "malformed"),
    "non-JSON payload": lambda kid, key, good: (
        good.split(".")[0] + ".bm90LWpzb24.AAAA",
        "malformed",
    ),
    "bad characters": lambda kid, key, good: ("abc def!", "malformed"),
    "oversized": lambda kid, key, good: ("a" * 9000, "too_large"),
}


@pytest.mark.parametrize("name", list(ATTACKS))
async def test_attack_is_refused_with_401(run_gateway: RunFactory, tmp_path, name: str) -> None:
    kid, key = local_signing_key(oauth_config(tmp_path))
    async with run_gateway() as gw:
        good = await gw.token("orders-service")
        assert (await gw.get("/orders", good)).status_code == 200
        forged, reason = ATTACKS[name](kid, key, good)
        r = await gw.get("/orders", forged)
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"] == 'Bearer realm="trellis", error="invalid_token"'
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"] == GENERIC_DETAIL
        assert await gw.auth_error(forged) == reason


async def test_revoked_token_is_refused(run_gateway: RunFactory) -> None:
    async with run_gateway() as gw:
        token = await gw.token("orders-service")
        assert (await gw.get("/orders", token)).status_code == 200  # now in the verified cache
        r = await gw.http.post(
            "/oauth/revoke", data={"token": token}, auth=("orders-service", "orders-service-secret")
        )
        assert r.status_code == 200
        refused = await gw.get("/orders", token)
        assert refused.status_code == 401
        assert await gw.auth_error(token) == "revoked"


async def test_oversized_and_repeated_headers(run_gateway: RunFactory) -> None:
    async with run_gateway() as gw:
        token = await gw.token("orders-service")
        huge = await gw.http.get("/orders", headers={"Authorization": "Bearer " + "A" * 60_000})
        assert huge.status_code in (400, 401, 431)  # the server or we refuse; never 200
        twice = await gw.http.get(
            "/orders",
            headers=[("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")],
        )
        assert twice.status_code == 401


@pytest.mark.slow  # waits for the token to expire
async def test_expired_cached_token_is_refused(run_gateway: RunFactory, tmp_path) -> None:
    """A token verified once and cached stops working at its expiry (leeway 0 here)."""
    kid, key = local_signing_key(oauth_config(tmp_path))
    async with run_gateway(leeway_s=0) as gw:
        token = sign(key, kid, claims(exp=int(time.time()) + 2))
        assert (await gw.get("/orders", token)).status_code == 200

        async def refused() -> bool:
            return (await gw.get("/orders", token)).status_code != 200

        await eventually(refused, timeout=10, interval=0.25, message="expired token refused")
        assert await gw.auth_error(token) == "expired"
