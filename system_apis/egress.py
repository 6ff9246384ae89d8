"""How a backend client reaches an origin: the transport interface and the choice of one.

``OriginTransport`` is what ``client.BackendClient`` needs: send one request to one origin
(scheme, host, port) and read the whole response. Two implementations:

* ``transport.Transport``, the own HTTP/1.1 client (asyncio + httptools): the default, the
  cheapest per call;
* ``library_transport.LibraryTransport``, on aiohttp: for what the own one lacks, an egress
  proxy (HTTP CONNECT for https targets).

``make_transport`` picks one per origin from the backend's ``transport:`` (``auto`` by
default), ``tls:``, ``proxy:``, ``accept_encoding:`` and the proxy variables of the
environment: ``auto`` is the own transport unless a proxy applies, ``library`` always aiohttp,
``own`` the own one (a proxy still forces aiohttp, with a warning at start).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from .config import BackendConfig
from .library_transport import LibraryTransport
from .proxies import Proxy, is_loopback, proxy_for
from .tls import ssl_context
from .transport import Origin, Response, Transport

__all__ = ["OriginTransport", "accept_encoding", "make_transport", "tls_warning"]

log = logging.getLogger("trellis.system")


class OriginTransport(Protocol):
    """Send one request to this origin; a pool of kept-alive connections behind it."""

    origin: Origin
    connections_made: int

    async def request(
        self,
        method: str,
        target: str,
        *,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | str | None = None,
        timeout_s: float | None = None,
        idempotent: bool | None = None,
    ) -> Response:
        """The whole response to ``method target`` (path and query). Failures: a
        ``transport.TransportError`` subclass, ``TimeoutError``, or ``ValueError`` for a
        request that must not be sent (header injection)."""
        ...

    async def close(self) -> None:
        """Close every connection; later calls fail with ``ConnectFailed``."""
        ...


def accept_encoding(config: BackendConfig, host: str) -> str:
    """``gzip`` where compression pays (a vendor across a network), ``identity`` on loopback
    and for the sandbox, where bytes cost nothing and compressing costs CPU at both ends."""
    if config.accept_encoding != "auto":
        return config.accept_encoding
    return "identity" if config.sandbox or is_loopback(host) else "gzip"


def make_transport(config: BackendConfig, origin: Origin, *, name: str) -> OriginTransport:
    """The transport for one origin of a backend, as its configuration asks."""
    scheme, host, port = origin
    proxy: Proxy | None = proxy_for(scheme, host, config.proxy, sandbox=config.sandbox)
    t = config.timeouts
    tls = config.tls if scheme == "https" else None
    ssl_ctx = ssl_context(tls) if tls is not None else None
    server_name = tls.server_name if tls is not None else None
    encoding = accept_encoding(config, host)
    if config.transport == "library" or proxy is not None:
        if proxy is not None and config.transport == "own":
            log.warning(
                "the own transport has no proxy support: this backend uses the library one",
                extra={"backend": name, "proxy": proxy.url, "proxy_source": proxy.source},
            )
        return LibraryTransport(
            scheme,
            host,
            port,
            pool_size=config.pool_size,
            keepalive_s=config.keepalive_s,
            connect_s=t.connect_s,
            read_s=t.read_s,
            total_s=t.total_s,
            max_response_bytes=config.max_response_bytes,
            ssl_context=ssl_ctx,
            server_name=server_name,
            accept_encoding=encoding,
            proxy=proxy,
        )
    return Transport(
        scheme,
        host,
        port,
        pool_size=config.pool_size,
        keepalive_s=config.keepalive_s,
        connect_s=t.connect_s,
        read_s=t.read_s,
        total_s=t.total_s,
        max_response_bytes=config.max_response_bytes,
        ssl_context=ssl_ctx,
        server_name=server_name,
        accept_encoding=encoding,
    )


def tls_warning(config: BackendConfig) -> str | None:
    """The warning a backend's TLS settings deserve, or None."""
    if config.tls is not None and not config.tls.verify:
        return "TLS certificate verification is off (tls.verify: false)"
    return None
