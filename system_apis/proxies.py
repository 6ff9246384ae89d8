"""Which egress proxy, if any, a backend call goes through.

In order: loopback hosts and the sandbox never use a proxy; a backend's ``proxy:`` (a URL, or
``direct`` for none) wins; else the standard variables ``HTTPS_PROXY`` / ``HTTP_PROXY`` (by the
target's scheme, lower case too) with ``NO_PROXY``, read as ``urllib.request`` reads them.
An https target goes through the proxy by HTTP CONNECT (the TLS is end to end); an http one is
forwarded. Credentials in the proxy URL are sent as ``Proxy-Authorization: Basic``.
"""

from __future__ import annotations

import base64
import ipaddress
import urllib.request
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

__all__ = ["DIRECT", "Proxy", "check_proxy_url", "is_loopback", "proxy_for"]

DIRECT = "direct"
"""``proxy: direct``: this backend never uses a proxy, whatever the environment says."""


@dataclass(frozen=True, slots=True)
class Proxy:
    url: str
    """``http://host:port``, without credentials (safe to log)."""
    authorization: str | None
    """The ``Proxy-Authorization`` value, when the URL had credentials."""
    source: str
    """Where it came from: ``backends.yaml`` or the variable's name."""

    def __repr__(self) -> str:  # never the credentials
        return f"Proxy({self.url!r}, from {self.source}, auth={self.authorization is not None})"


def check_proxy_url(url: str) -> str:
    """``url`` if it names an http proxy (``http://[user:password@]host:port``), else
    ValueError saying what is wrong."""
    if url == DIRECT:
        return url
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"a proxy URL starts with http:// (got {parts.scheme or 'none'!r})")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the proxy URL has a bad port") from None
    if not parts.hostname or port is None:
        raise ValueError("a proxy URL needs a host and a port, e.g. http://proxy.internal:3128")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError("a proxy URL has no path or query")
    return url


def is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def proxy_for(
    scheme: str,
    host: str,
    configured: str | None,
    *,
    sandbox: bool = False,
) -> Proxy | None:
    """The proxy for a call to ``scheme://host``, or None to connect directly."""
    if sandbox or is_loopback(host) or configured == DIRECT:
        return None
    if configured:
        return _parse(configured, "backends.yaml")
    proxies = urllib.request.getproxies_environment()
    url = proxies.get(scheme)
    if not url or urllib.request.proxy_bypass(host):
        return None
    return _parse(url, f"{scheme.upper()}_PROXY")


def _parse(url: str, source: str) -> Proxy:
    if "://" not in url:
        url = f"http://{url}"  # HTTPS_PROXY=proxy:3128 is common, and urllib reads it so
    try:
        check_proxy_url(url)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    parts = urlsplit(url)
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return Proxy(f"http://{host}:{parts.port}", authorization, source)
