"""The request envelope: every policy that observes or decorates a request, in one ASGI layer.

Trusted-proxy addresses, the request id, the server span, metrics, the access log and the
security headers never refuse a request. Each is an :class:`~gateway.policies.phases.
EnvelopePolicy` taking part in the phases of ``gateway.policies.phases`` (request start,
response start, completion); the envelope reads the request headers once for all of them,
wraps ``send`` once (:class:`~gateway.policies.phases.Exchange`), and runs each phase's
policies in order:

=================  ==================  ==================  ====================
policy             request start       response start      completion
=================  ==================  ==================  ====================
trusted proxies    client and scheme
request id         id, X-Request-ID
server span        span, trace id                          route, status, end
metrics            in flight                               count, latency
access log                                                 one line
security headers                       the missing ones
=================  ==================  ==================  ====================

Headers a policy inside the envelope adds without a ``send`` wrapper of its own (the rate
limit's) go into ``scope[RESPONSE_HEADERS_KEY]`` and out with the response's start.

It is also the server-error layer, in place of Starlette's ``ServerErrorMiddleware`` (one
layer, one coroutine frame and one ``send`` wrapper less on every request): when the app
raises, the app's 500 handler (``exception_handlers[Exception]``) is called, as Starlette
does, and its answer sent if no response has started; the exception then reaches the server,
re-raised. So a crash's 500 gets the request id, trace id and security headers, and is traced,
counted and logged with its final status. Policies that can refuse (body limit,
authentication, rate limit) are middleware of their own inside, each with its own
problem+json answer; Starlette's ``ExceptionMiddleware`` inside them applies the other
handlers.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.policies.access_log import AccessLog
from gateway.policies.metrics import GatewayMetrics, count_request
from gateway.policies.phases import REQUEST_ID_HEADER, EnvelopePolicy, Exchange, takes_part
from gateway.policies.scope_keys import REQUEST_ID_KEY
from gateway.request_id import request_id

ServerErrorHandler = Callable[[Request, Exception], Awaitable[Response]]
"""The app's 500 handler (Starlette's ``exception_handlers[Exception]``), a coroutine function."""


class RequestIds(EnvelopePolicy):
    """Request start: the caller's well-formed ``X-Request-ID``, else a fresh one, in
    ``scope[REQUEST_ID_KEY]`` and echoed in the response."""

    def request_start(self, exchange: Exchange) -> None:
        rid = request_id(exchange.head.request_id)
        exchange.request_id = exchange.scope[REQUEST_ID_KEY] = rid.decode()
        exchange.added.append((REQUEST_ID_HEADER, rid))


class RequestMetrics(EnvelopePolicy):
    """Request start: one more in flight. Completion: one fewer, and the request counted by
    route template, method, status and client, with its latency."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    def request_start(self, exchange: Exchange) -> None:
        self.metrics.started += 1

    def complete(self, exchange: Exchange) -> None:
        metrics = self.metrics
        metrics.finished += 1
        count_request(
            metrics, exchange.scope, exchange.route, exchange.reported_status, exchange.elapsed_s
        )


class AccessLines(EnvelopePolicy):
    """Completion: the request's access line, when the access logger is on at info."""

    def __init__(self, access_log: AccessLog) -> None:
        self.access_log = access_log

    def complete(self, exchange: Exchange) -> None:
        log = self.access_log
        if log.enabled():
            log.write(
                exchange.scope,
                exchange.route,
                exchange.reported_status,
                exchange.elapsed_s * 1000.0,
                exchange.sent,
            )


class RequestEnvelope:
    """Pure ASGI; outermost. ``policies`` run in their order in each phase they take part in;
    ``server_error`` answers what the app raised (a plain 500 without one)."""

    def __init__(
        self,
        app: ASGIApp,
        policies: Sequence[EnvelopePolicy],
        server_error: ServerErrorHandler | None = None,
    ) -> None:
        self.app = app
        self.server_error = server_error
        self.policies = tuple(policies)
        self._request_start: tuple[Callable[[Exchange], None], ...] = tuple(
            p.request_start for p in self.policies if takes_part(p, "request_start")
        )
        self._response_start = tuple(
            p.response_start for p in self.policies if takes_part(p, "response_start")
        )
        self._complete: tuple[Callable[[Exchange], None], ...] = tuple(
            p.complete for p in self.policies if takes_part(p, "complete")
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = Exchange(scope, send, self._response_start)
        for request_start in self._request_start:
            request_start(exchange)
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            await self.app(scope, receive, exchange.send)
        except Exception as exc:
            error = exc
            await self.answer_crash(exchange, receive, exc)
            raise
        except BaseException as exc:  # cancelled: no answer to give
            error = exc
            raise
        finally:
            exchange.completed(time.perf_counter() - started, error)
            for complete in self._complete:
                complete(exchange)

    async def answer_crash(self, exchange: Exchange, receive: Receive, exc: Exception) -> None:
        """As Starlette's ``ServerErrorMiddleware``: the 500 handler always runs (it logs); its
        answer goes out only if no response has started."""
        scope = exchange.scope
        handler = self.server_error
        response = (
            PlainTextResponse("Internal Server Error", status_code=500)
            if handler is None
            else await handler(Request(scope), exc)
        )
        if not exchange.status:
            # the server drops the connection once the exception reaches it: say so, so a
            # client does not send its next request on a connection that is going away
            response.headers["connection"] = "close"
            await response(scope, receive, exchange.send)
