"""The backend calls' transport on aiohttp: what the own transport lacks (egress proxies).

Same contract as :class:`system_apis.transport.Transport` (``egress.OriginTransport``): one
instance per origin, a pool of at most ``pool_size`` keep-alive connections, the connect /
read / total timeouts, the response size cap applied to the decoded body, redirects not
followed, and the same errors (``TransportError`` subclasses, ``TimeoutError``, ``ValueError``
for header injection). Where it differs, on servers that misbehave: aiohttp resends an
idempotent request once when its connection is lost before the whole response head, fresh
connection or not (the own transport only on a reused one, and only before any byte); it does
not resend a POST the caller marks idempotent; it keeps an HTTP/1.0 keep-alive connection; a
body sent after a HEAD answer fails the next call instead of being dropped
(tests/system/test_transport.py runs those cases for the own transport alone).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from types import SimpleNamespace

import aiohttp
from aiohttp import http_exceptions
from multidict import CIMultiDict
from yarl import URL

from .proxies import Proxy
from .tls import default_ssl_context
from .transport import (
    DEFAULT_PORTS,
    BadResponse,
    BodyCutShort,
    ConnectFailed,
    ConnectionLost,
    Origin,
    Response,
    ResponseTooLarge,
    check_request,
)

__all__ = ["LibraryTransport"]

_CHUNK = 64 * 1024
_WIRE_HEADERS = frozenset({"content-encoding", "content-length"})
_CODINGS = frozenset({"identity", "gzip", "x-gzip", "deflate"})


class LibraryTransport:
    """HTTP/1.1 to one origin through an aiohttp session (made on first use)."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int | None = None,
        *,
        pool_size: int = 64,
        keepalive_s: float = 15.0,
        connect_s: float = 2.0,
        read_s: float = 5.0,
        total_s: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str = "trellis",
        max_response_bytes: int = 16 * 1024 * 1024,
        server_name: str | None = None,
        proxy: Proxy | None = None,
        accept_encoding: str = "identity",
    ) -> None:
        scheme = scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise ValueError(f"unsupported scheme {scheme!r}")
        if pool_size < 1 or min(keepalive_s, connect_s, read_s, total_s) <= 0:
            raise ValueError("pool size and timeouts must be positive")
        self.port = port or DEFAULT_PORTS[scheme]
        self.origin: Origin = (scheme, host, self.port)
        self.host = host
        self.pool_size = pool_size
        self.keepalive_s = keepalive_s
        self.connect_s = connect_s
        self.read_s = read_s
        self.total_s = total_s
        self.max_response_bytes = max_response_bytes
        self.proxy = proxy
        self._ssl: ssl.SSLContext | bool = False
        if scheme == "https":
            self._ssl = ssl_context or default_ssl_context()
        self._server_name = server_name if scheme == "https" else None
        authority = f"[{host}]" if ":" in host else host
        self._base = f"{scheme}://{authority}:{self.port}"
        self._headers = {"User-Agent": user_agent, "Accept-Encoding": accept_encoding}
        self._proxy_url = URL(proxy.url) if proxy else None
        self._proxy_headers = (
            {"Proxy-Authorization": proxy.authorization} if proxy and proxy.authorization else None
        )
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self.connections_made = 0
        """Connections opened so far (tests and diagnostics)."""

    def __repr__(self) -> str:
        via = f" via {self.proxy.url}" if self.proxy else ""
        return f"<LibraryTransport {self._base}{via}>"

    def _session_now(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None:
            trace = aiohttp.TraceConfig()
            trace.on_connection_create_end.append(self._counted)
            connector = aiohttp.TCPConnector(
                limit=self.pool_size,
                limit_per_host=self.pool_size,
                keepalive_timeout=self.keepalive_s,
                ssl=self._ssl,
                ttl_dns_cache=60,
            )
            session = self._session = aiohttp.ClientSession(
                connector=connector,
                trace_configs=[trace],
                headers=self._headers,
                skip_auto_headers=("Accept",),
                auto_decompress=True,
                cookie_jar=aiohttp.DummyCookieJar(),
                raise_for_status=False,
            )
        return session

    async def _counted(
        self, session: aiohttp.ClientSession, ctx: SimpleNamespace, params: object
    ) -> None:
        self.connections_made += 1

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
        """Send one request and read the whole response (see the own transport's)."""
        target = check_request(method, target, params, headers)

        if self._closed:
            raise ConnectFailed("transport closed")
        total = self.total_s if timeout_s is None else timeout_s
        timeout = aiohttp.ClientTimeout(
            total=total, connect=min(self.connect_s, total), sock_read=self.read_s
        )
        data = body.encode() if isinstance(body, str) else body
        if data is None and method in ("POST", "PUT", "PATCH"):
            data = b""
        limit = self.max_response_bytes
        try:
            async with self._session_now().request(
                method,
                URL(self._base + target, encoded=True),
                headers=CIMultiDict(headers) if headers else None,
                data=data,
                timeout=timeout,
                allow_redirects=False,
                proxy=self._proxy_url,
                proxy_headers=self._proxy_headers,
                server_hostname=self._server_name,
            ) as resp:
                if resp.status < 200:  # 101: aiohttp hands an upgrade over, we never ask one
                    resp.close()
                    raise BadResponse("the server switched protocols")
                coding = resp.headers.get("Content-Encoding", "identity").strip().lower()
                if coding not in _CODINGS:
                    resp.close()
                    raise BadResponse(f"unsupported content-encoding {coding!r}")
                coded = coding != "identity"
                declared = resp.content_length
                if declared is not None and declared > limit and method != "HEAD":
                    raise ResponseTooLarge(f"the response declares {declared} bytes")
                chunks: list[bytes] = []
                received = 0
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    received += len(chunk)
                    if received > limit:
                        what = "decoded response body" if coded else "response body"
                        raise ResponseTooLarge(f"the {what} exceeds {limit} bytes")
                    chunks.append(chunk)
                raw = list(resp.raw_headers)
                if coded:  # aiohttp decoded it: drop the headers of the wire form
                    raw = [
                        (k, v) for k, v in raw if k.decode("latin-1").lower() not in _WIRE_HEADERS
                    ]
                return Response(resp.status, raw, b"".join(chunks))
        except (ResponseTooLarge, BadResponse):
            raise
        except TimeoutError:
            raise TimeoutError(f"no complete response from {self._base} in time") from None
        except aiohttp.ClientHttpProxyError as exc:
            raise ConnectFailed(f"the proxy refused the tunnel: {exc.status}") from exc
        except aiohttp.ClientConnectorError as exc:
            raise ConnectFailed(f"{self.host}:{self.port}: {exc}") from exc
        except aiohttp.ClientPayloadError as exc:
            cause = exc.__cause__ or exc.__context__ or (exc.args[1] if len(exc.args) > 1 else None)
            if isinstance(cause, http_exceptions.DecompressSizeError):
                raise ResponseTooLarge(f"the decoded response body exceeds {limit} bytes") from exc
            if isinstance(cause, http_exceptions.ContentEncodingError):
                raise BadResponse(f"a corrupt compressed body: {exc}") from exc
            raise BodyCutShort("connection closed before the end of the body") from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise ConnectionLost("connection closed before the response") from exc
        except aiohttp.ClientResponseError as exc:
            raise BadResponse(f"unparseable response: {exc.message}") from exc
        except aiohttp.ClientOSError as exc:
            raise ConnectionLost(f"connection failed: {exc}") from exc
        except aiohttp.ClientError as exc:
            raise BadResponse(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        """Close every connection; later calls get ``ConnectFailed``."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        await asyncio.sleep(0)
