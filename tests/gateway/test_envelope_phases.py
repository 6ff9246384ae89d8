"""Each policy of the request envelope, phase by phase, on its own; then the envelope running
them in order."""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from prometheus_client import CollectorRegistry
from starlette.types import Message, Receive, Scope, Send

from gateway.policies import access_log
from gateway.policies.access_log import AccessLog
from gateway.policies.edge import SecurityHeaders, TrustedProxies
from gateway.policies.envelope import AccessLines, RequestEnvelope, RequestIds, RequestMetrics
from gateway.policies.metrics import GatewayMetrics, MetricsConfig
from gateway.policies.phases import EnvelopePolicy, Exchange, Header, RequestHead, takes_part
from gateway.policies.routing import UNMATCHED
from gateway.policies.scope_keys import (
    EXCHANGE_KEY,
    REQUEST_ID_KEY,
    RESPONSE_HEADERS_KEY,
    TRACE_ID_KEY,
)
from gateway.policies.tracing import ServerSpans

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def scope_of(
    headers: Sequence[Header] = (), path: str = "/x", client: tuple[str, int] = ("10.0.0.9", 1)
) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "scheme": "http",
        "http_version": "1.1",
        "query_string": b"",
        "headers": list(headers),
        "client": client,
        "server": ("127.0.0.1", 8000),
    }


class Sent:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    def headers(self) -> dict[bytes, bytes]:
        return dict(self.messages[0]["headers"])


def exchange_of(scope: dict[str, Any], *policies: EnvelopePolicy) -> tuple[Exchange, Sent]:
    sent = Sent()
    starts = [p.response_start for p in policies if takes_part(p, "response_start")]
    return Exchange(scope, sent, starts), sent


# --- the request head and the exchange ----------------------------------------------------


def test_the_head_is_read_in_one_scan_first_ids_win_list_headers_join() -> None:
    head = RequestHead(
        [
            (b"host", b"api.example.com:8443"),
            (b"x-request-id", b"first-id-1234"),
            (b"traceparent", b"00-a"),
            (b"accept", b"*/*"),
            (b"x-request-id", b"second-id-1234"),
            (b"traceparent", b"00-b"),
            (b"tracestate", b"k=v"),
            (b"user-agent", b"probe/1.0"),
            (b"host", b"other"),
        ]
    )
    assert head.request_id == b"first-id-1234"
    assert head.traceparent == "00-a,00-b"
    assert head.tracestate == "k=v"
    assert head.host == b"api.example.com:8443"
    assert head.user_agent == b"probe/1.0"


async def test_the_exchange_is_the_one_send_wrapper() -> None:
    scope = scope_of()

    class Tag(EnvelopePolicy):
        def response_start(self, exchange: Exchange, headers: Sequence[Header]) -> list[Header]:
            return [(b"x-seen", str(len(headers)).encode())]

    exchange, sent = exchange_of(scope, Tag())
    assert scope[RESPONSE_HEADERS_KEY] is exchange.added
    scope[RESPONSE_HEADERS_KEY].append((b"ratelimit", b"r"))  # as the rate limit does
    headers = iter([(b"content-type", b"text/plain")])  # an iterable: read once
    await exchange.send({"type": "http.response.start", "status": 201, "headers": headers})
    await exchange.send({"type": "http.response.body", "body": b"abc", "more_body": True})
    await exchange.send({"type": "http.response.body", "body": b"de"})
    assert exchange.status == 201 and exchange.sent == 5
    assert sent.messages[0]["headers"] == [
        (b"content-type", b"text/plain"),
        (b"ratelimit", b"r"),
        (b"x-seen", b"1"),
    ]


async def test_a_request_leaves_no_reference_cycle_behind() -> None:
    """The exchange is in the scope while the app runs (the error layer reads it): the
    envelope takes it out at completion, so reference counting frees the request's objects
    as it ends and none waits for the cyclic collector."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope[EXCHANGE_KEY].status == 0
        await send({"type": "http.response.start", "status": 200, "headers": []})
        assert scope[EXCHANGE_KEY].status == 200
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    envelope = RequestEnvelope(app, [RequestIds()])
    gc.collect()
    gc.disable()
    try:
        scope = scope_of()
        await envelope(scope, receive, Sent())
        assert EXCHANGE_KEY not in scope
        del scope
        assert not [o for o in gc.get_objects() if type(o) is Exchange]
    finally:
        gc.enable()


def test_completion_reads_route_and_status_once_the_app_ran() -> None:
    exchange, _ = exchange_of(scope_of())
    exchange.completed(0.25, None)
    assert (exchange.reported_status, exchange.route, exchange.elapsed_s) == (500, UNMATCHED, 0.25)
    exchange.status = 204
    exchange.completed(0.1, None)
    assert exchange.reported_status == 204


def test_a_policy_takes_part_only_in_the_phases_it_overrides() -> None:
    assert [
        takes_part(RequestIds(), p) for p in ("request_start", "response_start", "complete")
    ] == [
        True,
        False,
        False,
    ]
    assert takes_part(SecurityHeaders(), "response_start")
    assert not takes_part(SecurityHeaders(), "complete")


# --- each policy ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "kept"), [(b"req-12345678", True), (b"short", False), (b"bad id\n!", False)]
)
def test_request_ids_keep_a_well_formed_one_else_make_one(offered: bytes, kept: bool) -> None:
    scope = scope_of([(b"x-request-id", offered)])
    exchange, _ = exchange_of(scope)
    RequestIds().request_start(exchange)
    rid = scope[REQUEST_ID_KEY]
    assert (rid == offered.decode()) is kept
    assert len(rid) == 32 or kept
    assert exchange.request_id == rid
    assert exchange.added == [(b"x-request-id", rid.encode())]


def test_trusted_proxies_rewrite_the_client_only_for_a_trusted_peer() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    forwarded = [(b"x-forwarded-for", b"203.0.113.7, 10.0.0.2"), (b"x-forwarded-proto", b"https")]
    trusted = scope_of(forwarded, client=("10.0.0.9", 5000))
    proxies.request_start(exchange_of(trusted)[0])
    assert trusted["client"] == ("203.0.113.7", 0) and trusted["scheme"] == "https"
    stranger = scope_of(forwarded, client=("198.51.100.1", 5000))
    proxies.request_start(exchange_of(stranger)[0])
    assert stranger["client"] == ("198.51.100.1", 5000) and stranger["scheme"] == "http"


def test_security_headers_add_what_the_response_lacks() -> None:
    policy = SecurityHeaders()
    api, _ = exchange_of(scope_of(path="/system/v1/crm/customers/1"))
    docs, _ = exchange_of(scope_of(path="/docs"))
    added = dict(policy.response_start(api, [(b"content-type", b"application/json")]))
    assert added[b"x-content-type-options"] == b"nosniff"
    assert added[b"content-security-policy"].startswith(b"default-src 'none'")
    assert dict(policy.response_start(docs, []))[b"content-security-policy"].startswith(
        b"default-src 'self'"
    )
    etagged = dict(policy.response_start(api, [(b"etag", b'"1"'), (b"x-frame-options", b"X")]))
    assert b"cache-control" not in etagged and b"x-frame-options" not in etagged


def test_server_spans_start_with_the_callers_trace_and_end_detached() -> None:
    spans = ServerSpans(TracerProvider(sampler=ALWAYS_OFF))
    scope = scope_of([(b"traceparent", f"00-{CALLER_TRACE}-00f067aa0ba902b7-01".encode())])
    exchange, _ = exchange_of(scope)
    before = trace.get_current_span()
    spans.request_start(exchange)
    assert scope[TRACE_ID_KEY] == CALLER_TRACE
    assert exchange.added == [(b"x-trace-id", CALLER_TRACE.encode())]
    assert trace.get_current_span() is exchange.span  # current for the app's backend calls
    exchange.completed(0.01, None)
    spans.complete(exchange)
    assert trace.get_current_span() is before


def test_server_spans_without_a_valid_span_use_the_request_id() -> None:
    spans = ServerSpans(trace.NoOpTracerProvider())
    scope = scope_of()
    exchange, _ = exchange_of(scope)
    exchange.request_id = "req-12345678"
    spans.request_start(exchange)
    assert scope[TRACE_ID_KEY] == "req-12345678" and exchange.added == []
    exchange.completed(0.01, None)
    spans.complete(exchange)


def test_request_metrics_track_in_flight_and_count_by_route() -> None:
    metrics = GatewayMetrics(MetricsConfig(), CollectorRegistry())
    policy = RequestMetrics(metrics)
    exchange, _ = exchange_of(scope_of())
    policy.request_start(exchange)
    assert metrics.started - metrics.finished == 1
    exchange.status = 404
    exchange.completed(0.003, None)
    policy.complete(exchange)
    assert metrics.started - metrics.finished == 0
    metrics.refresh()
    text = metrics.render().decode()
    assert 'route="unmatched"' in text and 'status="404"' in text


@pytest.fixture
def lines() -> Iterator[list[str]]:
    captured: list[str] = []
    logger = logging.getLogger(access_log.ACCESS_LOGGER)
    level = logger.level
    logger.setLevel(logging.INFO)
    access_log.set_line_sink(captured.append)
    yield captured
    access_log.set_line_sink(None)
    logger.setLevel(level)


def test_access_lines_write_one_line_when_complete(lines: list[str]) -> None:
    scope = scope_of()
    scope[REQUEST_ID_KEY], scope[TRACE_ID_KEY] = "req-12345678", CALLER_TRACE
    exchange, _ = exchange_of(scope)
    exchange.status, exchange.sent = 200, 12
    exchange.completed(0.002, None)
    AccessLines(AccessLog()).complete(exchange)
    (line,) = lines
    fields = json.loads(line)
    assert (fields["request_id"], fields["trace_id"], fields["status"], fields["bytes"]) == (
        "req-12345678",
        CALLER_TRACE,
        200,
        12,
    )
    assert fields["route"] == UNMATCHED and fields["duration_ms"] == 2.0


# --- the envelope -------------------------------------------------------------------------


class Recorder(EnvelopePolicy):
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    def request_start(self, exchange: Exchange) -> None:
        self.calls.append(f"{self.name}.request")

    def response_start(self, exchange: Exchange, headers: Sequence[Header]) -> list[Header]:
        self.calls.append(f"{self.name}.response")
        return []

    def complete(self, exchange: Exchange) -> None:
        error = type(exchange.error).__name__ if exchange.error else None
        self.calls.append(f"{self.name}.complete:{exchange.reported_status}:{error}")


async def noop_receive() -> Message:
    return {"type": "http.request", "body": b""}


async def test_the_envelope_runs_each_phase_in_policy_order() -> None:
    calls: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append("app")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    envelope = RequestEnvelope(app, [Recorder("a", calls), Recorder("b", calls)])
    await envelope(scope_of(), noop_receive, Sent())
    assert calls == [
        "a.request",
        "b.request",
        "app",
        "a.response",
        "b.response",
        "a.complete:200:None",
        "b.complete:200:None",
    ]


async def test_a_crash_is_answered_completed_with_its_error_and_re_raised() -> None:
    calls: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise KeyError("boom")

    envelope = RequestEnvelope(app, [Recorder("a", calls)])
    sent = Sent()
    with pytest.raises(KeyError):
        await envelope(scope_of(), noop_receive, sent)
    assert sent.messages[0]["status"] == 500  # no handler: Starlette's plain 500
    # the server closes the connection once the exception reaches it: the answer says so
    assert (b"connection", b"close") in sent.messages[0]["headers"]
    assert calls == ["a.request", "a.response", "a.complete:500:KeyError"]


async def test_other_scopes_pass_through_untouched() -> None:
    calls: list[str] = []
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    await RequestEnvelope(app, [Recorder("a", calls)])({"type": "lifespan"}, noop_receive, Sent())
    assert seen == ["lifespan"] and calls == []
