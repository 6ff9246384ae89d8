"""The request envelope: every policy that observes or decorates a request, in one ASGI layer.

Trusted-proxy addresses, the request id, the server span, metrics, the access log and the
security headers never refuse a request; each used to be a middleware of its own, each
scanning the request headers, wrapping ``send`` and reading the route template and the
principal again. Here the headers are scanned once, ``send`` is wrapped once, and the route
and principal are read once when the response is complete (docs/performance.md: the six
layers cost ~38 µs a request, the envelope ~half of that).

It is also the server-error layer (Starlette's ``ServerErrorMiddleware``, one layer and one
``send`` wrapper less): an exception no handler inside answered becomes the configured 500
response, if no response has started, and is re-raised for the server to log, as Starlette
does. So a crash's 500 still gets its request id, trace id and security headers, and is traced,
counted and logged with its final status. Policies that can refuse (body limit,
authentication, rate limit) stay middleware of their own inside it, each with its own
problem+json answer. The response status it has seen go out is in ``scope[RESPONSE_STATUS_KEY]``
(0 until the response starts), for the error handlers inside (``gateway.errors``) to know
whether an answer can still be sent without wrapping ``send`` once more.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from starlette._utils import is_async_callable  # Starlette's own test (partials, __call__)
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.policies.access_log import AccessLog
from gateway.policies.edge import SecurityHeaders, TrustedProxies
from gateway.policies.metrics import GatewayMetrics, count_request
from gateway.policies.routing import route_template
from gateway.policies.scope_keys import RESPONSE_HEADERS_KEY, RESPONSE_STATUS_KEY
from gateway.policies.tracing import TRACE_ID_HEADER, TRACE_ID_KEY, ServerSpans
from gateway.request_id import HEADER as REQUEST_ID_HEADER
from gateway.request_id import SCOPE_KEY as REQUEST_ID_KEY
from gateway.request_id import request_id

ServerErrorHandler = Callable[[Request, Exception], Awaitable[Response] | Response]


class RequestEnvelope:
    """Pure ASGI; outermost. Each part is optional, as configured."""

    def __init__(
        self,
        app: ASGIApp,
        spans: ServerSpans,
        *,
        metrics: GatewayMetrics | None = None,
        access_log: AccessLog | None = None,
        security_headers: SecurityHeaders | None = None,
        trusted_proxies: TrustedProxies | None = None,
        server_error: ServerErrorHandler | None = None,
    ) -> None:
        self.app = app
        self.server_error = server_error
        self.spans = spans
        self.metrics = metrics
        self.access_log = access_log
        self.security = security_headers
        self.proxies = trusted_proxies if trusted_proxies and trusted_proxies.networks else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.proxies is not None:
            self.proxies.apply(scope)
        offered: bytes | None = None
        traceparent: str | None = None
        tracestate: str | None = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                if offered is None:
                    offered = value
            elif name == b"traceparent":
                text = value.decode("latin-1")
                traceparent = text if traceparent is None else f"{traceparent},{text}"
            elif name == b"tracestate":
                text = value.decode("latin-1")
                tracestate = text if tracestate is None else f"{tracestate},{text}"
        span, trace_id = self.spans.start(scope, traceparent, tracestate)
        rid = request_id(offered)
        rid_text = rid.decode()
        scope[REQUEST_ID_KEY] = rid_text
        scope[TRACE_ID_KEY] = trace_id.decode() if trace_id else rid_text
        added = (
            [(REQUEST_ID_HEADER, rid), (TRACE_ID_HEADER, trace_id)]
            if trace_id
            else [(REQUEST_ID_HEADER, rid)]
        )
        security = self.security
        docs = security is not None and scope["path"].startswith("/docs")
        status = scope[RESPONSE_STATUS_KEY] = [0]
        policies: list[tuple[bytes, bytes]] = []
        scope[RESPONSE_HEADERS_KEY] = policies
        sent = 0

        async def send_wrapped(message: Message) -> None:
            nonlocal sent
            kind = message["type"]
            if kind == "http.response.start":
                status[0] = message["status"]
                headers = message.get("headers", ())
                if not isinstance(headers, list | tuple):  # an iterable is read only once
                    headers = list(headers)
                if security is not None:
                    message["headers"] = [
                        *headers,
                        *policies,
                        *added,
                        *security.missing(headers, docs),
                    ]
                else:
                    message["headers"] = [*headers, *policies, *added]
            elif kind == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        metrics = self.metrics
        access_log = self.access_log
        if access_log is not None and not access_log.enabled():
            access_log = None
        if metrics is not None:
            metrics.started += 1
        token = self.spans.attach(span)
        error: BaseException | None = None
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_wrapped)
        except Exception as exc:
            error = exc
            await self._answer_crash(scope, receive, send_wrapped, exc, status[0] != 0)
            raise
        except BaseException as exc:  # cancelled: no answer to give
            error = exc
            raise
        finally:
            code = status[0] or 500
            elapsed = time.perf_counter() - started
            self.spans.end(span, token, scope, code, error)
            if metrics is not None or access_log is not None:
                route = route_template(scope)
                if metrics is not None:
                    metrics.finished += 1
                    count_request(metrics, scope, route, code, elapsed)
                if access_log is not None:
                    access_log.write(scope, route, code, elapsed * 1000.0, sent)

    async def _answer_crash(
        self, scope: Scope, receive: Receive, send: Send, exc: Exception, started: bool
    ) -> None:
        """As ``ServerErrorMiddleware``: the 500 handler always runs (it logs); its response
        goes out only if none has started."""
        handler = self.server_error
        request = Request(scope)
        response: Response
        if handler is None:
            response = PlainTextResponse("Internal Server Error", status_code=500)
        elif is_async_callable(handler):
            response = await handler(request, exc)
        else:
            response = await run_in_threadpool(handler, request, exc)  # type: ignore[arg-type]
        if not started:
            await response(scope, receive, send)
