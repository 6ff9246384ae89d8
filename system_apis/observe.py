"""Observation hooks the lower layers call without importing the gateway.

Dependencies point down only, so the client base and the process APIs cannot import the
gateway's metrics or tracing. Instead they report here: every backend attempt goes to the
registered :class:`CallObserver` objects (the gateway registers its metrics), the attempt in
progress is visible through a context variable (the client base sends its ``traceparent``),
and ``step()`` opens an internal span per process step on whatever tracer provider is
installed.
"""

from __future__ import annotations

import contextvars
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.types import AttributeValue

__all__ = [
    "AttemptInfo",
    "CallObserver",
    "attempt",
    "current_attempt",
    "observers",
    "set_tracer_provider",
    "step",
    "trace_headers",
]


class CallObserver(Protocol):
    """Receives one report per attempt of a backend call (a retried call reports each try)."""

    def on_attempt(
        self,
        backend: str,
        method: str,
        status: int | None,
        error: str | None,
        duration_s: float,
        attempt: int,
        breaker: str,
    ) -> None:
        """``status`` is the HTTP status, or None when ``error`` (an exception name) happened."""


observers: list[CallObserver] = []
"""Registered observers; the gateway appends its metrics at start-up. Must not raise or block."""


@dataclass(slots=True)
class AttemptInfo:
    """The backend attempt in progress; the client sets ``status`` once a response arrived."""

    backend: str
    method: str
    attempt: int
    breaker: str
    status: int | None = None
    started: float = 0.0
    traceparent: str | None = None
    """W3C header of this attempt's client span, to send to the backend (None: no trace)."""
    tracestate: str | None = None


current_attempt: contextvars.ContextVar[AttemptInfo | None] = contextvars.ContextVar(
    "trellis_current_attempt", default=None
)
"""The attempt in progress in this task, read by the client-span hook to tag its span."""


class attempt:  # lower case: used like a function, ``with observe.attempt(...) as seen:``
    """Context manager around one attempt: exposes it to span hooks, times it, reports it.

    A class rather than ``@contextmanager`` because it runs on every backend attempt and a
    generator-based manager costs several times more.
    """

    __slots__ = ("_info", "_span", "_token")

    def __init__(self, backend: str, method: str, attempt: int, breaker: str) -> None:
        self._info = AttemptInfo(backend, method, attempt, breaker)
        self._token: contextvars.Token[AttemptInfo | None] | None = None
        self._span: trace.Span | None = None

    def __enter__(self) -> AttemptInfo:
        info = self._info
        self._token = current_attempt.set(info)
        # One client span per attempt, made here rather than by an HTTP client instrumentation,
        # which costs CPU on every call even when nothing is sampled (docs/decisions.md).
        parent = trace.get_current_span()
        pctx = parent.get_span_context()
        if pctx.is_valid and not parent.is_recording():
            # The request is not sampled: no span to make, only the context to pass on, with
            # a fresh span id (what a non-recording child span would carry, minus its cost).
            info.traceparent = (
                f"00-{pctx.trace_id:032x}-{random.getrandbits(64) or 1:016x}-{pctx.trace_flags:02x}"
            )
            if pctx.trace_state:
                info.tracestate = pctx.trace_state.to_header()
            self._span = None
            info.started = time.perf_counter()
            return info
        span = _get_tracer().start_span(f"{info.method} {info.backend}", kind=_CLIENT)
        ctx = span.get_span_context()
        if ctx.is_valid:
            info.traceparent = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
            if ctx.trace_state:
                info.tracestate = ctx.trace_state.to_header()
        if span.is_recording():
            span.set_attributes(
                {
                    "http.request.method": info.method,
                    "trellis.backend": info.backend,
                    "trellis.retry.attempt": info.attempt,
                    "trellis.breaker.state": str(info.breaker),
                }
            )
        self._span = span
        info.started = time.perf_counter()
        return info

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        info = self._info
        duration = time.perf_counter() - info.started
        if self._token is not None:
            current_attempt.reset(self._token)
        error = exc_type.__name__ if exc_type is not None else None
        status = None if error is not None else info.status
        span = self._span
        if span is not None:
            if span.is_recording():
                if status is not None:
                    span.set_attribute("http.response.status_code", status)
                if error is not None or (status is not None and status >= 500):
                    span.set_status(Status(StatusCode.ERROR))
                    span.set_attribute("error.type", error or str(status))
            span.end()
        for observer in observers:
            observer.on_attempt(
                info.backend, info.method, status, error, duration, info.attempt, info.breaker
            )


_CLIENT = trace.SpanKind.CLIENT


def trace_headers() -> dict[str, str]:
    """``traceparent``/``tracestate`` of the backend attempt in progress ({} outside one)."""
    info = current_attempt.get()
    if info is None or info.traceparent is None:
        return {}
    if info.tracestate:
        return {"traceparent": info.traceparent, "tracestate": info.tracestate}
    return {"traceparent": info.traceparent}


_provider: trace.TracerProvider | None = None
_tracer: trace.Tracer | None = None


def set_tracer_provider(provider: trace.TracerProvider | None) -> None:
    """Use ``provider`` for ``step()`` spans; None returns to the global provider."""
    global _provider, _tracer
    _provider, _tracer = provider, None


def installed_provider() -> trace.TracerProvider | None:
    return _provider


def _get_tracer() -> trace.Tracer:
    global _tracer
    if _tracer is None:
        _tracer = trace.get_tracer("trellis.process", tracer_provider=_provider)
    return _tracer


@contextmanager
def step(name: str, **attributes: AttributeValue) -> Iterator[trace.Span]:
    """An internal span around one process step, child of the current request's span.

    Process APIs wrap each business step (``with step("reserve stock"):``) so a trace shows
    where a composed operation spent its time and which step failed.
    """
    current = trace.get_current_span()
    if current.get_span_context().is_valid and not current.is_recording():
        yield current  # not sampled: a child would record nothing either
        return
    with _get_tracer().start_as_current_span(
        name, kind=trace.SpanKind.INTERNAL, attributes=attributes or None
    ) as span:
        yield span
