"""Observability of one gateway worker: tracer provider, metrics registry, JSON logging.

``config/observability.yaml`` holds three sections (``tracing``, ``metrics``, ``logs``), each
the config model of its policy module. :class:`Observability` builds what they share and
owns the process-wide side effects (the tracer provider the backend clients' spans use, the
``trellis`` logger's handler, the exporter threads), so start-up and shutdown happen in one
place, in the lifespan, before the backend clients start and after they are closed.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener
from typing import Any, TextIO

import orjson
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from gateway.console.config import ConsoleConfig
from gateway.console.spans import SpanRing
from gateway.policies import access_log
from gateway.policies.access_log import ACCESS_LOGGER, AccessLog, LogsConfig
from gateway.policies.edge import EdgeConfig, SecurityHeaders, TrustedProxies
from gateway.policies.envelope import (
    AccessLines,
    RequestEnvelope,
    RequestIds,
    RequestMetrics,
    ServerErrorHandler,
)
from gateway.policies.metrics import GatewayMetrics, MetricsConfig
from gateway.policies.phases import EnvelopePolicy
from gateway.policies.redaction import redact, redact_text
from gateway.policies.tracing import (
    ServerSpans,
    TracingConfig,
    build_tracer_provider,
    install_tracer_provider,
    uninstall_tracer_provider,
)
from system_apis import observe

log = logging.getLogger("trellis.observability")

ROOT_LOGGER = "trellis"


class ObservabilityConfig(BaseModel):
    """``config/observability.yaml``: tracing, metrics and logs, all defaulted."""

    model_config = ConfigDict(extra="forbid")

    tracing: TracingConfig = Field(default_factory=TracingConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    logs: LogsConfig = Field(default_factory=LogsConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)


# --- logging ------------------------------------------------------------------------------

_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


_PLAIN = (str, int, float, bool, type(None))


def _structured(args: Any) -> bool:
    """Whether log arguments hold anything but plain values (a dict, a list, an object)."""
    return isinstance(args, Mapping) or not all(isinstance(a, _PLAIN) for a in args)


class JsonFormatter(logging.Formatter):
    """One JSON object per record; message, arguments and extras redacted before rendering.

    Redaction lives here, not at call sites, so it holds for whatever any ``trellis.*`` code
    logs, including exception text.
    """

    def __init__(self, *, redaction: bool = True, redact_keys: Sequence[str] = ()) -> None:
        super().__init__()
        self.redaction = redaction
        self.redact_keys = tuple(k.lower() for k in redact_keys)

    def _message(self, record: logging.LogRecord) -> str:
        args: Any = record.args
        if args and self.redaction and _structured(args):
            # by key inside containers; plain strings and numbers are caught in the message
            args = (
                redact(args, self.redact_keys)
                if isinstance(args, Mapping)
                else tuple(redact(list(args), self.redact_keys))
            )
        msg = str(record.msg)
        if args:
            try:
                msg = msg % args
            except (TypeError, ValueError):
                msg = f"{msg} {args}"
        return redact_text(msg) if self.redaction else msg

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        """The record as a flat mapping: time, level, logger, message, then its extras."""
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self._message(record),
        }
        extras = {k: v for k, v in record.__dict__.items() if k not in _RECORD_FIELDS}
        if extras:
            out.update(redact(extras, self.redact_keys) if self.redaction else extras)
        if record.exc_info:
            text = self.formatException(record.exc_info)
            out["exc"] = redact_text(text) if self.redaction else text
        if record.stack_info:
            out["stack"] = record.stack_info
        return out

    def format(self, record: logging.LogRecord) -> str:
        return orjson.dumps(self.fields(record), default=str).decode()


class TextFormatter(JsonFormatter):
    """The same fields, redacted, as ``time level logger message key=value`` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        f = self.fields(record)
        head = f"{f.pop('time')} {f.pop('level').upper():7} {f.pop('logger')} {f.pop('message')}"
        tail = " ".join(f"{k}={v}" for k, v in f.items() if k != "exc")
        exc = f"\n{f['exc']}" if "exc" in f else ""
        return f"{head} {tail}{exc}" if tail else f"{head}{exc}"


class _LineListener(QueueListener):
    """Writes pre-rendered lines (``str``) as they are, and log records through the handlers."""

    def handle(self, record: logging.LogRecord | str) -> None:
        if isinstance(record, str):
            for handler in self.handlers:
                if isinstance(handler, logging.StreamHandler):
                    handler.acquire()
                    try:
                        handler.stream.write(record + "\n")
                        handler.flush()
                    finally:
                        handler.release()
            return
        super().handle(record)


class _LineBatch:
    """Access lines gathered on the event loop and handed to the writer thread in batches.

    Each hand-off wakes the writer thread, which then takes the GIL from the loop: per line
    (or per loop turn) that cost more than the lines themselves under load. Lines are handed
    over every ``interval_s`` or every ``max_lines``, whichever comes first, in order, and at
    close; outside a running loop a line is handed over at once.
    """

    def __init__(
        self, put: Callable[[str], None], interval_s: float = 0.05, max_lines: int = 512
    ) -> None:
        self._put = put
        self._lines: list[str] = []
        self._interval_s = interval_s
        self._max_lines = max_lines
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def add(self, line: str) -> None:
        lines = self._lines
        lines.append(line)
        if len(lines) >= self._max_lines:
            self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: write now
            self.flush()
            return
        if self._timer is None or self._timer_loop is not loop:  # none yet, or on a dead loop
            self._timer = loop.call_later(self._interval_s, self.flush)
            self._timer_loop = loop

    def flush(self) -> None:
        """Hand the gathered lines over now (on the loop that gathers them)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lines:
            batch, self._lines = self._lines, []
            self._put("\n".join(batch))


class LoggingHandle:
    """The installed handler and its writer thread; ``close`` flushes them and restores the
    ``trellis`` logger as it was (so one app's shutdown leaves the process as it found it)."""

    def __init__(
        self, handler: QueueHandler, listener: QueueListener, lines: _LineBatch | None = None
    ) -> None:
        root = logging.getLogger(ROOT_LOGGER)
        self.handler = handler
        self.listener = listener
        self.lines = lines
        self._before = (root.level, root.propagate)
        self._closed = False

    def stop_lines(self) -> None:
        """No more access lines: hand over the ones gathered (call it on the event loop)."""
        access_log.set_line_sink(None)
        if self.lines is not None:
            self.lines.flush()

    def close(self) -> None:
        global _installed
        if self._closed:
            return
        self._closed = True
        root = logging.getLogger(ROOT_LOGGER)
        root.removeHandler(self.handler)
        root.setLevel(self._before[0])
        root.propagate = self._before[1]
        access_log.set_line_sink(None)
        if self.lines is not None:
            self.lines.flush()
        self.listener.stop()  # drains the queue, then joins the writer thread
        if _installed is self:
            _installed = None


_installed: LoggingHandle | None = None


def configure_logging(
    config: LogsConfig, level: str = "info", stream: TextIO | None = None
) -> LoggingHandle:
    """JSON (or text) lines for every ``trellis.*`` logger, written off the event loop.

    Records are formatted and redacted in the caller (so later changes to logged objects
    cannot leak), then queued; a thread writes them, so a slow stderr never stalls the loop.
    Calling it again replaces the previous configuration.
    """
    global _installed
    if _installed is not None:
        _installed.close()
    formatter_type = JsonFormatter if config.format == "json" else TextFormatter
    q: queue.SimpleQueue[logging.LogRecord | str] = queue.SimpleQueue()
    handler = QueueHandler(q)
    handler.setFormatter(formatter_type(redaction=config.redact, redact_keys=config.redact_keys))
    out = stream or (sys.stdout if config.stream == "stdout" else sys.stderr)
    writer = logging.StreamHandler(out)
    writer.setFormatter(logging.Formatter("%(message)s"))
    listener = _LineListener(q, writer)
    listener.start()
    # The access line has a fixed schema of safe fields (ids, route template, status...):
    # it skips LogRecord, caller lookup and per-field redaction; lines go to the writer
    # thread in batches, one per loop turn.
    lines = _LineBatch(q.put_nowait) if config.format == "json" else None
    _installed = LoggingHandle(handler, listener, lines)
    access_log.set_line_sink(lines.add if lines is not None else None)
    root = logging.getLogger(ROOT_LOGGER)
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False  # a root handler elsewhere must not print unredacted copies
    access = logging.getLogger(ACCESS_LOGGER)
    access.setLevel(logging.NOTSET if config.access_log else logging.WARNING)
    return _installed


# --- the whole --------------------------------------------------------------------------


class Observability:
    """What one worker's observability policies share, and their start/close.

    Pass ``tracer_provider`` to use one made elsewhere (tests install an in-memory one per
    session); otherwise one is built from config, owned, made global if none is, and shut
    down (flushing its exporter) on close.
    """

    def __init__(
        self,
        config: ObservabilityConfig | None = None,
        *,
        tracer_provider: TracerProvider | None = None,
        registry: CollectorRegistry | None = None,
        log_level: str = "info",
        log_stream: TextIO | None = None,
        configure_logs: bool = True,
    ) -> None:
        self.config = config or ObservabilityConfig()
        self._owns_provider = tracer_provider is None
        console = self.config.console
        self.tracer_provider = tracer_provider or build_tracer_provider(
            self.config.tracing, record=console.enabled and console.record_spans
        )
        self.spans = SpanRing(console.recent_spans if console.enabled else 0)
        """This worker's recent ended spans, for the console's trace look-up (kept from the
        provider this object builds; a provider passed in is left as its owner made it)."""
        if self.spans.size and self._owns_provider:
            self.tracer_provider.add_span_processor(self.spans)
        self.metrics = GatewayMetrics(self.config.metrics, registry)
        self._log_level = log_level
        self._log_stream = log_stream
        self._configure_logs = configure_logs
        self.logging: LoggingHandle | None = None
        self._metrics_server: web.AppRunner | None = None

    def wrap(
        self,
        app: ASGIApp,
        edge: EdgeConfig | None = None,
        server_error: ServerErrorHandler | None = None,
    ) -> RequestEnvelope:
        """``app`` (e.g. from ``Starlette.build_middleware_stack``) inside the request envelope,
        with its policies in order: trusted-proxy addresses (from ``edge``), the request id,
        the server span, metrics and the access log as configured, and security headers (from
        ``edge``); ``server_error`` answers what ``app`` raises. See ``policies/envelope.py``.
        """
        edge = edge or EdgeConfig(security_headers=False)
        policies: list[EnvelopePolicy] = []
        proxies = TrustedProxies(edge.trusted_proxies)
        if proxies.networks:
            policies.append(proxies)
        policies += [RequestIds(), ServerSpans(self.tracer_provider)]
        if self.config.metrics.enabled:
            policies.append(RequestMetrics(self.metrics))
        if self.config.logs.access_log:
            policies.append(AccessLines(AccessLog()))
        if edge.security_headers:
            policies.append(SecurityHeaders(edge.hsts))
        return RequestEnvelope(app, policies, server_error)

    def routes(self, protect: Callable[[ASGIApp], ASGIApp] | None = None) -> list[BaseRoute]:
        """``GET /metrics`` on the gateway's port, unless disabled or on a port of its own."""
        cfg = self.config.metrics
        if not cfg.enabled or cfg.port is not None:
            return []
        return [self.metrics.route(protect)]

    async def start(self) -> None:
        """Process-wide set-up; call first in the lifespan, before backend sessions exist."""
        if self._configure_logs:
            self.logging = configure_logging(self.config.logs, self._log_level, self._log_stream)
        install_tracer_provider(self.tracer_provider, make_global=self._owns_provider)
        if self.config.metrics.enabled and self.metrics not in observe.observers:
            observe.observers.append(self.metrics)
        cfg = self.config.metrics
        if cfg.enabled and cfg.port is not None:
            self._metrics_server = await self.metrics.serve_port()
            log.info("metrics served on a separate port", extra={"port": cfg.port})

    async def close(self) -> None:
        """Stop reporting, flush spans and log lines; blocking joins run off the loop."""
        if self.metrics in observe.observers:
            observe.observers.remove(self.metrics)
        if self._metrics_server is not None:
            await self._metrics_server.cleanup()
            self._metrics_server = None
        uninstall_tracer_provider(self.tracer_provider)
        if self._owns_provider:
            await asyncio.to_thread(self.tracer_provider.shutdown)
        if self.logging is not None:
            self.logging.stop_lines()  # on the loop, where the lines are gathered
            await asyncio.to_thread(self.logging.close)
            self.logging = None


def current_trace_id() -> str | None:
    """The 32-hex trace id of the active span, for code that has no ASGI scope at hand."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None
