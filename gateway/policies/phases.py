"""The three phases of a request in the envelope, and the one object each phase is given.

A policy of the envelope (``gateway.policies.envelope``) is an :class:`EnvelopePolicy` that
takes part in any of:

- **request start** (``request_start(exchange)``): before the app runs. The request head is
  already read (``exchange.head``, one scan of the headers for every policy). A policy may
  rewrite the scope (trusted proxies), set a declared scope key (request id, trace id) and
  add response headers (``exchange.added.append``).
- **response start** (``response_start(exchange, headers)``): when the app sends
  ``http.response.start``; ``headers`` are the app's own. The policy returns the headers to
  add (security headers), or ``()``.
- **completion** (``complete(exchange)``): once the app returned or raised (and, if it raised
  before a response started, the envelope sent the server-error answer), with
  ``exchange.status`` (0: no response started), ``exchange.reported_status``,
  ``exchange.error``, ``exchange.elapsed_s``, ``exchange.sent`` (body bytes) and
  ``exchange.route`` (the route template, read once).

Policies run in the order the envelope is given them, and only in the phases they override.
:class:`Exchange` is made once per request; its ``send`` is the request's only ``send``
wrapper.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from starlette.types import Message, Scope, Send

from gateway.policies.routing import route_template
from gateway.policies.scope_keys import EXCHANGE_KEY, RESPONSE_HEADERS_KEY
from gateway.request_id import HEADER

Header = tuple[bytes, bytes]

REQUEST_ID_HEADER = HEADER
"""The request-id header, read at request start and echoed in the response."""


class RequestHead:
    """What the envelope's policies read from the request headers, found in one scan.

    Repeated ``traceparent``/``tracestate`` lines are joined with commas (a list header);
    of repeated ``X-Request-ID``, ``Host`` and ``User-Agent`` the first counts.
    """

    __slots__ = ("host", "request_id", "traceparent", "tracestate", "user_agent")

    def __init__(self, headers: Sequence[Header]) -> None:
        request_id = traceparent = tracestate = host = user_agent = None
        for name, value in headers:
            if name not in _READ:
                continue
            if name == REQUEST_ID_HEADER:
                if request_id is None:
                    request_id = value
            elif name == b"traceparent":
                text = value.decode("latin-1")
                traceparent = text if traceparent is None else f"{traceparent},{text}"
            elif name == b"tracestate":
                text = value.decode("latin-1")
                tracestate = text if tracestate is None else f"{tracestate},{text}"
            elif name == b"host":
                if host is None:
                    host = value
            elif name == b"user-agent":
                if user_agent is None:
                    user_agent = value
        self.request_id: bytes | None = request_id
        self.traceparent: str | None = traceparent
        self.tracestate: str | None = tracestate
        self.host: bytes | None = host
        self.user_agent: bytes | None = user_agent


_READ = frozenset({REQUEST_ID_HEADER, b"traceparent", b"tracestate", b"host", b"user-agent"})


class Exchange:
    """One request and its response, as the envelope's phases see them.

    Request start: ``head``, the request head; ``added``, headers the response will carry
    besides its own (the list in ``scope[RESPONSE_HEADERS_KEY]``: append to it);
    ``request_id``, set by the request-id policy; ``span`` and ``context_token``, kept by the
    tracing policy. Response start: ``status``. Completion: ``status`` (0: no response
    started), ``reported_status`` (the status, or 500 when none started), ``route`` (the
    route template), ``error`` (what the app raised), ``elapsed_s`` (the app's wall time),
    ``sent`` (body bytes sent).
    """

    __slots__ = (
        "_on_start",
        "_send",
        "added",
        "context_token",
        "elapsed_s",
        "error",
        "head",
        "reported_status",
        "request_id",
        "route",
        "scope",
        "sent",
        "span",
        "status",
    )

    def __init__(
        self, scope: Scope, send: Send, on_response_start: Sequence[ResponseStart] = ()
    ) -> None:
        self.scope = scope
        self.head = RequestHead(scope["headers"])
        added: list[Header] = []
        scope[RESPONSE_HEADERS_KEY] = added
        scope[EXCHANGE_KEY] = self  # the error layer reads whether the response started
        # (until completed(): see there)
        self.added = added
        self.status = 0
        self.sent = 0
        self.request_id = ""
        # set by their phases: span and context_token (tracing), the rest by completed()
        self.span: Any
        self.context_token: object
        self.error: BaseException | None
        self.elapsed_s: float
        self.route: str
        self.reported_status: int
        self._send = send
        self._on_start = on_response_start

    def completed(self, elapsed_s: float, error: BaseException | None) -> None:
        """What the completion phase reads, set once the app returned or raised (routing
        fills the scope as it goes, so the route template is read after)."""
        # the scope holds the exchange and the exchange the scope: a reference cycle, which
        # would leave the request's objects to the cyclic collector (longer, rarer pauses)
        # instead of freeing them as the request ends
        self.scope.pop(EXCHANGE_KEY, None)
        self.elapsed_s = elapsed_s
        self.error = error
        self.reported_status = self.status or 500
        self.route = route_template(self.scope)

    async def send(self, message: Message) -> None:
        """The app's ``send``: the response-start phase, then the server's ``send``."""
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            headers = message.get("headers", ())
            if not isinstance(headers, list | tuple):  # an iterable can be read only once
                headers = list(headers)
            out = [*headers, *self.added]
            for response_start in self._on_start:
                out += response_start(self, headers)
            message["headers"] = out
        elif kind == "http.response.body":
            self.sent += len(message.get("body", b""))
        await self._send(message)


ResponseStart = Callable[[Exchange, Sequence[Header]], Sequence[Header]]
"""A policy's response-start phase, as the exchange calls it."""


class EnvelopePolicy:
    """A policy of the envelope: override the phases it takes part in (the others are
    skipped, not called)."""

    def request_start(self, exchange: Exchange) -> None:
        """Before the app runs."""

    def response_start(self, exchange: Exchange, headers: Sequence[Header]) -> Sequence[Header]:
        """When the response starts: the headers to add to the app's own ``headers``."""
        return ()

    def complete(self, exchange: Exchange) -> None:
        """After the app returned or raised (``exchange.error``)."""


def takes_part(policy: EnvelopePolicy, phase: str) -> bool:
    """Whether ``policy`` overrides ``phase`` (``request_start``, ``response_start`` or
    ``complete``)."""
    return getattr(type(policy), phase) is not getattr(EnvelopePolicy, phase)
