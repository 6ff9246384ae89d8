"""Server spans follow the OpenTelemetry HTTP server semantic conventions (stable), read back
from the SDK's in-memory exporter; the unsampled span made without the SDK is the SDK's own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.semconv.attributes.client_attributes import CLIENT_ADDRESS
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_REQUEST_METHOD_ORIGINAL,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
)
from opentelemetry.semconv.attributes.network_attributes import NETWORK_PROTOCOL_VERSION
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.semconv.attributes.url_attributes import URL_PATH, URL_QUERY, URL_SCHEME
from opentelemetry.semconv.attributes.user_agent_attributes import USER_AGENT_ORIGINAL
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.observability import Observability, ObservabilityConfig
from gateway.policies.edge import EdgeConfig
from gateway.policies.phases import Exchange
from gateway.policies.tracing import (
    KNOWN_METHODS_ENV,
    REQUEST_ID_ATTRIBUTE,
    ServerSpans,
    known_methods,
    scrubbed_query,
    server_address,
)
from tests.observability.conftest import Harness

Spans = Callable[[str], list[ReadableSpan]]
UA = "semconv-probe/1.0"


def server_span(spans: Spans, response: httpx.Response) -> ReadableSpan:
    (span,) = [s for s in spans(response.headers["x-trace-id"]) if s.kind is SpanKind.SERVER]
    return span


async def test_a_request_carries_every_attribute_the_conventions_ask_for(
    harness: Harness, spans: Spans
) -> None:
    port = int(harness.url.rsplit(":", 1)[1])
    async with httpx.AsyncClient() as http:
        r = await http.get(
            f"{harness.url}/v1/things/3?color=blue&sig=abc&contact=jane%40example.com",
            headers={"User-Agent": UA},
        )
    assert r.status_code == 200
    span = server_span(spans, r)
    attributes = dict(span.attributes or {})
    query = attributes.pop(URL_QUERY)
    assert attributes == {
        HTTP_REQUEST_METHOD: "GET",
        URL_PATH: "/v1/things/3",
        URL_SCHEME: "http",
        SERVER_ADDRESS: "127.0.0.1",
        SERVER_PORT: port,
        CLIENT_ADDRESS: "127.0.0.1",
        USER_AGENT_ORIGINAL: UA,
        NETWORK_PROTOCOL_VERSION: "1.1",
        HTTP_ROUTE: "/v1/things/{id}",
        HTTP_RESPONSE_STATUS_CODE: 200,
        REQUEST_ID_ATTRIBUTE: r.headers["X-Request-ID"],  # the console's trace look-up key
    }
    assert "color=blue" in query and "sig=REDACTED" in query  # the conventions' list
    assert "jane" not in query  # personal data never leaves in a span
    assert span.name == "GET /v1/things/{id}"
    assert span.kind is SpanKind.SERVER and span.status.status_code is StatusCode.UNSET


async def test_an_unknown_method_is_other_and_named_http(harness: Harness, spans: Spans) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.request("PURGE", f"{harness.url}/v1/things/3")
    assert r.status_code == 405
    span = server_span(spans, r)
    assert span.attributes is not None
    assert span.attributes[HTTP_REQUEST_METHOD] == "_OTHER"
    assert span.attributes[HTTP_REQUEST_METHOD_ORIGINAL] == "PURGE"
    assert span.name == "HTTP /v1/things/{id}"
    assert ERROR_TYPE not in span.attributes  # a 4xx is the client's error, not the server's
    assert span.status.status_code is StatusCode.UNSET


async def test_a_server_error_has_its_type(harness: Harness, spans: Spans) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{harness.url}/boom")
    span = server_span(spans, r)
    assert span.attributes is not None
    assert span.attributes[HTTP_RESPONSE_STATUS_CODE] == 500
    assert span.attributes[ERROR_TYPE] == "RuntimeError"
    assert span.status.status_code is StatusCode.ERROR


async def thing(request: Request) -> Response:
    return JSONResponse({"id": request.path_params["id"]})


async def test_the_client_address_is_the_one_trusted_proxies_believe(
    tracer_provider: TracerProvider, spans: Spans
) -> None:
    obs = Observability(
        ObservabilityConfig(), tracer_provider=tracer_provider, configure_logs=False
    )
    app = obs.wrap(
        Starlette(routes=[Route("/things/{id}", thing)]),
        EdgeConfig(trusted_proxies=["10.0.0.0/8"]),
    )
    transport = httpx.ASGITransport(app=app, client=("10.1.1.1", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="https://api.example.com") as c:
        r = await c.get(
            "/things/1", headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
        )
    span = server_span(spans, r)
    assert span.attributes is not None
    assert span.attributes[CLIENT_ADDRESS] == "203.0.113.9"
    assert span.attributes[URL_SCHEME] == "https"
    assert (span.attributes[SERVER_ADDRESS], span.attributes[SERVER_PORT]) == (
        "api.example.com",
        443,
    )


@pytest.mark.parametrize(
    ("host", "scheme", "expected"),
    [
        (b"api.example.com", "https", ("api.example.com", 443)),
        (b"api.example.com:8443", "https", ("api.example.com", 8443)),
        (b"[::1]:9000", "http", ("::1", 9000)),
        (b"[::1]", "http", ("::1", 80)),
        (None, "http", ("10.0.0.5", 8000)),  # no Host: the listening address
    ],
)
def test_server_address_and_port(
    host: bytes | None, scheme: str, expected: tuple[str, int]
) -> None:
    assert server_address(host, {"scheme": scheme, "server": ("10.0.0.5", 8000)}) == expected


def test_known_methods_can_be_overridden_as_the_conventions_ask() -> None:
    assert "PATCH" in known_methods({}) and "PURGE" not in known_methods({})
    assert known_methods({KNOWN_METHODS_ENV: "GET, PURGE"}) == {"GET", "PURGE"}


def test_a_query_without_anything_sensitive_is_kept_as_sent() -> None:
    assert scrubbed_query(b"page=2&q=widget%20b20") == "page=2&q=widget%20b20"
    assert "hunter2" not in scrubbed_query(b"password=hunter2&x=1")


# --- the unsampled span made without the SDK, against the SDK's own ----------------------

CALLER = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENTS: list[dict[str, str]] = [
    {},
    {"traceparent": f"00-{CALLER}-00f067aa0ba902b7-01", "tracestate": "vendor=1,other=2"},
    {"traceparent": f"00-{CALLER}-00f067aa0ba902b7-00"},
    {"traceparent": f"00-{CALLER}-00f067aa0ba902b7-03"},  # sampled, random trace id
    {"traceparent": "00-zzzz-not-a-trace-01"},
]


def ours(provider: TracerProvider, carrier: dict[str, str]) -> trace.Span:
    spans = ServerSpans(provider)
    assert spans.records_nothing  # the path under test
    headers = [(k.encode(), v.encode()) for k, v in carrier.items()]
    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/", "headers": headers}
    exchange = Exchange(scope, _no_send)
    spans.request_start(exchange)
    exchange.completed(0.0, None)
    spans.complete(exchange)
    span: trace.Span = exchange.span
    return span


async def _no_send(message: Any) -> None:
    raise AssertionError("nothing is sent")


@pytest.mark.parametrize("carrier", PARENTS)
def test_the_unsampled_span_is_the_one_the_sdk_makes(carrier: dict[str, str]) -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF)
    parent = TraceContextTextMapPropagator().extract(carrier) if carrier else None
    sdk = provider.get_tracer("reference").start_span("GET", context=parent, kind=SpanKind.SERVER)
    made = ours(provider, carrier)
    assert type(made) is type(sdk)
    assert made.is_recording() is sdk.is_recording() is False
    a, b = made.get_span_context(), sdk.get_span_context()
    assert (a.is_valid, a.is_remote, a.trace_flags, a.trace_state) == (
        b.is_valid,
        b.is_remote,
        b.trace_flags,
        b.trace_state,
    )
    remote = trace.get_current_span(parent).get_span_context() if parent else None
    if remote is not None and remote.is_valid:  # the caller's trace continued
        assert a.trace_id == b.trace_id == remote.trace_id
        assert a.span_id != remote.span_id
    else:  # a fresh trace id each
        assert a.trace_id != b.trace_id
