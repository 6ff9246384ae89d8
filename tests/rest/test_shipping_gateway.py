"""The shipping carrier, declared in YAML alone (config/backends.yaml, config/fixtures/), through
the whole gateway: paging, filters, 404s, a backend 500, a timeout, OpenAPI, readiness, metrics
and scopes, like any built-in system API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from tests.conftest import SandboxThread
from tests.gateway.helpers import test_settings, token
from tests.servers import serve

BASE = "/system/v1/shipping"
TRACE_ID = "5cf92f3577b34da6a3ce929d0e0e4736"


@dataclass
class Gw:
    url: str
    reader: str  # system:read and system:write
    admin: str  # every scope (/metrics)
    outsider: str  # experience:web only
    spans: InMemorySpanExporter

    async def call(
        self,
        path: str,
        bearer: str | None = None,
        headers: dict[str, str] | None = None,
        **params: str,
    ) -> tuple[int, CIMultiDict[str], Any]:
        headers = dict(headers or {})
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        async with (
            aiohttp.ClientSession() as s,
            s.get(self.url + path, headers=headers, params=params) as r,
        ):
            text = await r.text()
            ctype = r.headers.get("Content-Type", "")
            body = await r.json(content_type=None) if "json" in ctype else text
            return r.status, CIMultiDict(r.headers), body


@pytest.fixture(scope="module")
async def gw(sandbox: SandboxThread, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gw]:
    settings = test_settings(
        sandbox.base_port,
        tmp_path_factory.mktemp("shipping"),
        backends={
            "shipping": {
                "timeouts": {"connect_s": 1, "read_s": 0.5, "total_s": 0.5},
                "retry": {"max_attempts": 2, "base_delay_s": 0.01, "max_delay_s": 0.02},
                "breaker": {"failure_threshold": 1000},
            }
        },
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))  # readable once answered
    async with serve(create_app(settings, tracer_provider=provider)) as url:
        yield Gw(
            url,
            await token(url, "test-system-writer"),
            await token(url, "test-everything"),
            await token(url, "test-nothing"),
            exporter,
        )


def assert_problem(status: int, headers: CIMultiDict[str], body: Any, expected: int) -> None:
    assert status == expected, body
    assert headers["Content-Type"].startswith("application/problem+json"), headers
    assert body["status"] == expected and body["title"] and body["type"]
    assert "Traceback" not in str(body)


async def test_shipments_page_through_every_record_once(
    gw: Gw, clean_sandbox: SandboxThread
) -> None:
    ids: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "5", **({"cursor": cursor} if cursor else {})}
        status, _, body = await gw.call(f"{BASE}/shipments", gw.reader, **params)
        assert status == 200, body
        assert set(body) == {"items", "next_cursor"}
        ids += [item["id"] for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert ids == [f"SHP-{n}" for n in range(100001, 100013)]
    # the vendor was asked with its own parameter names, once per page
    assert (await clean_sandbox.hits("shipping"))["GET /v2/shipments"] == 3


async def test_a_shipment_in_the_declared_model(gw: Gw, clean_sandbox: SandboxThread) -> None:
    status, _, body = await gw.call(f"{BASE}/shipments/SHP-100002", gw.reader)
    assert status == 200, body
    assert body == {
        "id": "SHP-100002",
        "status": "in_transit",
        "reference": "ORD-2002",
        "service": "standard",
        "weight_kg": 0.75,
        "destination": {"city": "Berlin", "postal_code": "10115", "country": "DE"},
        "created_at": "2026-11-02T09:11:00Z",
        "estimated_delivery": "2026-11-05",
    }


async def test_filters_pass_through_and_link_paging_follows(
    gw: Gw, clean_sandbox: SandboxThread
) -> None:
    status, _, body = await gw.call(f"{BASE}/shipments", gw.reader, status="delivered", limit="50")
    assert status == 200 and body["items"]
    assert {s["status"] for s in body["items"]} == {"delivered"}

    events: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"shipment": "SHP-100004", "limit": "3", **({"cursor": cursor} if cursor else {})}
        status, _, body = await gw.call(f"{BASE}/tracking-events", gw.reader, **params)
        assert status == 200, body
        events += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [e["code"] for e in events] == ["label_created", "picked_up", "in_transit", "delivered"]
    assert {e["shipment_id"] for e in events} == {"SHP-100004"}


async def test_an_unknown_shipment_is_a_404_problem(gw: Gw, clean_sandbox: SandboxThread) -> None:
    status, headers, body = await gw.call(f"{BASE}/shipments/SHP-999999", gw.reader)
    assert_problem(status, headers, body, 404)
    assert (await clean_sandbox.hits("shipping"))["GET /v2/shipments/SHP-999999"] == 1
    # outside the declared id syntax: the same answer, and no call
    await clean_sandbox.reset_hits("shipping")
    for bad in ("0", "-1", "shp-100001", "SHP-1"):
        status, headers, body = await gw.call(f"{BASE}/shipments/{bad}", gw.reader)
        assert_problem(status, headers, body, 404)
    assert await clean_sandbox.hits("shipping") == {}


async def test_bad_query_parameters_are_400_problems_before_any_call(
    gw: Gw, clean_sandbox: SandboxThread
) -> None:
    for params in ({"limit": "51"}, {"cursor": "not-ours!"}, {"status": "x" * 300}):
        status, headers, body = await gw.call(f"{BASE}/shipments", gw.reader, **params)
        assert_problem(status, headers, body, 400)
        assert body["errors"][0]["path"].startswith("query/")
    assert await clean_sandbox.hits("shipping") == {}


async def test_a_backend_500_is_a_problem_not_a_traceback(
    gw: Gw, clean_sandbox: SandboxThread
) -> None:
    await clean_sandbox.set_faults("shipping", error_rate=1, error_statuses=[500])
    status, headers, body = await gw.call(f"{BASE}/shipments", gw.reader)
    assert_problem(status, headers, body, 503)
    assert body["backend"] == "shipping" and body["type"] == "/problems/backend-unavailable"
    # retried once (max_attempts: 2), as for any backend
    assert (await clean_sandbox.hits("shipping"))["GET /v2/shipments"] == 2


async def test_a_slow_carrier_is_a_504_problem(gw: Gw, clean_sandbox: SandboxThread) -> None:
    await clean_sandbox.set_faults("shipping", latency_ms=1500)
    status, headers, body = await gw.call(f"{BASE}/shipments/SHP-100001", gw.reader)
    assert_problem(status, headers, body, 504)


async def test_a_token_without_the_scope_is_refused(gw: Gw, clean_sandbox: SandboxThread) -> None:
    status, headers, body = await gw.call(f"{BASE}/shipments", gw.outsider)
    assert_problem(status, headers, body, 403)
    assert 'error="insufficient_scope"' in headers["WWW-Authenticate"]
    status, headers, body = await gw.call(f"{BASE}/shipments")
    assert_problem(status, headers, body, 401)
    assert await clean_sandbox.hits("shipping") == {}


async def test_openapi_describes_the_declared_resources(gw: Gw) -> None:
    status, _, doc = await gw.call("/openapi.json")
    assert status == 200
    paths = doc["paths"]
    listing = paths[f"{BASE}/shipments"]["get"]
    one = paths[f"{BASE}/shipments/{{id}}"]["get"]
    assert f"{BASE}/tracking-events" in paths and f"{BASE}/tracking-events/{{id}}" in paths
    assert {p["name"] for p in listing["parameters"]} >= {"cursor", "limit", "status", "reference"}
    limit = next(p for p in listing["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 50
    assert {"404", "502", "503", "504"} <= set(one["responses"])
    schemas = doc["components"]["schemas"]
    shipment = schemas["ShippingShipment"]
    assert set(shipment["required"]) == {"id", "status", "service", "destination", "created_at"}
    assert shipment["properties"]["created_at"]["format"] == "date-time"
    assert "ShippingDestination" in schemas and "ShippingTrackingEvent" in schemas
    ref = listing["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    page = schemas[ref.rsplit("/", 1)[1]]
    assert set(page["properties"]) == {"items", "next_cursor"}
    assert "system:read" in str(listing.get("security"))


async def test_readiness_and_metrics_include_the_carrier(
    gw: Gw, clean_sandbox: SandboxThread
) -> None:
    status, _, body = await gw.call("/readyz", gw.admin)
    assert status == 200, body
    assert body["backends"]["shipping"]["reachable"] is True
    await gw.call(f"{BASE}/shipments", gw.reader, limit="2")
    status, _, text = await gw.call("/metrics", gw.admin)
    assert status == 200, text
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    calls = [
        s
        for s in samples
        if s.name == "trellis_backend_requests_total" and s.labels.get("backend") == "shipping"
    ]
    assert calls and sum(s.value for s in calls) >= 1
    routes = {s.labels.get("route") for s in samples if s.name == "trellis_http_requests_total"}
    assert f"{BASE}/shipments" in routes


async def test_a_call_is_one_trace_down_to_the_carrier(
    gw: Gw, clean_sandbox: SandboxThread
) -> None:
    gw.spans.clear()
    parent = {"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}
    status, headers, _ = await gw.call(f"{BASE}/shipments", gw.reader, headers=parent)
    assert status == 200 and headers["X-Trace-Id"] == TRACE_ID
    trace = [
        s
        for s in gw.spans.get_finished_spans()
        if s.context is not None and format(s.context.trace_id, "032x") == TRACE_ID
    ]
    [server] = [s for s in trace if s.kind is SpanKind.SERVER]
    assert server.name == f"GET {BASE}/shipments"
    clients = [s for s in trace if s.kind is SpanKind.CLIENT]
    assert clients and all(
        s.attributes is not None and s.attributes.get("trellis.backend") == "shipping"
        for s in clients
    )
    stats = await clean_sandbox.control("shipping", "GET", "/__stats")
    assert stats["trace_ids"].get(TRACE_ID) == stats["total"] == 1


def test_the_fixture_is_part_of_the_repository() -> None:
    fixture = Path(__file__).parents[2] / "config" / "fixtures" / "shipping.yaml"
    assert fixture.is_file()
