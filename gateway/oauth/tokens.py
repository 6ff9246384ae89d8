"""Issuing access tokens: RFC 9068 JWTs signed by the newest local key."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

from joserfc import jwt

from gateway.oauth.config import OAuthConfig
from gateway.oauth.keys import LocalKeys
from gateway.oauth.verify import ACCESS_TOKEN_TYPE


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str


def issue_access_token(
    config: OAuthConfig, keys: LocalKeys, client_id: str, scopes: Iterable[str]
) -> IssuedToken:
    """A client-credentials token: the client is its own subject (RFC 9068 §2.2)."""
    now = int(time.time())
    scope = " ".join(sorted(set(scopes)))
    signing = keys.signing
    claims = {
        "iss": config.issuer,
        "aud": config.audience,
        "sub": client_id,
        "client_id": client_id,
        "scope": scope,
        "iat": now,
        "exp": now + config.access_token_lifetime_s,
        "jti": secrets.token_urlsafe(16),
    }
    header = {"alg": signing.alg, "typ": ACCESS_TOKEN_TYPE, "kid": signing.kid}
    token = jwt.encode(header, claims, signing.key, algorithms=[signing.alg])
    return IssuedToken(token, config.access_token_lifetime_s, scope)
