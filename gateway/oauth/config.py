"""Configuration of the OAuth 2.0 policy: ``config/oauth.yaml`` and ``config/clients.yaml``.

Every field has a default so a config directory without ``oauth.yaml`` still loads; starting
the component then needs signing keys (files, inline, or ``generate_if_missing``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from limits import parse
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

Algorithm = Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]
"""Asymmetric JWS algorithms only: ``none`` and HS* can never be configured."""


def _default_algorithms() -> list[Algorithm]:
    return ["ES256", "RS256"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InlineKey(Strict):
    """A signing key given in config (e.g. from a secret manager through ``${VAR}``)."""

    kid: str = Field(min_length=1)
    pem: SecretStr = Field(description="PEM of the private key (PKCS#8 or traditional).")


class ExternalIssuer(Strict):
    """An identity provider whose access tokens the gateway accepts (frontend apps)."""

    issuer: str = Field(min_length=1, description="Exact value of the tokens' ``iss``.")
    audience: str = Field(min_length=1, description="A value the tokens' ``aud`` must hold.")
    jwks_url: str = Field(pattern=r"^https?://", description="The issuer's JWKS document.")
    algorithms: list[Algorithm] = Field(default_factory=_default_algorithms, min_length=1)
    tier: str = "external"
    scopes_claim: str = Field(
        "scope", description="Claim holding granted scopes: a space-separated string or a list."
    )
    allowed_scopes: list[str] = Field(
        default_factory=lambda: ["experience:web", "experience:mobile", "experience:support"],
        description="The most this issuer's tokens may grant here (intersected with the "
        "token's own scopes): an outside identity provider never mints admin or partner access "
        "unless listed.",
    )


class TokenEndpointLimits(Strict):
    """Brute-force limits on ``/oauth/token`` (``limits`` strings, e.g. ``10/minute``)."""

    per_client: str = "20/minute"
    per_address: str = "60/minute"

    @field_validator("per_client", "per_address")
    @classmethod
    def _parses(cls, value: str) -> str:
        parse(value)
        return value


class OAuthConfig(Strict):
    """The whole of ``config/oauth.yaml``."""

    issuer: str = Field(
        "",
        description="This gateway's ``iss``; empty: the gateway's own public URL "
        "(``gateway.public_url``, else ``http://host:port``), see ``with_issuer``.",
    )
    audience: str = Field("trellis", description="``aud`` of issued tokens; local ones need it.")
    access_token_lifetime_s: int = Field(900, ge=60, le=86_400)
    keys_dir: Path = Field(
        Path("var/keys"),
        description="PEM private keys, kid = file stem; relative to the working directory. "
        "Unset: <gateway.data_dir>/keys (gateway/settings.py).",
    )
    keys: list[InlineKey] = Field(default_factory=list)
    signing_kid: str | None = Field(
        None, description="Sign with this kid; default: the greatest kid (name keys by date)."
    )
    generate_if_missing: bool = Field(
        False, description="Sandbox: create one key in keys_dir (0600) when there is none."
    )
    generate_algorithm: Literal["ES256", "RS256"] = "ES256"
    algorithms: list[Algorithm] = Field(
        default_factory=_default_algorithms,
        min_length=1,
        description="Algorithms accepted on tokens this gateway issued.",
    )
    external_issuers: list[ExternalIssuer] = Field(default_factory=list)
    leeway_s: int = Field(30, ge=0, le=300)
    max_token_bytes: int = Field(8192, ge=512, le=65_536)
    verified_cache_size: int = Field(10_000, ge=0, description="0 disables the cache.")
    revocation_staleness_s: float = Field(
        1.0,
        ge=0,
        le=60,
        description="With Redis: a revocation made by another process is refused within this "
        "many seconds (each process reads the revocation version at most this often instead "
        "of asking Redis per request); 0: ask Redis on every request.",
    )
    token_endpoint_limits: TokenEndpointLimits = Field(default_factory=TokenEndpointLimits)
    jwks_min_refresh_interval_s: float = Field(
        30.0, ge=0, description="An unknown kid refetches an external JWKS at most this often."
    )
    jwks_max_age_s: float = Field(3600.0, gt=0, description="Refetch a JWKS this old on use.")
    jwks_timeout_s: float = Field(3.0, gt=0)

    @field_validator("issuer")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")


WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104  (names them, binds nothing)


def public_base_url(public_url: str | None, host: str, port: int) -> str:
    """The gateway's URL as clients reach it: ``public_url`` when set, else its host and port.

    A wildcard bind address (``0.0.0.0``, ``::``) is no address a client can call, so the
    loopback address stands in for it; behind a proxy or on a wildcard, set ``public_url``.
    """
    if public_url:
        return public_url.rstrip("/")
    if host in WILDCARD_HOSTS:
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def with_issuer(config: OAuthConfig, base_url: str) -> OAuthConfig:
    """``config`` with its issuer set: the configured one, or the gateway's ``base_url``.

    The issuer is the base of the discovery document's endpoints, so it must be where the
    gateway answers: a fixed default would send discovery-based clients to another port.
    """
    if config.issuer:
        return config
    return config.model_copy(update={"issuer": base_url.rstrip("/")})


class ClientConfig(Strict):
    """One entry of ``config/clients.yaml`` (keyed by client id)."""

    secret_hash: SecretStr = Field(description="argon2id hash of the client secret.")
    scopes: list[str] = Field(default_factory=list)
    tier: str = "default"
    description: str = ""

    @field_validator("secret_hash")
    @classmethod
    def _is_argon2(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith("$argon2"):
            raise ValueError("secret_hash must be an argon2 hash (see docs/oauth.md)")
        return value

    @field_validator("scopes")
    @classmethod
    def _no_spaces(cls, value: list[str]) -> list[str]:
        for scope in value:
            if not scope or " " in scope:
                raise ValueError(f"invalid scope {scope!r}")
        return value
