"""/metrics over real HTTP: names and labels after traffic, scope protection, bounded labels."""

from __future__ import annotations

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from gateway.observability import Observability, ObservabilityConfig
from gateway.policies.envelope import AccessLines, RequestMetrics
from gateway.policies.metrics import GatewayMetrics, MetricsConfig, method_label
from tests.observability.conftest import Harness, StockBackend, running
from tests.servers import free_port

ADMIN = {"X-Test-Client": "ops-scraper:admin"}


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(all_samples: list[Sample], name: str, **labels: str) -> float:
    found = [s for s in all_samples if s.name == name and labels.items() <= s.labels.items()]
    assert found, f"no sample {name} {labels}"
    return sum(s.value for s in found)


async def test_metrics_after_traffic_have_the_expected_names_and_labels(harness: Harness) -> None:
    harness.backend.fail_next = 1
    async with httpx.AsyncClient() as http:
        assert (
            await http.get(f"{harness.url}/orders/1", headers={"X-Test-Client": "p-1"})
        ).status_code == 200
        assert (await http.get(f"{harness.url}/orders/2")).status_code == 200
        assert (await http.get(f"{harness.url}/v1/things/77")).status_code == 200
        assert (await http.get(f"{harness.url}/boom")).status_code == 500
        assert (await http.get(f"{harness.url}/nowhere/123")).status_code == 404
        assert (await http.delete(f"{harness.url}/v1/things/1")).status_code == 405
        r = await http.get(f"{harness.url}/metrics", headers=ADMIN)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=")
    s = samples(r.text)

    req = "trellis_http_requests_total"
    assert value(s, req, route="/orders/{order_id}", method="GET", status="200", client="p-1") == 1
    assert value(s, req, route="/orders/{order_id}", status="200", client="anonymous") == 1
    assert value(s, req, route="/v1/things/{id}", status="200") == 1
    assert value(s, req, route="/boom", status="500") == 1
    assert value(s, req, route="unmatched", status="404") == 1
    assert value(s, req, route="/v1/things/{id}", method="DELETE", status="405") == 1
    # bounded labels: no raw path ever becomes a label value
    label_values = {v for x in s for v in x.labels.values()}
    assert not {"/orders/1", "/v1/things/77", "/nowhere/123"} & label_values

    hist = "trellis_http_request_duration_seconds"
    assert value(s, f"{hist}_count", route="/orders/{order_id}", method="GET") == 2
    assert value(s, f"{hist}_bucket", route="/orders/{order_id}", le="+Inf") == 2
    assert value(s, "trellis_http_requests_in_flight") == 1  # the scrape itself

    # 4 backend calls, one retried after a 503: 5 attempts
    calls = "trellis_backend_requests_total"
    assert value(s, calls, backend="inventory", method="GET", status="200") == 4
    assert value(s, calls, backend="inventory", status="503") == 1
    assert value(s, "trellis_backend_errors_total", backend="inventory", kind="503") == 1
    assert value(s, "trellis_backend_retries_total", backend="inventory") == 1
    assert value(s, "trellis_backend_request_duration_seconds_count", backend="inventory") == 5

    breaker = "trellis_backend_breaker_state"
    assert value(s, breaker, backend="inventory", state="closed") == 1
    assert value(s, breaker, backend="inventory", state="open") == 0
    assert value(s, breaker, backend="inventory", state="half_open") == 0

    rl = "trellis_ratelimit_rejections_total"
    assert value(s, rl, limit="partner-standard") == 3
    harness.rate_limit_counts["partner-standard"] = 5  # read at scrape time
    async with httpx.AsyncClient() as http:
        again = samples((await http.get(f"{harness.url}/metrics", headers=ADMIN)).text)
    assert value(again, rl, limit="partner-standard") == 5


async def test_backend_transport_errors_are_counted_by_kind(
    tracer_provider: TracerProvider, backend: StockBackend
) -> None:
    async with running(tracer_provider, backend) as h, httpx.AsyncClient() as http:
        await backend.runner.cleanup()  # the backend goes away: connection refused
        r = await http.get(f"{h.url}/orders/1")
        assert r.status_code == 503
        s = samples((await http.get(f"{h.url}/metrics", headers=ADMIN)).text)
    assert (
        value(s, "trellis_backend_errors_total", backend="inventory", kind="BackendUnavailable")
        == 3
    )
    assert value(s, "trellis_backend_requests_total", backend="inventory", status="none") == 3
    assert value(s, "trellis_backend_retries_total", backend="inventory") == 2


async def test_metrics_need_the_admin_scope(harness: Harness) -> None:
    async with httpx.AsyncClient() as http:
        anonymous = await http.get(f"{harness.url}/metrics")
        partner = await http.get(f"{harness.url}/metrics", headers={"X-Test-Client": "p-1:partner"})
        admin = await http.get(f"{harness.url}/metrics", headers=ADMIN)
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    assert partner.status_code == 403
    assert admin.status_code == 200 and "trellis_http_requests_total" in admin.text


async def test_public_metrics_need_no_token(
    tracer_provider: TracerProvider, backend: StockBackend
) -> None:
    async with running(tracer_provider, backend, metrics={"public": True}) as h:
        async with httpx.AsyncClient() as http:
            r = await http.get(f"{h.url}/metrics")
    assert r.status_code == 200 and "trellis_http_requests_in_flight" in r.text


async def test_metrics_on_a_separate_port_are_not_on_the_gateway(
    tracer_provider: TracerProvider, backend: StockBackend
) -> None:
    port = free_port()
    async with running(tracer_provider, backend, metrics={"port": port}) as h:
        async with httpx.AsyncClient() as http:
            await http.get(f"{h.url}/orders/3")
            on_gateway = await http.get(f"{h.url}/metrics", headers=ADMIN)
            separate = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert on_gateway.status_code == 404
    assert separate.status_code == 200
    s = samples(separate.text)
    assert value(s, "trellis_http_requests_total", route="/orders/{order_id}") == 1


def test_disabled_metrics_add_no_route_and_no_middleware() -> None:
    obs = Observability(ObservabilityConfig.model_validate({"metrics": {"enabled": False}}))
    assert obs.routes() == []
    envelope = obs.wrap(lambda scope, receive, send: None)  # type: ignore[arg-type,return-value]
    kinds = {type(policy) for policy in envelope.policies}
    assert RequestMetrics not in kinds
    assert AccessLines in kinds


def test_a_protected_route_without_a_protector_is_refused() -> None:
    with pytest.raises(ValueError, match="not public"):
        GatewayMetrics(MetricsConfig()).route()
    with pytest.raises(ValueError):
        MetricsConfig(latency_buckets=[1.0, 0.5])


def test_invented_methods_share_one_label() -> None:
    assert method_label("BREW") == method_label("PROPFIND") == "_OTHER"
    assert method_label("PATCH") == "PATCH"


async def test_a_failing_count_source_does_not_break_the_scrape() -> None:
    metrics = GatewayMetrics()

    def broken() -> dict[str, int]:
        raise RuntimeError("store down")

    metrics.watch_counts("trellis_things", "doc", "kind", broken)
    metrics.watch_rate_limits(lambda: {"burst": 2})
    text = (await metrics.scrape()).decode()
    assert 'trellis_ratelimit_rejections_total{limit="burst"} 2.0' in text


def test_loop_series_render_exactly_as_prometheus_client_would() -> None:
    """The per-request series are plain counts on the loop; their exposition must not differ
    from prometheus-client's own Counter and Histogram fed the same values (buckets are
    inclusive upper bounds, the sum and count follow)."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    m = GatewayMetrics(MetricsConfig())
    ref = CollectorRegistry()
    hist = Histogram(
        "trellis_backend_request_duration_seconds",
        "Duration of one backend attempt.",
        ["backend"],
        buckets=m.config.latency_buckets,
        registry=ref,
    )
    calls = Counter(
        "trellis_backend_requests",
        "Attempts sent to a backend (each retry counts), by backend, method and status.",
        ["backend", "method", "status"],
        registry=ref,
    )
    for value in (0.0001, 0.003, 0.005, 0.02, 0.7, 3.0, 99.0):
        for backend in ("crm", "erp"):
            hist.labels(backend).observe(value)
            calls.labels(backend, "GET", "200").inc()
            m.on_attempt(backend, "GET", 200, None, value, 1, "closed")
    m.refresh()

    def lines(text: bytes, prefix: str) -> list[str]:
        return sorted(
            line
            for line in text.decode().splitlines()
            if line.startswith(prefix) and "_created" not in line
        )

    for name in ("trellis_backend_request_duration_seconds", "trellis_backend_requests"):
        assert lines(m.render(), name) == lines(generate_latest(ref), name)
