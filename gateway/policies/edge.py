"""Edge hardening: trusted-proxy client addresses, security headers, CORS for browser channels.

The first two are policies of the request envelope (``gateway.policies.envelope``); CORS is
Starlette's own middleware, which is pure ASGI.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Scope

from gateway.policies.phases import EnvelopePolicy, Exchange, Header


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CorsConfig(Strict):
    allow_origins: list[str] = Field(default_factory=list, description="Empty: CORS off.")
    allow_methods: list[str] = Field(
        default_factory=lambda: ["GET", "POST", "PUT", "PATCH", "DELETE"]
    )
    allow_headers: list[str] = Field(
        default_factory=lambda: [
            "Authorization",
            "Content-Type",
            "Idempotency-Key",
            "If-None-Match",
            "X-Request-ID",
            "traceparent",
            "tracestate",
        ]
    )
    expose_headers: list[str] = Field(
        default_factory=lambda: [
            "ETag",
            "X-Request-ID",
            "RateLimit",
            "RateLimit-Policy",
            "Retry-After",
            "Deprecation",
            "Sunset",
        ]
    )
    max_age_s: int = 600


class EdgeConfig(Strict):
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="CIDRs whose X-Forwarded-For / Forwarded headers are believed; others ignored.",
    )
    security_headers: bool = True
    hsts: bool = Field(False, description="Send Strict-Transport-Security (only behind TLS).")
    cors: CorsConfig = Field(default_factory=CorsConfig)


SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
)
_DOCS_CSP = b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'"
_API_CSP = b"default-src 'none'; frame-ancestors 'none'"


class SecurityHeaders(EnvelopePolicy):
    """Response start: defensive headers the app did not set itself (an ETag'd response keeps
    its caching), on every response; the API documentation gets a CSP that lets it render."""

    def __init__(self, hsts: bool = False) -> None:
        extra = [(b"strict-transport-security", b"max-age=31536000")] if hsts else []
        self.headers: list[tuple[bytes, bytes]] = [*SECURITY_HEADERS, *extra]
        self._names = frozenset(n for n, _ in self.headers) | {b"etag", b"content-security-policy"}
        # the usual case, none of them set by the app: the whole list, made once
        self._api = [*self.headers, (b"content-security-policy", _API_CSP)]
        self._docs = [*self.headers, (b"content-security-policy", _DOCS_CSP)]

    def response_start(self, exchange: Exchange, headers: Sequence[Header]) -> list[Header]:
        return self.missing(headers, exchange.scope["path"].startswith("/docs"))

    def missing(
        self, headers: Iterable[tuple[bytes, bytes]], docs: bool
    ) -> list[tuple[bytes, bytes]]:
        """The headers to add to a response that already has ``headers``."""
        present = {name.lower() for name, _ in headers}
        if present.isdisjoint(self._names):
            return self._docs if docs else self._api
        added = [(n, v) for n, v in self.headers if n not in present]
        if b"etag" in present:
            added = [(n, v) for n, v in added if n != b"cache-control"]
        if b"content-security-policy" not in present:
            added.append((b"content-security-policy", _DOCS_CSP if docs else _API_CSP))
        return added


class TrustedProxies(EnvelopePolicy):
    """Request start: believe ``X-Forwarded-For``/``Forwarded`` only when the peer is a
    configured proxy.

    The client address becomes the right-most address not itself a trusted proxy, so a
    caller cannot spoof its address by sending the header itself. It runs first, so every
    other policy sees the rewritten ``scope["client"]``.
    """

    def __init__(self, trusted: Iterable[str]) -> None:
        self.networks = [ipaddress.ip_network(n, strict=False) for n in trusted]

    def request_start(self, exchange: Exchange) -> None:
        self.apply(exchange.scope)

    def _trusted(self, host: str) -> bool:
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(addr in net for net in self.networks)

    def apply(self, scope: Scope) -> None:
        """Rewrite ``scope["client"]`` (and the scheme) from a trusted proxy's headers."""
        if not scope.get("client"):
            return
        peer = scope["client"][0]
        if self._trusted(peer):
            chain, proto = _forwarded_chain(scope["headers"])
            client = peer
            for hop in reversed(chain):
                client = hop
                if not self._trusted(hop):
                    break
            scope["client"] = (client, 0)
            if proto in ("http", "https"):
                scope["scheme"] = proto


def _forwarded_chain(headers: Iterable[tuple[bytes, bytes]]) -> tuple[list[str], str | None]:
    chain: list[str] = []
    proto: str | None = None
    for name, value in headers:
        if name == b"forwarded":
            for element in value.decode("latin-1").split(","):
                for pair in element.split(";"):
                    key, _, val = pair.strip().partition("=")
                    val = val.strip('"')
                    if key.lower() == "for" and val:
                        chain.append(
                            val.strip("[]").split("]:")[0]
                            if val.startswith("[")
                            else val.split(":")[0]
                        )
                    elif key.lower() == "proto":
                        proto = val.lower()
        elif name == b"x-forwarded-for" and not chain:
            chain.extend(h.strip() for h in value.decode("latin-1").split(",") if h.strip())
        elif name == b"x-forwarded-proto" and proto is None:
            proto = value.decode("latin-1").strip().lower()
    return chain, proto


def cors_middleware(app: ASGIApp, cfg: CorsConfig) -> ASGIApp:
    if not cfg.allow_origins:
        return app
    return CORSMiddleware(
        app,
        allow_origins=cfg.allow_origins,
        allow_methods=cfg.allow_methods,
        allow_headers=cfg.allow_headers,
        expose_headers=cfg.expose_headers,
        max_age=cfg.max_age_s,
    )
