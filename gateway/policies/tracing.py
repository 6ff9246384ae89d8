"""Tracing policy: one server span per request, named by route template, W3C context in and out.

Our own, a policy of the request envelope (``gateway.policies.envelope``), rather than the
contrib ``OpenTelemetryMiddleware`` (which names spans by raw path, records receive/send spans
unless told not to, and records its own metrics) or Starlette's experimental one (which names
by template but neither exposes the trace id to the app nor returns it). The span starts when
the request starts, so the trace id is in ``scope[TRACE_ID_KEY]`` for problem bodies and logs;
it is returned in ``X-Trace-Id``. Its attributes follow the OpenTelemetry HTTP server semantic
conventions (stable): method (``_OTHER`` for an unknown one), path, query (scrubbed), scheme,
server address and port, client address (after the trusted-proxy rule), user agent, protocol
version at the start, for samplers; route, status and ``error.type`` when it completes, when
it is renamed ``{method} {route}``. The authenticated client id is ``enduser.id``. Backend
calls get one client span per attempt from the client base, tagged with backend, attempt and
breaker state (see ``system_apis.observe``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Literal
from urllib.parse import unquote_plus

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.semconv.attributes.client_attributes import CLIENT_ADDRESS
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_REQUEST_METHOD_ORIGINAL,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
    HttpRequestMethodValues,
)
from opentelemetry.semconv.attributes.network_attributes import NETWORK_PROTOCOL_VERSION
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.semconv.attributes.url_attributes import URL_PATH, URL_QUERY, URL_SCHEME
from opentelemetry.semconv.attributes.user_agent_attributes import USER_AGENT_ORIGINAL
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import Scope

from gateway.policies.phases import EnvelopePolicy, Exchange
from gateway.policies.redaction import redact_text
from gateway.policies.routing import UNMATCHED
from gateway.policies.scope_keys import TRACE_ID_KEY
from gateway.principal import principal_of
from system_apis import observe

TRACE_ID_HEADER = b"x-trace-id"
"""Response header carrying the 32-hex trace id (the same value as ``trace_id`` in errors)."""

_W3C = TraceContextTextMapPropagator()
"""Only W3C trace context is accepted from callers: their baggage is not forwarded inward."""


class TracingConfig(BaseModel):
    """How spans are sampled and where they go."""

    model_config = ConfigDict(extra="forbid")

    exporter: Literal["none", "console", "otlp-http", "otlp-grpc"] = Field(
        "none",
        description="none keeps trace ids and propagation but records nothing (cheapest).",
    )
    endpoint: str | None = Field(
        None, description="OTLP endpoint; default from OTEL_EXPORTER_OTLP_* or the exporter's."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="OTLP headers (auth).")
    timeout_s: float = Field(10.0, gt=0, description="OTLP export timeout.")
    sample_ratio: float = Field(
        1.0, ge=0.0, le=1.0, description="Parent-based: a caller's sampled flag wins."
    )
    service_name: str = "trellis"


def _exporter(config: TracingConfig) -> SpanExporter | None:
    if config.exporter == "none":
        return None
    if config.exporter == "console":
        return ConsoleSpanExporter()
    kwargs: dict[str, Any] = {"timeout": config.timeout_s}
    if config.headers:
        kwargs["headers"] = dict(config.headers)
    if config.endpoint:
        kwargs["endpoint"] = config.endpoint
    if config.exporter == "otlp-http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(**kwargs)
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )
    except ImportError as exc:  # grpcio is an optional, heavy dependency
        raise RuntimeError(
            "tracing.exporter otlp-grpc needs opentelemetry-exporter-otlp-proto-grpc==1.45.1"
        ) from exc
    return GrpcSpanExporter(**kwargs)


def build_tracer_provider(config: TracingConfig, *, record: bool = False) -> TracerProvider:
    """A provider from config: parent-based ratio sampler, batch export off the event loop.

    With no exporter the sampler is always-off: spans cost almost nothing, yet each request
    still gets a trace id and backends still receive ``traceparent`` (flag not sampled).
    ``record`` samples by ratio even without an exporter, for an in-process span processor
    (the console's recent-span ring).
    """
    exporter = _exporter(config)
    ratio = ParentBased(TraceIdRatioBased(config.sample_ratio))
    sampler = ALWAYS_OFF if exporter is None and not record else ratio
    provider = TracerProvider(
        sampler=sampler, resource=Resource.create({"service.name": config.service_name})
    )
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def instrument_backend_calls(provider: trace.TracerProvider) -> None:
    """Backend client spans come from ``system_apis.observe.attempt`` on this provider: one
    span per attempt, made by the client base, which injects ``traceparent`` itself (no HTTP
    client instrumentation: docs/decisions.md, "Tracing")."""
    observe.set_tracer_provider(provider)


def uninstall_tracer_provider(provider: trace.TracerProvider) -> None:
    """Undo ``install_tracer_provider`` if ``provider`` is still the one installed (the
    global provider, settable once, stays)."""
    if observe.installed_provider() is provider:
        observe.set_tracer_provider(None)


def install_tracer_provider(provider: trace.TracerProvider, *, make_global: bool) -> None:
    """Use ``provider`` for backend client spans and ``step()`` spans.

    ``make_global`` also sets the process-wide provider, which OpenTelemetry allows only once
    per process; it is skipped when one is already set (tests install theirs first).
    """
    instrument_backend_calls(provider)
    observe.set_tracer_provider(provider)
    if make_global and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)


KNOWN_METHODS_ENV = "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS"
"""Overrides the known methods (comma-separated, case-sensitive), as the conventions ask."""

REQUEST_ID_ATTRIBUTE = "trellis.request.id"
"""Server-span attribute holding the request's ``X-Request-ID``."""

ENDUSER_ID = "enduser.id"
"""The authenticated client id (an attribute still in development in the conventions, so the
semantic-conventions package has it only in a private module)."""

SENSITIVE_QUERY_KEYS = frozenset(
    {"X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "sig", "X-Goog-Signature"}
)
"""Query parameters whose value ``url.query`` replaces by ``REDACTED`` (the conventions' list)."""

_DEFAULT_PORTS = {"http": 80, "https": 443}


def known_methods(environ: dict[str, str] | os._Environ[str] = os.environ) -> frozenset[str]:
    """The HTTP methods named as they are in ``http.request.method``; others are ``_OTHER``:
    RFC 9110's and PATCH, unless ``OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS`` lists others."""
    override = environ.get(KNOWN_METHODS_ENV)
    if override is not None:
        return frozenset(m.strip() for m in override.split(",") if m.strip())
    other = HttpRequestMethodValues.OTHER.value
    return frozenset(m.value for m in HttpRequestMethodValues if m.value != other)


def scrubbed_query(raw: bytes) -> str:
    """``url.query`` of a query string: the conventions' signature parameters as ``REDACTED``,
    and, when its decoded text holds anything the log redaction catches (an email, a token, a
    ``password=``), that decoded text redacted instead of the raw string."""
    text = raw.decode("latin-1")
    if any(key in text for key in SENSITIVE_QUERY_KEYS):
        pairs = text.split("&")
        for i, pair in enumerate(pairs):
            key, sep, _ = pair.partition("=")
            if sep and unquote_plus(key) in SENSITIVE_QUERY_KEYS:
                pairs[i] = f"{key}=REDACTED"
        text = "&".join(pairs)
    decoded = unquote_plus(text)
    cleaned = redact_text(decoded)
    return text if cleaned == decoded else cleaned


def server_address(host: bytes | None, scope: Scope) -> tuple[str, int] | None:
    """``server.address`` and ``server.port``: from the ``Host`` header (the port, when it has
    none, the scheme's), else the address the server listens on."""
    if host:
        text = host.decode("latin-1")
        if text.startswith("["):  # an IPv6 literal
            end = text.find("]")
            name, rest = text[1:end], text[end + 1 :]
            port = rest[1:] if rest.startswith(":") else ""
        else:
            name, _, port = text.partition(":")
        if port.isdigit():
            return name, int(port)
        return name, _DEFAULT_PORTS.get(scope.get("scheme", "http"), 80)
    server = scope.get("server")
    if server and server[0] is not None:
        return str(server[0]), int(server[1] or _DEFAULT_PORTS.get(scope.get("scheme", ""), 80))
    return None


def error_type(error: BaseException) -> str:
    """``error.type`` of an exception: its class's canonical name (module and qualified name;
    a builtin's name alone)."""
    cls = type(error)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


class ServerSpans(EnvelopePolicy):
    """The server span of each request: a policy of the request envelope.

    Request start: the caller's W3C context is extracted, the span started (with the
    attributes the conventions ask for at creation, so samplers see them) and made current
    for the app; its trace id goes to ``scope[TRACE_ID_KEY]`` and ``X-Trace-Id``.
    Completion: the context detached, the span named and tagged with route, status and
    error, and ended.

    With the always-off sampler (no exporter: the default) nothing is recorded, so the span is
    made here as the SDK makes it (``tests/observability/test_semconv.py`` compares the two) —
    a non-recording span with a fresh span id, the caller's trace id, trace state and
    random-id flag when a valid ``traceparent`` came, else a fresh trace id (flagged random, as
    the SDK does), never the sampled flag — without the SDK's sampler call and without
    building attributes nobody reads. Any other sampler goes through ``start_span``.
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        *,
        methods: Iterable[str] | None = None,
    ) -> None:
        self.tracer = trace.get_tracer("trellis.gateway", tracer_provider=tracer_provider)
        provider = tracer_provider or trace.get_tracer_provider()
        self._ids = getattr(provider, "id_generator", None)
        self.records_nothing = (
            isinstance(provider, TracerProvider)
            and provider.sampler is ALWAYS_OFF
            and self._ids is not None
        )
        self.methods = frozenset(methods) if methods is not None else known_methods()

    def request_start(self, exchange: Exchange) -> None:
        head = exchange.head
        parent = None
        if head.traceparent is not None:
            carrier = {"traceparent": head.traceparent}
            if head.tracestate is not None:
                carrier["tracestate"] = head.tracestate
            parent = _W3C.extract(carrier)
        span = self._unsampled(parent) if self.records_nothing else self._started(exchange, parent)
        span_context = span.get_span_context()
        if span_context.is_valid:
            trace_id = b"%032x" % span_context.trace_id
            exchange.scope[TRACE_ID_KEY] = trace_id.decode()
            exchange.added.append((TRACE_ID_HEADER, trace_id))
        else:
            exchange.scope[TRACE_ID_KEY] = exchange.request_id
        exchange.span = span
        exchange.context_token = otel_context.attach(trace.set_span_in_context(span))

    def complete(self, exchange: Exchange) -> None:
        otel_context.detach(exchange.context_token)  # type: ignore[arg-type]
        span: trace.Span = exchange.span
        if span.is_recording():
            self._finish(span, exchange)
        span.end()

    def _unsampled(self, parent: otel_context.Context | None) -> trace.Span:
        ids = self._ids
        assert ids is not None
        remote = trace.get_current_span(parent).get_span_context() if parent else None
        if remote is not None and remote.is_valid:
            trace_id, state = remote.trace_id, remote.trace_state
            random_id = remote.trace_flags.random_trace_id
        else:
            trace_id, state = ids.generate_trace_id(), _EMPTY_STATE
            random_id = ids.is_trace_id_random()
        flags = _NOT_SAMPLED_RANDOM if random_id else _NOT_SAMPLED
        return trace.NonRecordingSpan(
            trace.SpanContext(trace_id, ids.generate_span_id(), False, flags, state)
        )

    def _started(self, exchange: Exchange, parent: otel_context.Context | None) -> trace.Span:
        method, attributes = self.start_attributes(exchange)
        return self.tracer.start_span(
            method, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )

    def start_attributes(self, exchange: Exchange) -> tuple[str, dict[str, Any]]:
        """The span's first name (``{method}``, ``HTTP`` for an unknown method) and the
        attributes the conventions ask for at its creation."""
        scope = exchange.scope
        head = exchange.head
        method: str = scope["method"]
        attributes: dict[str, Any] = {
            URL_PATH: scope["path"],
            URL_SCHEME: scope.get("scheme", "http"),
        }
        if method in self.methods:
            attributes[HTTP_REQUEST_METHOD] = method
        else:
            attributes[HTTP_REQUEST_METHOD] = HttpRequestMethodValues.OTHER.value
            attributes[HTTP_REQUEST_METHOD_ORIGINAL] = method
            method = "HTTP"
        query = scope.get("query_string")
        if query:
            attributes[URL_QUERY] = scrubbed_query(query)
        server = server_address(head.host, scope)
        if server is not None:
            attributes[SERVER_ADDRESS], attributes[SERVER_PORT] = server
        client = scope.get("client")
        if client:
            attributes[CLIENT_ADDRESS] = client[0]
        if head.user_agent is not None:
            attributes[USER_AGENT_ORIGINAL] = head.user_agent.decode("latin-1")
        version = scope.get("http_version")
        if version:
            attributes[NETWORK_PROTOCOL_VERSION] = version
        return method, attributes

    def _finish(self, span: trace.Span, exchange: Exchange) -> None:
        """Name and tag a recording span once the response is complete (or the app failed)."""
        error = exchange.error
        status = exchange.reported_status
        template = exchange.route
        if template != UNMATCHED:
            method = exchange.scope["method"]
            span.update_name(f"{method if method in self.methods else 'HTTP'} {template}")
            span.set_attribute(HTTP_ROUTE, template)
        if exchange.status:
            span.set_attribute(HTTP_RESPONSE_STATUS_CODE, exchange.status)
        if isinstance(error, Exception):
            span.record_exception(error)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR))
            span.set_attribute(ERROR_TYPE, error_type(error))
        elif status >= 500:
            span.set_status(Status(StatusCode.ERROR))
            span.set_attribute(ERROR_TYPE, str(status))
        principal = principal_of(exchange.scope)
        if principal is not None:
            span.set_attribute(ENDUSER_ID, principal.client_id)
        if exchange.request_id:  # the console finds a request's trace by it
            span.set_attribute(REQUEST_ID_ATTRIBUTE, exchange.request_id)


_NOT_SAMPLED = trace.TraceFlags(trace.TraceFlags.DEFAULT)
_NOT_SAMPLED_RANDOM = trace.TraceFlags(trace.TraceFlags.RANDOM_TRACE_ID)  # W3C level 2 flag
_EMPTY_STATE = trace.TraceState()
