"""Connection limits in the HTTP protocol: head size, head and body timeouts, connection cap.

uvicorn's HTTP/1.1 protocols (httptools and h11) read a request head of any size, wait for it
and for a body forever, and accept any number of connections: one slow or hostile client can
hold a worker's memory and sockets. ``guarded_protocol`` subclasses the chosen one, through its
public protocol methods only (``connection_made``, ``data_received``, ``connection_lost``), and
holds every connection to ``ServerLimits``:

- a request head (request line and headers) longer than ``max_header_bytes``, or with a line
  longer than ``max_header_line_bytes``, is answered 431 and the connection closed, before the
  parser sees the bytes past the limit;
- a connection that has not sent a complete head ``header_timeout_s`` after it opened (or after
  a request's first byte) is closed, with a 408 if it sent part of one;
- a request body arriving slower on average than ``body_min_bytes_per_s`` (after
  ``body_grace_s``) is cut off by closing the connection;
- above ``max_connections`` open connections in the worker, a new one is answered 503 and
  closed while the open ones carry on.

The idle time between keep-alive requests is uvicorn's own ``timeout_keep_alive``.

Per request the cost is a few comparisons: the head is scanned only when a read would take it
past a limit, and a timer is armed only while a head or a body is incomplete after a read.
"""

from __future__ import annotations

import asyncio
import importlib.util
from http import HTTPStatus
from typing import Any, ClassVar

import orjson
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..problems import PROBLEM_TYPES, Slug
from .config import ServerLimits

_HEAD_END = b"\r\n\r\n"
_LINGER_S = 1.0
"""After a 431, how long the rest of the client's bytes are read and dropped before closing, so
that the answer is not lost to a reset (closing with unread bytes sends a TCP RST)."""
_LINGER_BYTES = 1 << 20


def _problem(slug: Slug, detail: str, extra_headers: bytes = b"") -> bytes:
    """A whole problem+json answer, written by the protocol before any app sees the request."""
    kind = PROBLEM_TYPES[slug]
    status = kind.status
    assert status is not None
    body = orjson.dumps({"type": kind.uri, "title": kind.title, "status": status, "detail": detail})
    return b"".join(
        [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode(),
            b"content-type: application/problem+json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"x-content-type-options: nosniff\r\n",
            extra_headers,
            b"connection: close\r\n\r\n",
            body,
        ]
    )


def _longest_line(carried: int, data: bytes) -> int:
    """The longest line in ``data``, the first continuing one ``carried`` bytes long."""
    lines = data.split(b"\n")
    longest = carried + len(lines[0])
    for line in lines[1:]:
        longest = max(longest, len(line))
    return longest


class _Guard:
    """The limits, mixed in before uvicorn's protocol class (see ``guarded_protocol``)."""

    limits: ClassVar[ServerLimits]
    max_head: ClassVar[int]
    max_line: ClassVar[int]
    max_connections: ClassVar[int]
    too_large: ClassVar[bytes]
    timed_out: ClassVar[bytes]
    overloaded: ClassVar[bytes]

    # uvicorn's attributes this class reads (set by the protocol class it is mixed into)
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    connections: set[Any]
    cycle: Any

    def _guard_init(self) -> None:
        self._guard_head_bytes = 0  # bytes of an incomplete head read so far
        self._guard_line_bytes = 0  # bytes of its last, unfinished line
        self._guard_tail = b""  # its last bytes: a head end may straddle two reads
        self._guard_head_timer: asyncio.TimerHandle | None = None
        self._guard_body_timer: asyncio.TimerHandle | None = None
        self._guard_body_start = 0.0
        self._guard_body_bytes = 0
        self._guard_refused = False
        self._guard_dropped = 0

    # --- protocol methods, wrapping uvicorn's ---------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._guard_init()
        super().connection_made(transport)  # type: ignore[misc]
        if len(self.connections) > self.max_connections:
            self._refuse(self.overloaded, linger=False)
            return
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if self._guard_refused:  # answered already: drop what the client still sends
            self._guard_dropped += len(data)
            if self._guard_dropped > _LINGER_BYTES:
                self.transport.close()
            return
        cycle = self.cycle
        in_head = cycle is None or not cycle.more_body
        if in_head:
            if (
                self._guard_head_bytes + len(data) > self.max_head
                or self._guard_line_bytes + len(data) > self.max_line
            ) and self._head_too_large(data):
                self._refuse(self.too_large, linger=True)
                return
        elif self._guard_body_timer is not None:
            self._guard_body_bytes += len(data)
        super().data_received(data)  # type: ignore[misc]
        if self.transport.is_closing():
            return
        now = self.cycle
        if in_head:
            if now is cycle:  # no new head completed: it continues in a later read
                self._head_continues(data)
                return
            self._guard_head_bytes = self._guard_line_bytes = 0
            self._guard_tail = b""
            if self._guard_head_timer is not None:
                self._guard_head_timer.cancel()
                self._guard_head_timer = None
        if now is not None and now.more_body and not now.response_complete:
            if self._guard_body_timer is None and self.limits.body_min_bytes_per_s:
                self._guard_body_start = self.loop.time()
                self._guard_body_bytes = 0
                self._arm_body_timer()
        elif self._guard_body_timer is not None:
            self._guard_body_timer.cancel()
            self._guard_body_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._guard_head_timer, self._guard_body_timer):
            if timer is not None:
                timer.cancel()
        self._guard_head_timer = self._guard_body_timer = None
        super().connection_lost(exc)  # type: ignore[misc]

    # --- the request head -------------------------------------------------------------------

    def _head_too_large(self, data: bytes) -> bool:
        """Would this read take the head past a limit? (Only asked when it might.)"""
        end = data.find(_HEAD_END)
        if end < 0 and self._guard_tail:  # the end may straddle the previous read and this one
            joined = (self._guard_tail + data[:3]).find(_HEAD_END)
            if joined >= 0:
                end = joined - len(self._guard_tail)
        head = data if end < 0 else data[: max(end, 0)]
        if self._guard_head_bytes + len(head) > self.max_head:
            return True
        return _longest_line(self._guard_line_bytes, head) > self.max_line

    def _head_continues(self, data: bytes) -> None:
        self._guard_head_bytes += len(data)
        newline = data.rfind(b"\n")
        if newline < 0:
            self._guard_line_bytes += len(data)
        else:
            self._guard_line_bytes = len(data) - newline - 1
        self._guard_tail = (self._guard_tail + data)[-3:]
        if self._guard_head_timer is None:
            self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._guard_head_timer = self.loop.call_later(
            self.limits.header_timeout_s, self._head_timed_out
        )

    def _head_timed_out(self) -> None:
        self._guard_head_timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if not cycle.more_body:  # a pipelined head waits for the response in progress
                self._arm_head_timer()
            return
        if self._guard_head_bytes:
            self._refuse(self.timed_out, linger=False)
        else:
            self.transport.close()

    # --- the request body -------------------------------------------------------------------

    def _arm_body_timer(self) -> None:
        delay = min(1.0, self.limits.body_grace_s)
        self._guard_body_timer = self.loop.call_later(delay, self._check_body_rate)

    def _check_body_rate(self) -> None:
        self._guard_body_timer = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None or not cycle.more_body:
            return
        if cycle.response_complete:
            return
        now = self.loop.time()
        if self.transport.is_reading() and not self._awaits_continue():
            elapsed = now - self._guard_body_start
            floor = self.limits.body_min_bytes_per_s * elapsed
            if elapsed >= self.limits.body_grace_s and self._guard_body_bytes < floor:
                self.transport.close()  # the app's receive() sees a disconnect
                return
        else:  # the server paused reading (the app is behind), or the client waits for our
            # "100 Continue" (sent when the app first reads): the client is not to blame
            self._guard_body_start = now
            self._guard_body_bytes = 0
        self._arm_body_timer()

    def _awaits_continue(self) -> bool:
        """Does the client hold its body back until the server answers "100 Continue"?"""
        raise NotImplementedError

    # --- refusing ---------------------------------------------------------------------------

    def _refuse(self, answer: bytes, *, linger: bool) -> None:
        """Answer and close; with ``linger``, read and drop the client's bytes for a moment
        first, so that the answer reaches a client still sending."""
        self._guard_refused = True
        for timer in (self._guard_head_timer, self._guard_body_timer):
            if timer is not None:
                timer.cancel()
        self._guard_head_timer = self._guard_body_timer = None
        transport = self.transport
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            transport.close()  # a response is being written: no answer may cut into it
            return
        transport.write(answer)
        if linger and transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(_LINGER_S, transport.close)
        else:
            transport.close()


class _GuardedHttpTools(_Guard, HttpToolsProtocol):
    def _awaits_continue(self) -> bool:
        return bool(self.cycle.waiting_for_100_continue)


class _GuardedH11(_Guard, H11Protocol):
    def _awaits_continue(self) -> bool:
        return bool(self.conn.client_is_waiting_for_100_continue)


def guarded_protocol(limits: ServerLimits) -> type[asyncio.Protocol]:
    """uvicorn's protocol class for ``limits.http``, held to ``limits`` (pass as ``http=``)."""
    http = limits.http
    if http == "auto":
        http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    base: type[_Guard] = _GuardedHttpTools if http == "httptools" else _GuardedH11
    attrs: dict[str, Any] = {
        "limits": limits,
        "max_head": limits.max_header_bytes,
        "max_line": limits.max_header_line_bytes,
        "max_connections": limits.max_connections,
        "too_large": _problem(
            "request-head-too-large",
            f"the request head is limited to {limits.max_header_bytes} bytes and each of its "
            f"lines to {limits.max_header_line_bytes}",
        ),
        "timed_out": _problem(
            "request-timeout",
            f"the request head did not arrive within {limits.header_timeout_s:g} s",
        ),
        "overloaded": _problem(
            "too-many-connections",
            "too many open connections; retry shortly",
            b"retry-after: 1\r\n",
        ),
    }
    cls = type(base.__name__.lstrip("_"), (base,), attrs)
    return cls
