"""Serve only the configured Host names: 400 for any other ``Host`` header, before any route.

Anything that builds an absolute URL from the request (a redirect, a link in a body) would
otherwise carry a name the client chose (``Host: evil.example``). Names are compared without
the port and case-insensitively; ``*.example.com`` matches any subdomain of example.com, and
``*`` alone turns the check off.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from ..problems import problem_response

_REMEMBERED = 256
"""Distinct accepted raw Host values kept for a set lookup (only allowed names get in)."""


def normalize_host(name: str) -> str:
    """Lower case, without a port; an IPv6 address bracketed as in a Host header."""
    name = name.strip().lower()
    if name.startswith("["):
        end = name.find("]")
        return name[: end + 1] if end > 0 else name
    if name.count(":") > 1:  # a bare IPv6 address (configuration), not host:port
        return f"[{name}]"
    return name.partition(":")[0]


class AllowedHosts:
    """Pure ASGI: pass requests whose Host is allowed, answer 400 to the others."""

    def __init__(self, app: ASGIApp, hosts: Iterable[str]) -> None:
        self.app = app
        names = [normalize_host(h) for h in hosts]
        self.any = "*" in names
        self.exact = frozenset(n for n in names if not n.startswith("*."))
        self.suffixes = tuple(n[1:] for n in names if n.startswith("*."))  # ".example.com"
        self._accepted: set[bytes] = set()

    def allowed(self, raw: bytes) -> bool:
        if raw in self._accepted:
            return True
        name = normalize_host(raw.decode("latin-1"))
        ok = name in self.exact or (bool(self.suffixes) and name.endswith(self.suffixes))
        if ok and len(self._accepted) < _REMEMBERED:
            self._accepted.add(raw)
        return ok

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # the app's own coroutine is returned: no frame of this policy on an allowed request
        if self.any or scope["type"] != "http":  # the gateway serves no websockets
            return self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"host":
                if value in self._accepted or self.allowed(value):  # the set: no call
                    return self.app(scope, receive, send)
                break
        response = problem_response(
            400, scope=scope, problem="host-not-allowed", detail="Host header not allowed"
        )
        return response(scope, receive, send)
