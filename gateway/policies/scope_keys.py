"""Every ASGI scope key the gateway's policies share, with the module that writes it and the
modules that read it.

A policy talks to another through the request's scope only with a key declared here, and
only from the modules named with it: ``tests/gateway/test_scope_keys.py`` reads the source of
every package and fails on a ``scope[...]`` with an undeclared ``"trellis.*"`` literal, or a
declared key written or read by a module not named here. The keys are plain strings (a scope
lookup stays one dict access); ``DECLARED`` holds what the test checks.

Standard ASGI and Starlette keys the policies rely on are listed in ``ASGI_KEYS`` for the
reader; they are not checked.

This module imports nothing, so any layer may import it.
"""

from __future__ import annotations

from typing import NamedTuple


class ScopeKey(NamedTuple):
    """One shared key: its name, what it holds, who writes it and who reads it directly."""

    name: str
    holds: str
    writer: str
    readers: tuple[str, ...]


PRINCIPAL_KEY = "trellis.principal"
AUTH_ERROR_KEY = "trellis.auth_error"
REQUEST_ID_KEY = "trellis.request_id"
TRACE_ID_KEY = "trellis.trace_id"
RESPONSE_HEADERS_KEY = "trellis.response_headers"
CLAIMED_CLIENT_KEY = "trellis.claimed_client_id"
EXCHANGE_KEY = "trellis.exchange"

DECLARED: tuple[ScopeKey, ...] = (
    ScopeKey(
        PRINCIPAL_KEY,
        "The verified bearer token as a gateway.principal.Principal, absent without one. "
        "Everything else (metrics, access log, server span, scope guards, process and "
        "experience views) reads it through gateway.principal.principal_of.",
        writer="gateway.oauth.middleware",
        readers=("gateway.principal",),
    ),
    ScopeKey(
        AUTH_ERROR_KEY,
        "Why a presented bearer token was refused (for logs and the 401's wording, never "
        "for the client's eyes).",
        writer="gateway.oauth.middleware",
        readers=("gateway.oauth.scopes",),
    ),
    ScopeKey(
        REQUEST_ID_KEY,
        "The request id (the caller's well-formed X-Request-ID, else a fresh one), set when "
        "the request starts.",
        writer="gateway.policies.envelope",
        readers=("gateway.policies.access_log",),
    ),
    ScopeKey(
        TRACE_ID_KEY,
        "The 32-hex trace id of the server span (the request id when the span has none), "
        "set when the request starts: problem bodies and access lines carry it.",
        writer="gateway.policies.tracing",
        readers=("gateway.problems", "gateway.policies.access_log"),
    ),
    ScopeKey(
        RESPONSE_HEADERS_KEY,
        "A list of (name, value) headers the response will carry besides its own, made when "
        "the request starts; a policy inside the envelope appends to it instead of wrapping "
        "send (the rate limit's RateLimit pair), and the envelope adds them when the response "
        "starts.",
        writer="gateway.policies.phases",
        readers=("gateway.policies.ratelimit",),
    ),
    ScopeKey(
        EXCHANGE_KEY,
        "The envelope's Exchange of the request, made when the request starts: the error "
        "layer reads its status (0 until the response starts) instead of wrapping send.",
        writer="gateway.policies.phases",
        readers=("gateway.policies.handled_errors",),
    ),
    ScopeKey(
        CLAIMED_CLIENT_KEY,
        "The client id a request to the OAuth endpoints claims, authenticated or not (at most "
        "128 characters: it is the caller's text), so failed guesses can be traced to who they "
        "claimed to be and where they came from.",
        writer="gateway.oauth.endpoints",
        readers=("gateway.policies.access_log",),
    ),
)
"""The gateway's own keys, checked against the source by the test above."""

ASGI_KEYS: tuple[ScopeKey, ...] = (
    ScopeKey(
        "client",
        "The caller's (host, port): rewritten from X-Forwarded-For / Forwarded when the peer "
        "is a trusted proxy, before any other policy runs.",
        writer="gateway.policies.edge",
        readers=(
            "gateway.policies.tracing",
            "gateway.policies.ratelimit",
            "gateway.policies.access_log",
        ),
    ),
    ScopeKey(
        "scheme",
        "http or https: rewritten from a trusted proxy's X-Forwarded-Proto / Forwarded.",
        writer="gateway.policies.edge",
        readers=("gateway.policies.tracing",),
    ),
    ScopeKey(
        "route",
        "The route Starlette's router matched (the innermost one, set by each router level).",
        writer="starlette.routing",
        readers=("gateway.policies.routing",),
    ),
    ScopeKey(
        "root_path",
        "The mount prefixes matched so far, accumulated by Starlette's Mount.",
        writer="starlette.routing",
        readers=("gateway.policies.routing",),
    ),
)
"""Standard keys the policies depend on (documentation; not checked)."""
