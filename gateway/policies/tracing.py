"""Tracing policy: one server span per request, named by route template, W3C context in and out.

Our own, applied by the request envelope (``gateway.policies.envelope``), rather than the
contrib ``OpenTelemetryMiddleware`` (which names spans by raw path, records receive/send spans
unless told not to, and records its own metrics) or Starlette's experimental one (which names
by template but neither exposes the trace id to the app nor returns it). The span starts before
the app runs so the trace id is in ``scope["trellis.trace_id"]`` for problem bodies and logs;
it is returned in ``X-Trace-Id``; the span is renamed ``METHOD /route/{template}`` once routing
is known and tagged with the authenticated client id. Backend calls get one client span per
attempt from the client base, tagged with backend, attempt and breaker state (see
``system_apis.observe``).
"""

from __future__ import annotations

from typing import Any, Literal

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import Scope

from gateway.policies.routing import UNMATCHED, route_template
from gateway.principal import principal_of
from gateway.request_id import SCOPE_KEY as REQUEST_ID_KEY
from system_apis import observe

TRACE_ID_KEY = "trellis.trace_id"
"""The ASGI scope key problem bodies and access logs read the trace id from."""

REQUEST_ID_ATTRIBUTE = "trellis.request_id"
"""Server-span attribute holding the request's ``X-Request-ID``."""

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
    """Backend client spans come from ``system_apis.observe.attempt`` on this provider.

    We do not use the aiohttp client instrumentation: it cost ~17% of a proxied request's
    CPU even with nothing sampled (bench/, docs/performance.md); one span per attempt made by
    the client base, with ``traceparent`` injected by it, gives the same tree for less.
    """
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


class ServerSpans:
    """The server span of each request (used by ``gateway.policies.envelope``).

    With the always-off sampler (no exporter: the default) nothing is recorded, so the span is
    made here as the SDK would make it — a non-recording span with a fresh span id, the
    caller's trace id, trace state and random-id flag when a valid ``traceparent`` came, else
    a fresh trace id (flagged random, as the SDK does), never the sampled flag — without the
    SDK's sampler call, attribute dict and span processors on every request. Any other sampler
    goes through ``start_span``.
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer("trellis.gateway", tracer_provider=tracer_provider)
        provider = tracer_provider or trace.get_tracer_provider()
        self._ids = getattr(provider, "id_generator", None)
        self.records_nothing = (
            isinstance(provider, TracerProvider)
            and provider.sampler is ALWAYS_OFF
            and self._ids is not None
        )

    def start(
        self, scope: Scope, traceparent: str | None, tracestate: str | None
    ) -> tuple[trace.Span, bytes]:
        """The request's span and its 32-hex trace id (empty if the span has no valid id)."""
        parent = None
        if traceparent is not None:
            carrier = {"traceparent": traceparent}
            if tracestate is not None:
                carrier["tracestate"] = tracestate
            parent = _W3C.extract(carrier)
        span: trace.Span
        if self.records_nothing:
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
            span = trace.NonRecordingSpan(
                trace.SpanContext(trace_id, ids.generate_span_id(), False, flags, state)
            )
            return span, b"%032x" % trace_id
        method: str = scope["method"]
        span = self.tracer.start_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": scope["path"],
                "url.scheme": scope.get("scheme", "http"),
            },
        )
        span_context = span.get_span_context()
        if not span_context.is_valid:
            return span, b""
        return span, b"%032x" % span_context.trace_id

    @staticmethod
    def attach(span: trace.Span) -> object:
        """Make ``span`` current for the app (backend client spans and ``traceparent``)."""
        return otel_context.attach(trace.set_span_in_context(span))

    @staticmethod
    def end(
        span: trace.Span,
        token: object,
        scope: Scope,
        status: int,
        error: BaseException | None,
    ) -> None:
        """Detach the context and finish the span with the route, status and client."""
        otel_context.detach(token)  # type: ignore[arg-type]
        if span.is_recording():
            if isinstance(error, Exception):
                span.record_exception(error)
            error_type = type(error).__qualname__ if error is not None else None
            _finish(span, scope, scope["method"], status, error_type)
        span.end()


_NOT_SAMPLED = trace.TraceFlags(trace.TraceFlags.DEFAULT)
_NOT_SAMPLED_RANDOM = trace.TraceFlags(trace.TraceFlags.RANDOM_TRACE_ID)  # W3C level 2 flag
_EMPTY_STATE = trace.TraceState()


def _finish(
    span: trace.Span, scope: Scope, method: str, status: int, error_type: str | None
) -> None:
    template = route_template(scope)
    if template != UNMATCHED:
        span.update_name(f"{method} {template}")
        span.set_attribute("http.route", template)
    if status:
        span.set_attribute("http.response.status_code", status)
    if status >= 500 or error_type:
        span.set_status(Status(StatusCode.ERROR))
        span.set_attribute("error.type", error_type or str(status))
    principal = principal_of(scope)
    if principal is not None:
        span.set_attribute("enduser.id", principal.client_id)
    request_id = scope.get(REQUEST_ID_KEY)
    if request_id is not None:  # the console finds a request's trace by it
        span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
