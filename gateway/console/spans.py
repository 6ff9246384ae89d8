"""The recent-span ring: an OpenTelemetry span processor keeping this worker's last ended spans.

The console looks a trace up here by trace id or by the request id its server span carries.
The ring is a bounded ``deque``: appending is atomic, so spans ended on any thread are kept
without a lock, and the oldest fall out as new ones come.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

from gateway.policies.redaction import redact
from gateway.policies.tracing import REQUEST_ID_ATTRIBUTE


@dataclass(frozen=True, slots=True)
class SpanView:
    """One span as the trace page shows it: offsets in milliseconds from the trace's start."""

    name: str
    kind: str
    span_id: str
    parent_id: str | None
    depth: int
    start_ms: float
    duration_ms: float
    error: bool
    attributes: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TraceView:
    trace_id: str
    spans: list[SpanView]
    total_ms: float

    @property
    def server(self) -> SpanView | None:
        return next((s for s in self.spans if s.kind == "server"), None)


class SpanRing(SpanProcessor):
    """Keeps the last ``size`` ended spans (recorded ones only: unsampled spans never end
    here)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._spans: deque[ReadableSpan] = deque(maxlen=size)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        if self.size:
            self._spans.append(span)

    def shutdown(self) -> None:
        self._spans.clear()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def __len__(self) -> int:
        return len(self._spans)

    def snapshot(self) -> list[ReadableSpan]:
        """The spans kept now, oldest first (a copy: the ring goes on filling)."""
        return list(self._spans)

    def trace_id_for(self, key: str) -> str | None:
        """The trace id of ``key`` when it is a kept trace id or a kept server span's request
        id; None when neither is in the ring."""
        key = key.strip().lower()
        if not key:
            return None
        for span in reversed(self.snapshot()):
            ctx = span.context
            if ctx is None:
                continue
            trace_id = format(ctx.trace_id, "032x")
            if trace_id == key:
                return trace_id
            attrs = span.attributes or {}
            request_id = attrs.get(REQUEST_ID_ATTRIBUTE)
            if isinstance(request_id, str) and request_id.lower() == key:
                return trace_id
        return None

    def recent_requests(self, limit: int = 20) -> list[tuple[str, str, str | None]]:
        """(trace id, server span name, request id) of the newest requests, newest first."""
        out: list[tuple[str, str, str | None]] = []
        for span in reversed(self.snapshot()):
            if span.kind is not SpanKind.SERVER or span.context is None:
                continue
            request_id = (span.attributes or {}).get(REQUEST_ID_ATTRIBUTE)
            out.append(
                (
                    format(span.context.trace_id, "032x"),
                    span.name,
                    request_id if isinstance(request_id, str) else None,
                )
            )
            if len(out) >= limit:
                break
        return out

    def records(self, trace_id: str, limit: int | None = None) -> list[SpanRecord]:
        """The kept spans of ``trace_id`` (at most ``limit``, the first started), attributes
        redacted as the trace page shows them."""
        wanted = int(trace_id, 16)
        spans = [
            s for s in self.snapshot() if s.context is not None and s.context.trace_id == wanted
        ]
        spans.sort(key=lambda s: s.start_time or 0)
        return [_record(s) for s in spans[:limit]]

    def trace(self, trace_id: str) -> TraceView | None:
        """Every kept span of ``trace_id`` as a tree in start order, or None if none is kept."""
        return assemble(trace_id, self.records(trace_id))


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One ended span as plain data (absolute times in ns since the epoch): what a worker
    hands another worker that looks its trace up, and what a ``TraceView`` is built from."""

    name: str
    kind: str
    span_id: str
    parent_id: str | None
    start_ns: int
    end_ns: int
    error: bool
    attributes: dict[str, Any]


def _record(span: ReadableSpan) -> SpanRecord:
    assert span.context is not None
    parent = span.parent.span_id if span.parent is not None else None
    start = span.start_time or 0
    return SpanRecord(
        name=span.name,
        kind=span.kind.name.lower(),
        span_id=format(span.context.span_id, "016x"),
        parent_id=format(parent, "016x") if parent is not None else None,
        start_ns=start,
        end_ns=span.end_time or start,
        error=span.status.status_code is StatusCode.ERROR,
        attributes=redact(dict(span.attributes or {})),
    )


def assemble(trace_id: str, records: list[SpanRecord]) -> TraceView | None:
    """``records`` (of one trace, from one worker or several) as the page's tree, each span
    once; None when there are none."""
    unique = {r.span_id: r for r in records}
    if not unique:
        return None
    ordered = sorted(unique.values(), key=lambda r: r.start_ns)
    t0 = min(r.start_ns for r in ordered)
    t1 = max(r.end_ns for r in ordered)
    depth: dict[str, int] = {}
    views: list[SpanView] = []
    for r in ordered:
        parent = r.parent_id
        level = depth.get(parent, -1) + 1 if parent is not None and parent in unique else 0
        depth[r.span_id] = level
        views.append(
            SpanView(
                name=r.name,
                kind=r.kind,
                span_id=r.span_id,
                parent_id=parent,
                depth=level,
                start_ms=(r.start_ns - t0) / 1e6,
                duration_ms=(r.end_ns - r.start_ns) / 1e6,
                error=r.error,
                attributes=r.attributes,
            )
        )
    return TraceView(trace_id=trace_id, spans=_tree_order(views), total_ms=(t1 - t0) / 1e6)


def _tree_order(views: list[SpanView]) -> list[SpanView]:
    """Children right under their parent, siblings in start order (a waterfall's rows)."""
    children: dict[str | None, list[SpanView]] = {}
    known = {v.span_id for v in views}
    for view in views:
        parent = view.parent_id if view.parent_id in known else None
        children.setdefault(parent, []).append(view)
    out: list[SpanView] = []

    def walk(parent: str | None) -> None:
        for child in children.get(parent, []):
            out.append(child)
            walk(child.span_id)

    walk(None)
    return out
