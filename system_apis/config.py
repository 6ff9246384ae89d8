"""Configuration models of a backend: where it is, how to authenticate, how to be resilient."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    model_validator,
)

from .proxies import check_proxy_url
from .tls import TlsConfig

BACKEND_NAMES: tuple[str, ...] = (
    "crm",
    "erp",
    "billing",
    "support",
    "marketing",
    "inventory",
    "shipping",
)
"""The instances the shipped ``config/backends.yaml`` declares: one per role, named after it,
then ``shipping``, a system declared with the ``rest`` connector that plays no role."""


def sandbox_ports(
    base_port: int, instances: Iterable[str], fixed: Mapping[str, int | None] | None = None
) -> dict[str, int]:
    """Each instance's sandbox port: its own ``sandbox_port`` if set, else ``base_port`` plus its
    rank among the other instance names in sorted order, so a port depends on the names, not on
    their order in the file."""
    fixed = fixed or {}
    names = sorted(set(instances))
    ranked = [n for n in names if not fixed.get(n)]
    return {n: fixed.get(n) or base_port + ranked.index(n) for n in names}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OAuthClientCredentialsAuth(Strict):
    kind: Literal["oauth_client_credentials"]
    token_url: str = Field(description="Absolute, or relative to the backend's base URL.")
    client_id: str
    client_secret: SecretStr
    scope: str | None = None
    refresh_skew_s: float = Field(30.0, ge=0)


class ApiKeyAuth(Strict):
    kind: Literal["api_key"]
    header: str = "X-API-Key"
    key: SecretStr
    prefix: str = ""


class ApiKeyQueryAuth(Strict):
    """The key in a query parameter of every call (some vendors take it no other way; it then
    shows in their access logs, so prefer a header where the vendor offers one)."""

    kind: Literal["api_key_query"]
    param: str = Field("api_key", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    key: SecretStr


class BearerAuth(Strict):
    """A fixed bearer token (a personal or private-app access token)."""

    kind: Literal["bearer"]
    token: SecretStr


class BasicAuth(Strict):
    kind: Literal["basic"]
    username: str
    password: SecretStr


class NoAuth(Strict):
    kind: Literal["none"]


BackendAuth = Annotated[
    OAuthClientCredentialsAuth | ApiKeyAuth | ApiKeyQueryAuth | BearerAuth | BasicAuth | NoAuth,
    Field(discriminator="kind"),
]


class Timeouts(Strict):
    connect_s: float = Field(2.0, gt=0, description="Includes waiting for a pool slot.")
    read_s: float = Field(5.0, gt=0, description="Bounds a stalled backend between bytes.")
    total_s: float = Field(10.0, gt=0, description="Caps one attempt, body included.")


class RetryPolicy(Strict):
    max_attempts: int = Field(3, ge=1, le=10)
    base_delay_s: float = Field(0.05, ge=0)
    max_delay_s: float = Field(2.0, ge=0)
    max_retry_after_s: float = Field(
        5.0, ge=0, description="A longer Retry-After is not waited for: the call fails fast."
    )
    retry_on_status: list[int] = Field(default_factory=lambda: [429, 500, 502, 503, 504])


class BreakerPolicy(Strict):
    failure_threshold: int = Field(5, ge=1, description="Consecutive failures that open it.")
    reset_timeout_s: float = Field(10.0, gt=0, description="Open this long, then half-open.")
    half_open_max_calls: int = Field(1, ge=1)


class VendorRateLimit(Strict):
    """The vendor's cap; we pace outbound calls to stay under it."""

    rate: float = Field(gt=0, description="Requests per period.")
    period_s: float = Field(1.0, gt=0)
    burst: int | None = Field(None, ge=1, description="Default: one period's worth.")

    @property
    def per_second(self) -> float:
        return self.rate / self.period_s


class BackendConfig(Strict):
    connector: str | None = Field(
        None, description="The installed connector this instance runs (docs/connectors.md)."
    )
    role: str | None = Field(
        None, description="The role it plays; default: the connector's (its first) role."
    )
    sandbox: bool = Field(
        False, description="Served by Trellis's sandbox; base_url is then derived from its port."
    )
    sandbox_port: int | None = Field(
        None, ge=1, le=65535, description="Default: the sandbox base port plus its name's rank."
    )
    base_url: HttpUrl | None = None
    auth: BackendAuth = Field(default_factory=lambda: NoAuth(kind="none"))
    timeouts: Timeouts = Field(default_factory=Timeouts)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = Field(default_factory=BreakerPolicy)
    max_concurrency: int = Field(32, ge=1, description="Bulkhead: calls in flight at once.")
    pool_size: int = Field(64, ge=1)
    keepalive_s: float = Field(15.0, gt=0, description="Keep below the backend's idle timeout.")
    max_response_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="A larger response body fails the call (502) instead of filling memory.",
    )
    rate_limit: VendorRateLimit | None = None
    health_path: str = "/__health"
    critical: bool = Field(False, description="System of record: its failure fails composites.")
    # how it is reached (system_apis/egress.py; docs/operations.md, "TLS and proxies")
    tls: TlsConfig | None = None
    proxy: Annotated[str, AfterValidator(check_proxy_url)] | None = Field(
        None, description="http://[user:pass@]host:port, or direct; default: HTTPS_PROXY etc."
    )
    transport: Literal["auto", "own", "library"] = "auto"
    accept_encoding: Literal["auto", "gzip", "identity"] = "auto"

    @model_validator(mode="after")
    def _where(self) -> BackendConfig:
        if not self.sandbox and self.base_url is None:
            raise ValueError("base_url is required unless sandbox is true")
        if self.transport == "own" and self.proxy not in (None, "direct"):
            raise ValueError("transport: own has no proxy support; use auto or library")
        return self
