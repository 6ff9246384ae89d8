"""One experience request through the whole gateway is one trace: server span, process steps,
one client span per backend call, parented correctly; an incoming traceparent is continued and
reaches the sandbox backends."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import SpanKind

from gateway.app import create_app
from system_apis.config import BACKEND_NAMES
from system_apis.sandbox import seed
from tests.conftest import SandboxThread
from tests.gateway.helpers import test_settings, token
from tests.servers import serve

pytestmark = pytest.mark.slow  # a whole gateway against every sandbox backend

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def plain_get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as r:
        return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()


@pytest.fixture
async def gateway_url(
    sandbox: SandboxThread, tracer_provider: TracerProvider, tmp_path: Path
) -> AsyncIterator[str]:
    settings = test_settings(sandbox.base_port, tmp_path)
    async with serve(create_app(settings, tracer_provider=tracer_provider)) as url:
        yield url


async def test_experience_request_is_one_trace(
    gateway_url: str,
    clean_sandbox: SandboxThread,
    spans: Callable[[str], list[ReadableSpan]],
) -> None:
    web_token = await token(gateway_url, "web-app")
    for name in BACKEND_NAMES:
        await clean_sandbox.reset_hits(name)
    person = seed.people()[41]
    # a plain client: an instrumented aiohttp session would replace our traceparent with its own
    status, headers, body = await asyncio.to_thread(
        plain_get,
        f"{gateway_url}/experience/web/v1/customers/{person.crm_contact_id}",
        {"Authorization": f"Bearer {web_token}", "traceparent": PARENT},
    )
    assert status == 200, body
    assert headers["x-trace-id"] == TRACE_ID  # the caller's trace was continued

    trace = spans(TRACE_ID)
    by_id = {s.context.span_id: s for s in trace if s.context is not None}
    servers = [s for s in trace if s.kind is SpanKind.SERVER]
    assert len(servers) == 1
    server = servers[0]
    assert server.name == "GET /experience/web/v1/customers/{id}"
    assert server.parent is not None and server.parent.span_id == int("00f067aa0ba902b7", 16)
    assert server.attributes is not None and server.attributes.get("enduser.id") == "web-app"

    def ancestors(span: ReadableSpan) -> list[ReadableSpan]:
        out = []
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            out.append(span)
        return out

    internal = [s for s in trace if s.kind is SpanKind.INTERNAL]
    clients = [s for s in trace if s.kind is SpanKind.CLIENT]
    assert internal, "the process steps are traced"
    assert all(server in ancestors(s) for s in internal + clients)  # one tree under the server
    assert clients and all(
        any(a.kind is SpanKind.INTERNAL for a in ancestors(c)) for c in clients
    ), "every backend call happens inside a process step"
    backends_called = {c.attributes.get("trellis.backend") for c in clients if c.attributes}
    assert {"crm", "erp", "billing", "support", "marketing"} <= backends_called

    # one client span per backend call, and every call carried the caller's trace id
    calls = 0
    for name in BACKEND_NAMES:
        stats = await clean_sandbox.control(name, "GET", "/__stats")
        calls += stats["total"]
        assert stats["trace_ids"].get(TRACE_ID, 0) == stats["total"], name
    assert len(clients) == calls
