"""A lean HTTP/1.1 client for the backend calls: ``asyncio.Protocol`` + ``httptools``.

One :class:`Transport` per origin (scheme, host, port) keeps a pool of keep-alive connections.
It does what the backend calls need and nothing else (no cookies, no redirects, no proxies),
so a GET costs a fraction of the CPU of a general-purpose client (docs/decisions.md, "Backend
calls"). It is one implementation of ``egress.OriginTransport``; a backend that needs a
proxy uses the aiohttp one (``library_transport.py``).

* Bodies: a response body in gzip or deflate is decoded (asked for with ``accept_encoding``
  or not), the size cap applying to the decoded size; another coding is a ``BadResponse``.
  A HEAD response ends at its headers and keeps its connection; trailer fields after a
  chunked body are dropped, never merged into the headers.

* Pool: at most ``pool_size`` requests in flight (and so at most that many connections);
  callers beyond it wait for a slot until the connect timeout. Idle connections are reused
  newest first and closed after ``keepalive_s``. A connection goes back to the pool only after
  a complete HTTP/1.1 response that neither side ended with ``Connection: close``.
* Stale connections: a pooled connection the server closed while idle is skipped before
  writing; one that is lost before ANY response byte arrived is retried once on a fresh
  connection, for idempotent requests only (RFC 9112 §9.3.1, as aiohttp does). Never once a
  response byte was received.
* Timeouts: ``connect_s`` bounds waiting for a slot plus connecting, ``read_s`` the silence
  between received bytes (from the request written), ``total_s`` the whole attempt. One timer
  per request checks both deadlines. A timeout raises the builtin ``TimeoutError`` and closes
  that connection.
* Errors: :class:`TransportError` and its four subclasses, and ``TimeoutError``. A header or
  request target carrying CR/LF is refused with ``ValueError`` (header injection).
"""

from __future__ import annotations

import asyncio
import re
import ssl
import zlib
from collections.abc import Mapping
from typing import cast
from urllib.parse import quote, urlencode, urlsplit

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from .resilience import Slots
from .tls import default_ssl_context

__all__ = [
    "DEFAULT_PORTS",
    "BadResponse",
    "BodyCutShort",
    "ConnectFailed",
    "ConnectionLost",
    "Origin",
    "Response",
    "ResponseTooLarge",
    "Transport",
    "TransportError",
    "check_request",
    "clean_target",
    "default_ssl_context",
    "split_url",
]

Origin = tuple[str, str, int]
"""(scheme, host, port) of a server, e.g. ``("https", "api.example.com", 443)``."""


class TransportError(Exception):
    """Base of the transport's failures (a timeout raises the builtin ``TimeoutError``)."""


class ConnectFailed(TransportError):
    """No connection could be made: refused, unresolvable, TLS handshake failed, or closed."""


class ConnectionLost(TransportError):
    """The connection dropped before the response headers were complete."""


class BodyCutShort(TransportError):
    """The connection dropped after the response headers, before the end of the body."""


class BadResponse(TransportError):
    """The server answered something that is not an HTTP/1.x response."""


class ResponseTooLarge(BadResponse):
    """The response body is larger than the transport accepts (``max_response_bytes``)."""


class _NoResponse(ConnectionLost):
    """Lost before any response byte: on a reused connection, worth one more try."""


class Response:
    """One response: status, headers and the whole body. The headers are decoded on first use
    (most callers read only the status and the body)."""

    __slots__ = ("_headers", "_raw_headers", "body", "status")

    def __init__(self, status: int, raw_headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.body = body
        self._raw_headers = raw_headers
        self._headers: CIMultiDictProxy[str] | None = None

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        headers = self._headers
        if headers is None:
            decoded = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self._raw_headers]
            headers = self._headers = CIMultiDictProxy(CIMultiDict(decoded))
        return headers

    def __repr__(self) -> str:
        return f"<Response {self.status}, {len(self.body)} bytes>"


DEFAULT_PORTS = {"http": 80, "https": 443}
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
"""Methods that always carry a Content-Length, ``0`` without a body (some servers want it)."""

_HOST = re.compile(r"[A-Za-z0-9\-._~%:]+")  # a name, IPv4, or IPv6 (unbracketed)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET_SAFE = "-._~!$&'()*+,;=:@/?%"
_UNSAFE_TARGET = re.compile(r"[^A-Za-z0-9\-._~!$&'()*+,;=:@/?%]")
_SPECIAL_HEADERS = frozenset(
    {"host", "user-agent", "accept-encoding", "connection", "content-length", "transfer-encoding"}
)
_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE", "POST", "PATCH"})
_WATCHED = frozenset({14, 16})
"""Lengths of the header names on_header looks at: content-length, content-encoding."""
_SLACK_S = 0.001
"""Timers may fire up to a clock tick early: a deadline this close counts as reached."""


def split_url(url: str) -> tuple[Origin, str]:
    """``(origin, target)`` of an absolute http(s) URL; the target is path and query."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials in a URL are not sent: use an auth header")
    port = parts.port or DEFAULT_PORTS[scheme]
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    return (scheme, parts.hostname, port), target


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time (no pipelining)."""

    __slots__ = (
        "body",
        "closed",
        "coding",
        "deadline",
        "got_bytes",
        "headers_done",
        "idle_since",
        "in_pool",
        "is_head",
        "last_read",
        "loop",
        "n_headers",
        "parser",
        "pool",
        "raw_headers",
        "read_s",
        "received",
        "reusable",
        "timer",
        "transport",
        "waiter",
    )

    def __init__(self, pool: Transport) -> None:
        self.pool = pool
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Response] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.received = 0
        self.coding: bytes | None = None
        """The response's content coding, unless identity."""
        self.n_headers = 0
        self.headers_done = False
        self.got_bytes = False
        self.is_head = False
        self.reusable = False
        self.closed = False
        self.in_pool = False
        self.deadline = 0.0
        self.last_read = 0.0
        self.read_s = 0.0
        self.idle_since = 0.0

    # --- driven by the pool ---------------------------------------------------------------

    def send(
        self, data: bytes, deadline: float, read_s: float, is_head: bool
    ) -> asyncio.Future[Response]:
        """Write one request; the future gets the response or the failure."""
        loop = self.loop
        fut: asyncio.Future[Response] = loop.create_future()
        self.waiter = fut
        self.raw_headers = []
        self.body = []
        self.received = 0
        self.coding = None
        self.headers_done = self.got_bytes = self.reusable = False
        self.is_head = is_head
        self.deadline = deadline
        self.read_s = read_s
        now = self.last_read = loop.time()
        self.timer = loop.call_at(min(deadline, now + read_s), self._on_timer)
        try:
            assert self.transport is not None
            self.transport.write(data)
        except (RuntimeError, OSError):  # closed under us (uvloop raises): nothing was sent
            self._fail(_NoResponse("connection closed before the request was sent"))
        return fut

    def discard(self) -> None:
        """Abandon the connection (mid-exchange or not reusable): no graceful close."""
        self.reusable = False
        self.waiter = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.closed and self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Close an idle connection gracefully."""
        if not self.closed and self.transport is not None:
            self.transport.close()

    def usable(self, now: float, keepalive_s: float) -> bool:
        t = self.transport
        return (
            not self.closed
            and t is not None
            and not t.is_closing()
            and now - self.idle_since < keepalive_s
        )

    # --- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a cast, not an isinstance check: uvloop's transports do not subclass asyncio's
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # bytes nobody asked for: the connection is out of step
            self.discard()
            return
        self.got_bytes = True
        self.last_read = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BadResponse("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(BadResponse(f"unparseable response: {exc}"))

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost decides what the EOF meant

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._lost(self)
        fut = self.waiter
        if fut is None:
            return
        if self.headers_done:
            if exc is None and not self.is_head and self._delimited_by_close():
                self._complete(self.parser.get_status_code())  # the close ends the body
            else:
                self._fail(BodyCutShort("connection closed before the end of the body"))
        elif not self.got_bytes:
            self._fail(_NoResponse("connection closed before any response"))
        else:
            self._fail(ConnectionLost("connection closed in the response headers"))

    # --- httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.waiter is None:  # a second response to one request: never reuse this one
            self.reusable = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name, value))
        # Content-Length (14) or Content-Encoding (16); not a trailer (dropped in _complete)
        if len(name) in _WATCHED and not self.headers_done:
            low = name.lower()
            if low == b"content-length":
                # refuse a body announced too large before any arrives (HEAD has no body)
                declared = value.strip()
                if declared.isdigit() and int(declared) > self.pool.max_response_bytes:
                    if not self.is_head:
                        self._fail(ResponseTooLarge(f"the response declares {int(declared)} bytes"))
            elif low == b"content-encoding":
                coding = value.strip().lower()
                if coding != b"identity":
                    self.coding = coding

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.n_headers = len(self.raw_headers)
        if self.is_head and self.waiter is not None:
            parser = self.parser
            status = parser.get_status_code()
            if status >= 200:
                # The parser cannot be told the request was HEAD (it would wait for the body
                # the headers announce): the response ends here, and the next exchange gets a
                # fresh parser. Bytes after it (a body sent to a HEAD) reach the old parser
                # with no request waiting, which drops the connection (on_body).
                keep = parser.should_keep_alive() and parser.get_http_version() == "1.1"
                self._complete(status)
                self.parser = httptools.HttpResponseParser(self)
                self.reusable = keep

    def on_body(self, body: bytes) -> None:
        if self.waiter is None:  # a body after a HEAD response, or unasked-for: out of step
            self.discard()
            return
        self.received += len(body)
        if self.received > self.pool.max_response_bytes:
            if self.waiter is not None:
                self._fail(ResponseTooLarge("the response body exceeds the limit"))
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.waiter is None:
            return
        parser = self.parser
        status = parser.get_status_code()
        if status < 200:  # an interim 1xx answer: the real one follows
            self.raw_headers = []
            self.body = []
            self.received = 0
            self.headers_done = False
            self.coding = None
            return
        keep = parser.should_keep_alive() and parser.get_http_version() == "1.1"
        self._complete(status)
        self.reusable = keep  # after _complete, which clears it

    # --- ends of an exchange --------------------------------------------------------------

    def _complete(self, status: int) -> None:
        fut = self.waiter
        self.waiter = None
        self.reusable = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if fut is None or fut.done():
            return
        body = b"".join(self.body)
        raw_headers = self.raw_headers
        if len(raw_headers) != self.n_headers:  # trailer fields are not headers
            del raw_headers[self.n_headers :]
        if self.coding is not None and not self.is_head:
            try:  # the vendor compressed the body (asked for or not): pass it on decoded
                body, raw_headers = _decoded(
                    self.coding, body, raw_headers, self.pool.max_response_bytes
                )
            except BadResponse as exc:
                fut.set_exception(exc)
                self.raw_headers = []
                return
        fut.set_result(Response(status, raw_headers, body))
        # the response keeps this list (decoded on first use): bytes the server sends after
        # it (a second, unasked-for response) must not land in it
        self.raw_headers = []

    def _fail(self, exc: BaseException) -> None:
        fut = self.waiter
        self.waiter = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if fut is not None and not fut.done():
            fut.set_exception(exc)
        self.discard()

    def _delimited_by_close(self) -> bool:
        """No Content-Length and not chunked: the body runs until the server closes."""
        for name, value in self.raw_headers:
            low = name.lower()
            if low == b"content-length":
                return False
            if low == b"transfer-encoding" and b"chunked" in value.lower():
                return False
        return True

    def _on_timer(self) -> None:
        self.timer = None
        if self.waiter is None:
            return
        now = self.loop.time()
        if now >= self.deadline - _SLACK_S:
            self._fail(TimeoutError("no complete response within the total timeout"))
        elif now >= self.last_read + self.read_s - _SLACK_S:
            self._fail(TimeoutError(f"nothing received for {self.read_s:g} s"))
        else:  # bytes arrived since it was armed: one timer, moved to the next deadline
            self.timer = self.loop.call_at(
                min(self.deadline, self.last_read + self.read_s), self._on_timer
            )


class Transport:
    """HTTP/1.1 keep-alive connection pool to one origin."""

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
        accept_encoding: str = "identity",
    ) -> None:
        scheme = scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise ValueError(f"unsupported scheme {scheme!r}")
        if pool_size < 1 or min(keepalive_s, connect_s, read_s, total_s) <= 0:
            raise ValueError("pool size and timeouts must be positive")
        default_port = DEFAULT_PORTS[scheme]
        self.origin: Origin = (scheme, host, port or default_port)
        self.host = host
        self.port = port or default_port
        self.pool_size = pool_size
        self.keepalive_s = keepalive_s
        self.connect_s = connect_s
        self.read_s = read_s
        self.total_s = total_s
        self.max_response_bytes = max_response_bytes
        """A larger body (declared or received) fails the call and drops the connection."""
        self._ssl: ssl.SSLContext | None = None
        if scheme == "https":
            self._ssl = ssl_context or default_ssl_context()
        self._server_name = server_name or host
        """Sent in SNI and checked against the certificate (the host unless configured)."""
        if not _HOST.fullmatch(host):
            raise ValueError(f"bad host {host!r}")
        authority = f"[{host}]" if ":" in host else host
        if self.port != default_port:
            authority = f"{authority}:{self.port}"
        self._host_line = f"Host: {authority}\r\n"
        self._ua_line = f"User-Agent: {user_agent}\r\n"
        if "\r" in accept_encoding or "\n" in accept_encoding:
            raise ValueError("header injection: CR or LF in Accept-Encoding")
        self._ae_line = f"Accept-Encoding: {accept_encoding}\r\n"
        self._fixed = self._host_line + self._ua_line + self._ae_line
        self._idle: list[_Connection] = []  # oldest first: taken from the end, expired from 0
        self._conns: set[_Connection] = set()
        self._slots = Slots(pool_size)  # connections in use, at most pool_size
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self.connections_made = 0
        """Connections opened so far (tests and diagnostics)."""

    def __repr__(self) -> str:
        scheme, host, port = self.origin
        return (
            f"<Transport {scheme}://{host}:{port} idle={len(self._idle)} busy={self._slots.held}>"
        )

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    # --- the request ----------------------------------------------------------------------

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
        """Send one request and read the whole response.

        ``target`` is the path and query (``/v1/items?a=1``); ``params`` are appended to its
        query. ``timeout_s`` replaces ``total_s`` for this call (and caps the others).
        ``idempotent`` (default: by method) allows the one retry of a stale connection.
        """
        data, is_head, close = self._encode(method, target, params, headers, body)
        retry = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = now + (self.total_s if timeout_s is None else timeout_s)
        connect_by = min(now + self.connect_s, deadline)  # a slot and a connection by then
        if not self._slots.try_take():
            await self._wait_for_slot(connect_by)
            now = loop.time()
        try:
            conn = self._take_idle(now)
            reused = conn is not None
            while True:
                if conn is None:
                    conn = await self._connect(loop, connect_by)
                fut = conn.send(data, deadline, self.read_s, is_head)
                try:
                    response = await fut
                except _NoResponse:
                    conn.discard()
                    if reused and retry:  # closed by the server while idle: once more, fresh
                        reused = False
                        conn = None
                        connect_by = min(loop.time() + self.connect_s, deadline)
                        continue
                    raise ConnectionLost("connection closed before any response") from None
                except BaseException:  # timeout, bad response, cut short, cancelled
                    conn.discard()
                    raise
                if close:  # we said Connection: close
                    conn.discard()
                else:
                    self._put_back(conn)
                return response
        finally:
            self._slots.give_back()

    def _encode(
        self,
        method: str,
        target: str,
        params: Mapping[str, str | int] | None,
        headers: Mapping[str, str] | None,
        body: bytes | str | None,
    ) -> tuple[bytes, bool, bool]:
        """The request as one bytes object; is it HEAD; did the caller say Connection: close?"""
        if method not in _METHODS and not _TOKEN.fullmatch(method):
            raise ValueError(f"bad HTTP method {method!r}")
        if params:
            target = f"{target}{'&' if '?' in target else '?'}{urlencode(params)}"
        if not target.startswith("/") or _UNSAFE_TARGET.search(target):
            target = clean_target(target)
        if headers:
            block = "".join(map("%s: %s\r\n".__mod__, headers.items()))  # no Python frame
            n = len(headers)
            if block.count("\n") != n or block.count("\r") != n or "\x00" in block:
                raise ValueError("header injection: CR, LF or NUL in a header name or value")
            fixed = self._fixed
            close = False
            if not _SPECIAL_HEADERS.isdisjoint(map(str.lower, headers)):
                fixed, close = self._special_headers(headers)
        else:
            block = ""
            fixed = self._fixed
            close = False
        payload: bytes | None
        if body is None:
            payload = None
            length = "Content-Length: 0\r\n" if method in _BODY_METHODS else ""
        else:
            payload = body.encode() if isinstance(body, str) else body
            length = f"Content-Length: {len(payload)}\r\n"
        head = f"{method} {target} HTTP/1.1\r\n{fixed}{block}{length}\r\n".encode()
        return (head + payload if payload else head), method == "HEAD", close

    def _special_headers(self, headers: Mapping[str, str]) -> tuple[str, bool]:
        """The caller set Host, User-Agent, Accept-Encoding or Connection (rare): the caller's
        value replaces ours; Content-Length and Transfer-Encoding are ours alone."""
        ours = {
            "host": self._host_line,
            "user-agent": self._ua_line,
            "accept-encoding": self._ae_line,
        }
        close = False
        for name, value in headers.items():
            low = name.strip().lower()
            if low in ("content-length", "transfer-encoding"):
                raise ValueError(f"{name} is set by the transport from the body")
            if low == "connection" and "close" in value.lower():
                close = True
            ours.pop(low, None)
        return "".join(ours.values()), close

    # --- the pool -------------------------------------------------------------------------

    async def _wait_for_slot(self, connect_by: float) -> None:
        try:
            await self._slots.take(connect_by)
        except TimeoutError:
            raise TimeoutError(
                f"all {self.pool_size} connections busy for the connect timeout"
            ) from None

    def _take_idle(self, now: float) -> _Connection | None:
        idle = self._idle
        keepalive_s = self.keepalive_s
        while idle:
            conn = idle.pop()
            conn.in_pool = False
            if conn.usable(now, keepalive_s):
                return conn
            conn.discard()  # closed by the server, or idle too long
        return None

    def _put_back(self, conn: _Connection) -> None:
        t = conn.transport
        if (
            not conn.reusable
            or conn.closed
            or self._closed
            or t is None
            or t.is_closing()
            or t.get_write_buffer_size()
        ):
            conn.discard()
            return
        conn.idle_since = conn.loop.time()
        conn.in_pool = True
        self._idle.append(conn)
        if self._sweeper is None:
            self._sweeper = conn.loop.call_at(
                self._idle[0].idle_since + self.keepalive_s, self._sweep
            )

    def _sweep(self) -> None:
        """Close the connections idle for ``keepalive_s`` (the oldest are first)."""
        self._sweeper = None
        idle = self._idle
        if not idle:
            return
        loop = idle[0].loop
        limit = loop.time() - self.keepalive_s + _SLACK_S
        n = 0
        while n < len(idle) and idle[n].idle_since <= limit:
            n += 1
        expired = idle[:n]
        del idle[:n]
        for conn in expired:
            conn.in_pool = False
            conn.close()
        if idle:
            self._sweeper = loop.call_at(idle[0].idle_since + self.keepalive_s, self._sweep)

    def _lost(self, conn: _Connection) -> None:
        self._conns.discard(conn)
        if conn.in_pool:
            conn.in_pool = False
            try:
                self._idle.remove(conn)
            except ValueError:
                pass

    async def _connect(self, loop: asyncio.AbstractEventLoop, connect_by: float) -> _Connection:
        if self._closed:
            raise ConnectFailed("transport closed")
        try:
            async with asyncio.timeout_at(connect_by):
                transport, conn = await loop.create_connection(
                    self._new_connection,
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self._server_name if self._ssl is not None else None,
                )
        except TimeoutError:
            raise TimeoutError(
                f"no connection to {self.host}:{self.port} within the connect timeout"
            ) from None
        except OSError as exc:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            raise ConnectFailed(f"{self.host}:{self.port}: {exc}") from exc
        if conn.transport is None:  # in case connection_made() has not run yet
            conn.transport = transport
        if self._closed:
            conn.discard()
            raise ConnectFailed("transport closed")
        self._conns.add(conn)
        self.connections_made += 1
        return conn

    def _new_connection(self) -> _Connection:
        return _Connection(self)

    async def close(self) -> None:
        """Close every connection; calls in flight fail, later calls get ``ConnectFailed``."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.in_pool = False
            conn.close()
        for conn in list(self._conns):
            conn.discard()
        self._conns.clear()
        await asyncio.sleep(0)  # let the transports run their connection_lost


_DECODERS = {b"gzip": 31, b"x-gzip": 31, b"deflate": 15}
"""zlib ``wbits`` per content coding (deflate is the zlib format, RFC 9110 §8.4.1.2)."""


def _decoded(
    coding: bytes, body: bytes, raw_headers: list[tuple[bytes, bytes]], limit: int
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The body decoded from its content coding, at most ``limit`` bytes decoded (a small
    compressed body may inflate to gigabytes); the headers without those of the wire form."""
    wbits = _DECODERS.get(coding)
    if wbits is None:
        raise BadResponse(f"unsupported content-encoding {coding.decode('latin-1')!r}")
    decoder = zlib.decompressobj(wbits)
    try:
        out = decoder.decompress(body, limit + 1)
    except zlib.error:
        if coding != b"deflate":
            raise BadResponse("a corrupt compressed body") from None
        decoder = zlib.decompressobj(-15)  # some servers send raw deflate, no zlib header
        try:
            out = decoder.decompress(body, limit + 1)
        except zlib.error:
            raise BadResponse("a corrupt compressed body") from None
    if len(out) > limit or decoder.unconsumed_tail:
        raise ResponseTooLarge(f"the decoded response body exceeds {limit} bytes")
    if not decoder.eof:
        raise BadResponse("a compressed body cut short")
    kept = [
        (k, v) for k, v in raw_headers if k.lower() not in (b"content-encoding", b"content-length")
    ]
    return out, kept


def check_request(
    method: str,
    target: str,
    params: Mapping[str, str | int] | None,
    headers: Mapping[str, str] | None,
) -> str:
    """The checks of ``Transport._encode`` for another transport: the method a token, no CR,
    LF or NUL in a header, no framing header from the caller; the target with ``params``
    appended and odd characters quoted."""
    if method not in _METHODS and not _TOKEN.fullmatch(method):
        raise ValueError(f"bad HTTP method {method!r}")
    if params:
        target = f"{target}{'&' if '?' in target else '?'}{urlencode(params)}"
    if not target.startswith("/") or _UNSAFE_TARGET.search(target):
        target = clean_target(target)
    for name, value in (headers or {}).items():
        if any(c in name or c in value for c in "\r\n\x00"):
            raise ValueError("header injection: CR, LF or NUL in a header name or value")
        if name.strip().lower() in ("content-length", "transfer-encoding"):
            raise ValueError(f"{name} is set by the transport from the body")
    return target


def clean_target(target: str) -> str:
    """Origin-form of an odd target: leading ``/``, no fragment, unsafe characters quoted."""
    target = target.split("#", 1)[0]
    if not target.startswith("/"):
        target = "/" + target
    return quote(target, safe=_TARGET_SAFE)
