"""Bearer-token verification on the hot path (joserfc), for local and external issuers.

Order matters for cost and safety: size and shape first, then the issuer (from the unverified
payload, only to pick keys), the algorithm allow-list of that issuer, the key by ``kid``, the
signature, and only then the claims (``iss``, ``aud``, ``exp``, ``nbf`` with leeway).
Verified tokens are cached by their exact string until they expire; a cache hit skips the
signature but never the revocation check, so a revocation is seen from the next request on.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from joserfc import jws, jwt
from joserfc.errors import BadSignatureError, ClaimError, ExpiredTokenError, JoseError
from joserfc.jwk import ECKey, RSAKey
from joserfc.jwt import JWTClaimsRegistry

from gateway.oauth.config import ClientConfig, OAuthConfig
from gateway.oauth.jwks import RemoteKeySet
from gateway.oauth.keys import LocalKeys
from gateway.principal import Principal
from gateway.stores.revocations import RevocationStore

ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (a JWT media type, not a secret)


class TokenRefused(Exception):
    """The token cannot be used. ``reason`` is for logs and metrics, never for the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TrustedIssuer:
    issuer: str
    audience: str
    algorithms: frozenset[str]
    registry: JWTClaimsRegistry
    remote: RemoteKeySet | None  # None: this gateway's own keys
    tier: str
    scopes_claim: str
    allowed_scopes: frozenset[str] | None = None  # None: this gateway's own (per client)


def claims_registry(issuer: str, audience: str, leeway: int, *, local: bool) -> JWTClaimsRegistry:
    """joserfc's decode checks no claim: this registry is what enforces them."""
    essential: dict[str, Any] = {
        "iss": {"essential": True, "value": issuer},
        "aud": {"essential": True, "value": audience},
        "exp": {"essential": True},
    }
    if local:
        essential.update(
            jti={"essential": True}, client_id={"essential": True}, sub={"essential": True}
        )
    return JWTClaimsRegistry(leeway=leeway, **essential)


def scopes_from(claims: Mapping[str, Any], claim: str) -> frozenset[str]:
    """Scopes as a space-separated string (RFC 9068) or a list (some IdPs' ``scp``)."""
    value = claims.get(claim)
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


class TokenVerifier:
    """Turns a bearer token string into a :class:`Principal` or raises :class:`TokenRefused`."""

    def __init__(
        self,
        config: OAuthConfig,
        clients: Mapping[str, ClientConfig],
        local_keys: LocalKeys,
        revocations: RevocationStore,
        remotes: Mapping[str, RemoteKeySet],
    ) -> None:
        self._config = config
        self._clients = clients
        self._revocations = revocations
        self._cache: OrderedDict[str, Principal] = OrderedDict()
        self._issuers: dict[str, TrustedIssuer] = {}
        for ext in config.external_issuers:
            self._issuers[ext.issuer] = TrustedIssuer(
                ext.issuer,
                ext.audience,
                frozenset(ext.algorithms),
                claims_registry(ext.issuer, ext.audience, config.leeway_s, local=False),
                remotes[ext.issuer],
                ext.tier,
                ext.scopes_claim,
                frozenset(ext.allowed_scopes),
            )
        self._issuers[config.issuer] = TrustedIssuer(
            config.issuer,
            config.audience,
            frozenset(config.algorithms),
            claims_registry(config.issuer, config.audience, config.leeway_s, local=True),
            None,
            "",
            "scope",
        )
        self._local_keys = local_keys

    def set_local_keys(self, keys: LocalKeys) -> None:
        """Swap keys after a rotation; cached verdicts may rest on a removed key, so drop them."""
        self._local_keys = keys
        self._cache.clear()

    def verify_known(self, token: str) -> Principal | None:
        """The principal of a token verified before, unexpired and known not to be revoked,
        without an await; None when ``verify`` must decide (it may refuse, or do I/O)."""
        principal = self._cache.get(token)
        if principal is None or principal.expires_at + self._config.leeway_s <= time.time():
            return None
        if principal.token_id is not None and principal.issuer == self._config.issuer:
            if not self._revocations.known_not_revoked(principal.token_id):
                return None
        self._cache.move_to_end(token)
        return principal

    async def verify(self, token: str) -> Principal:
        if len(token) > self._config.max_token_bytes:
            raise TokenRefused("too_large")
        principal = self._cache.get(token)
        if principal is not None:
            if principal.expires_at + self._config.leeway_s <= time.time():
                self._cache.pop(token, None)
                raise TokenRefused("expired")
            self._cache.move_to_end(token)
        else:
            principal = await self._verify_signed(token)
        if principal.token_id is not None and principal.issuer == self._config.issuer:
            if await self._revocations.is_revoked(principal.token_id):
                raise TokenRefused("revoked")
        return principal

    async def _verify_signed(self, token: str) -> Principal:
        try:
            unverified = jws.extract_compact(token.encode("ascii"))
            header = unverified.headers()
            payload = orjson.loads(unverified.payload)
        except (JoseError, ValueError, UnicodeError):
            raise TokenRefused("malformed") from None
        if not isinstance(payload, dict):
            raise TokenRefused("malformed")
        issuer = payload.get("iss")
        trusted = self._issuers.get(issuer) if isinstance(issuer, str) else None
        if trusted is None:
            raise TokenRefused("untrusted_issuer")
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in trusted.algorithms:
            raise TokenRefused("algorithm_not_allowed")
        if not isinstance(kid, str):
            raise TokenRefused("unknown_key")
        key = await self._key_for(trusted, kid, alg)
        try:
            decoded = jwt.decode(token, key, algorithms=[alg])
            trusted.registry.validate(decoded.claims)
        except BadSignatureError:
            raise TokenRefused("bad_signature") from None
        except ExpiredTokenError:
            raise TokenRefused("expired") from None
        except ClaimError as exc:
            raise TokenRefused(f"invalid_{exc.claim}") from None
        except (JoseError, ValueError):
            raise TokenRefused("malformed") from None
        principal = self._principal(trusted, decoded.header, decoded.claims)
        self._remember(token, principal)
        return principal

    async def _key_for(self, trusted: TrustedIssuer, kid: str, alg: str) -> ECKey | RSAKey:
        if trusted.remote is None:
            local = self._local_keys.by_kid.get(kid)
            if local is None or local.alg != alg:
                raise TokenRefused("unknown_key")
            return local.key
        key = await trusted.remote.get(kid)
        if key is None:
            raise TokenRefused("unknown_key")
        return key

    def _principal(
        self, trusted: TrustedIssuer, header: Mapping[str, Any], claims: Mapping[str, Any]
    ) -> Principal:
        jti = claims.get("jti")
        token_id = jti if isinstance(jti, str) else None
        if trusted.remote is None:
            # RFC 9068 §4: an access token is told apart from other JWTs of this issuer by typ.
            if str(header.get("typ", "")).lower() not in (ACCESS_TOKEN_TYPE, "application/at+jwt"):
                raise TokenRefused("wrong_type")
            client_id = claims["client_id"]
            client = self._clients.get(client_id) if isinstance(client_id, str) else None
            if client is None:  # a client removed from config loses its tokens at once
                raise TokenRefused("unknown_client")
            return Principal(
                client_id=client_id,
                # a token grants what it says only while its client is still allowed it: a
                # scope taken from the client's configuration is gone from its tokens too (on
                # a signature check, so once per token; the verdict is cached with it)
                scopes=scopes_from(claims, "scope") & frozenset(client.scopes),
                tier=client.tier,
                issuer=trusted.issuer,
                subject=str(claims["sub"]),
                token_id=token_id,
                expires_at=float(claims["exp"]),
            )
        subject = claims.get("sub")
        client_id = claims.get("client_id") or claims.get("azp") or subject
        allowed = trusted.allowed_scopes if trusted.allowed_scopes is not None else frozenset()
        return Principal(
            # qualified by issuer: an outside "partner-acme" is not our partner-acme
            client_id=f"{trusted.issuer}#{client_id or ''}",
            scopes=scopes_from(claims, trusted.scopes_claim) & allowed,
            tier=trusted.tier,
            issuer=trusted.issuer,
            subject=str(subject or ""),
            token_id=token_id,
            expires_at=float(claims["exp"]),
        )

    def _remember(self, token: str, principal: Principal) -> None:
        size = self._config.verified_cache_size
        if size <= 0:
            return
        self._cache[token] = principal
        if len(self._cache) > size:
            self._cache.popitem(last=False)
