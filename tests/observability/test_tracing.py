"""Trace trees through a real app over HTTP: server span by route template, step spans,
one client span per backend call, W3C context continued from the caller to the backend."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from gateway.observability import ObservabilityConfig
from gateway.policies.tracing import TracingConfig, build_tracer_provider
from tests.observability.conftest import Harness, StockBackend, running

Spans = Callable[[str], list[ReadableSpan]]

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def sampled(flags: str) -> bool:
    """W3C trace-flags: bit 0 is "sampled" (bit 1, "random", may be set too)."""
    return bool(int(flags, 16) & 1)


def by_kind(spans: list[ReadableSpan], kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans if s.kind is kind]


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_one_request_yields_one_correctly_parented_trace(
    harness: Harness, spans: Spans
) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{harness.url}/orders/42", headers={"X-Test-Client": "partner-a"})
    assert r.status_code == 200
    trace_id = r.headers["X-Trace-Id"]
    assert len(trace_id) == 32 and int(trace_id, 16) != 0

    tree = spans(trace_id)
    # server + 2 steps + 2 client spans: no receive/send spans, nothing else
    assert len(tree) == 5, [s.name for s in tree]
    (server,) = by_kind(tree, SpanKind.SERVER)
    steps = by_kind(tree, SpanKind.INTERNAL)
    clients = by_kind(tree, SpanKind.CLIENT)

    assert server.name == "GET /orders/{order_id}"
    assert server.parent is None
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/orders/{order_id}"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["enduser.id"] == "partner-a"

    assert sorted(s.name for s in steps) == ["check stock", "load order"]
    assert all(parent_id(s) == span_id(server) for s in steps)
    load = next(s for s in steps if s.name == "load order")
    assert load.attributes is not None and load.attributes["order.id"] == "42"

    assert len(clients) == 2
    assert {parent_id(c) for c in clients} == {span_id(s) for s in steps}
    for c in clients:
        assert c.attributes is not None
        assert c.attributes["trellis.backend"] == "inventory"
        assert c.attributes["trellis.retry.attempt"] == 1
        assert c.attributes["trellis.breaker.state"] == "closed"

    # the backend saw the trace: each call carried the client span as its parent
    sent = [h["traceparent"].split("-") for h in harness.backend.received]
    assert sorted((t, p) for _, t, p, _ in sent) == sorted(
        (trace_id, format(span_id(c), "016x")) for c in clients
    )
    assert all(sampled(flags) for *_, flags in sent)


async def test_caller_traceparent_is_continued_to_the_backend(
    harness: Harness, spans: Spans
) -> None:
    headers = {
        "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01",
        "tracestate": "vendor=opaque",
    }
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{harness.url}/orders/7", headers=headers)
    assert r.status_code == 200
    assert r.headers["X-Trace-Id"] == CALLER_TRACE

    tree = spans(CALLER_TRACE)
    (server,) = by_kind(tree, SpanKind.SERVER)
    assert server.parent is not None and server.parent.is_remote
    assert format(server.parent.span_id, "016x") == CALLER_SPAN
    for received in harness.backend.received:
        assert received["traceparent"].startswith(f"00-{CALLER_TRACE}-")
        assert sampled(received["traceparent"].rsplit("-", 1)[1])
        assert received["tracestate"] == "vendor=opaque"


async def test_unsampled_caller_records_nothing_but_keeps_the_trace_id(
    harness: Harness, spans: Spans
) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.get(
            f"{harness.url}/orders/7",
            headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"},
        )
    assert r.status_code == 200
    assert r.headers["X-Trace-Id"] == CALLER_TRACE
    assert spans(CALLER_TRACE) == []
    assert harness.backend.received
    for h in harness.backend.received:
        assert h["traceparent"].startswith(f"00-{CALLER_TRACE}-")
        assert not sampled(h["traceparent"].rsplit("-", 1)[1])


async def test_malformed_traceparent_starts_a_new_trace(harness: Harness, spans: Spans) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.get(
            f"{harness.url}/v1/things/3", headers={"traceparent": "00-zzzz-not-a-trace-01"}
        )
    assert r.status_code == 200
    trace_id = r.headers["X-Trace-Id"]
    (server,) = spans(trace_id)
    assert server.parent is None
    assert server.name == "GET /v1/things/{id}"  # mount prefix + inner template


async def test_retried_backend_call_has_one_client_span_per_attempt(
    harness: Harness, spans: Spans
) -> None:
    harness.backend.fail_next = 1
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{harness.url}/orders/9")
    assert r.status_code == 200
    clients = by_kind(spans(r.headers["X-Trace-Id"]), SpanKind.CLIENT)
    attempts = sorted(
        (c.attributes or {})["trellis.retry.attempt"]
        for c in clients  # type: ignore[type-var]
    )
    assert attempts == [1, 1, 2]
    assert len(harness.backend.received) == 3
    assert "enduser.id" not in (
        by_kind(spans(r.headers["X-Trace-Id"]), SpanKind.SERVER)[0].attributes or {}
    )


async def test_errors_carry_the_same_trace_id_in_body_and_header(
    harness: Harness, spans: Spans
) -> None:
    async with httpx.AsyncClient() as http:
        crash = await http.get(f"{harness.url}/boom")
        missing = await http.get(f"{harness.url}/no/such/route")
    assert crash.status_code == 500
    assert crash.json()["trace_id"] == crash.headers["X-Trace-Id"]
    (server,) = spans(crash.headers["X-Trace-Id"])
    assert server.name == "GET /boom"
    assert server.status.status_code is StatusCode.ERROR
    assert server.attributes is not None and server.attributes["error.type"] == "RuntimeError"

    assert missing.status_code == 404
    assert missing.json()["trace_id"] == missing.headers["X-Trace-Id"]
    (unmatched,) = spans(missing.headers["X-Trace-Id"])
    assert unmatched.name == "GET"  # never the raw path
    assert unmatched.attributes is not None and "http.route" not in unmatched.attributes


async def test_request_id_stays_separate_from_the_trace_id(harness: Harness) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{harness.url}/v1/things/1", headers={"X-Request-ID": "req-12345678"})
    assert r.headers["X-Request-ID"] == "req-12345678"
    assert r.headers["X-Trace-Id"] != "req-12345678"


def test_provider_from_config_samples_by_ratio_and_exports_in_batches() -> None:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

    for exporter in ("console", "otlp-http", "otlp-grpc"):
        provider = build_tracer_provider(
            TracingConfig(exporter=exporter, sample_ratio=0.25, endpoint=None)
        )
        assert isinstance(provider.sampler, ParentBased)
        assert "0.25" in provider.sampler.get_description()
        processors = provider._active_span_processor._span_processors
        assert len(processors) == 1 and isinstance(processors[0], BatchSpanProcessor)
        provider.shutdown()
    quiet = build_tracer_provider(TracingConfig())
    assert quiet.sampler is ALWAYS_OFF
    assert quiet._active_span_processor._span_processors == ()


async def test_exporter_none_still_gives_trace_ids_and_propagates(
    backend: StockBackend, spans: Spans
) -> None:
    quiet = build_tracer_provider(TracingConfig(exporter="none"))
    async with running(quiet, backend) as h, httpx.AsyncClient() as http:
        r = await http.get(f"{h.url}/orders/1")
    assert r.status_code == 200
    trace_id = r.headers["X-Trace-Id"]
    assert int(trace_id, 16) != 0
    assert all(x["traceparent"].startswith(f"00-{trace_id}-") for x in backend.received)
    # a root trace id made by the SDK's random generator carries the W3C random flag (0x02),
    # as the SDK's own start_span would set it; never the sampled flag
    assert all(x["traceparent"].endswith("-02") for x in backend.received)


async def test_exporter_none_continues_the_callers_trace_unsampled(
    backend: StockBackend, spans: Spans
) -> None:
    """The always-off fast path makes the span the SDK would: the caller's trace id and
    state, a span id of its own, and the sampled flag never set (nothing is recorded)."""
    quiet = build_tracer_provider(TracingConfig(exporter="none"))
    caller = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {"traceparent": f"00-{caller}-00f067aa0ba902b7-01", "tracestate": "vendor=1"}
    async with running(quiet, backend) as h, httpx.AsyncClient() as http:
        r = await http.get(f"{h.url}/orders/1", headers=headers)
        bad = await http.get(f"{h.url}/orders/1", headers={"traceparent": "00-zz-yy-01"})
    assert r.status_code == 200 and r.headers["X-Trace-Id"] == caller
    sent = backend.received[0]
    _, trace_id, span_id, flags = sent["traceparent"].split("-")
    assert (trace_id, flags) == (caller, "00")
    assert span_id != "00f067aa0ba902b7"
    assert sent.get("tracestate") == "vendor=1"
    assert bad.headers["X-Trace-Id"] not in (caller, "0" * 32)
    assert spans(caller) == []


def test_config_rejects_unknown_keys_and_bad_ratio() -> None:
    import pydantic
    import pytest

    with pytest.raises(pydantic.ValidationError):
        ObservabilityConfig.model_validate({"tracing": {"exporter": "jaeger"}})
    with pytest.raises(pydantic.ValidationError):
        ObservabilityConfig.model_validate({"tracing": {"sample_ratio": 1.5}})
    with pytest.raises(pydantic.ValidationError):
        ObservabilityConfig.model_validate({"tracing": {"sampler": "always"}})


def test_shipped_config_file_is_valid_and_matches_the_defaults() -> None:
    from pathlib import Path

    import yaml

    shipped = Path(__file__).resolve().parents[2] / "config" / "observability.yaml"
    config = ObservabilityConfig.model_validate(yaml.safe_load(shipped.read_text()))
    assert config == ObservabilityConfig()
