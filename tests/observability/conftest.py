"""A small observed app over real HTTP, a loopback backend that records what it received, and
one in-memory tracer provider for the whole session (OpenTelemetry's globals are set once)."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import HANDLERS
from gateway.oauth.scopes import RequireScopes
from gateway.observability import Observability, ObservabilityConfig
from gateway.principal import PRINCIPAL_KEY, Principal
from system_apis.client import BackendClient
from system_apis.config import BackendConfig
from system_apis.observe import step
from tests.servers import free_port, serve

# --- tracing: one provider per session ----------------------------------------------------


@pytest.fixture(scope="session")
def span_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="session")
def tracer_provider(span_exporter: InMemorySpanExporter) -> TracerProvider:
    """Synchronous export, so a request's spans are readable as soon as its response is."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    return provider


@pytest.fixture
def spans(span_exporter: InMemorySpanExporter) -> Iterator[Callable[[str], list[ReadableSpan]]]:
    """``spans(trace_id_hex)``: the finished spans of one trace."""
    span_exporter.clear()

    def of_trace(trace_id: str) -> list[ReadableSpan]:
        return [
            s
            for s in span_exporter.get_finished_spans()
            if s.context is not None and format(s.context.trace_id, "032x") == trace_id
        ]

    yield of_trace
    span_exporter.clear()


# --- a backend on loopback ----------------------------------------------------------------


class StockBackend:
    """``GET /stock/{sku}`` answers JSON; records each request's headers; can fail on demand."""

    def __init__(self) -> None:
        self.received: list[dict[str, str]] = []
        self.fail_next = 0
        self.app = web.Application()
        self.app.add_routes([web.get("/stock/{sku}", self.stock)])
        self.port = free_port()
        self.runner = web.AppRunner(self.app, access_log=None)

    async def stock(self, request: web.Request) -> web.Response:
        self.received.append(dict(request.headers))
        if self.fail_next:
            self.fail_next -= 1
            return web.json_response({"message": "try later"}, status=503)
        return web.json_response({"sku": request.match_info["sku"], "on_hand": 7})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def backend() -> AsyncIterator[StockBackend]:
    b = StockBackend()
    await b.runner.setup()
    await web.TCPSite(b.runner, "127.0.0.1", b.port).start()
    yield b
    await b.runner.cleanup()


# --- the observed app ---------------------------------------------------------------------

TEST_CLIENT_HEADER = b"x-test-client"


class HeaderPrincipal:
    """Stands in for the OAuth middleware: ``X-Test-Client: id[:scope,scope]`` is the principal.

    The observability policies only read ``scope["trellis.principal"]``; how a token becomes
    a principal is the OAuth policy's business and tested there.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        for name, value in scope.get("headers", ()):
            if name == TEST_CLIENT_HEADER:
                client_id, _, scopes = value.decode().partition(":")
                scope[PRINCIPAL_KEY] = Principal(
                    client_id=client_id,
                    scopes=frozenset(scopes.split(",")) if scopes else frozenset(),
                    tier="internal",
                    issuer="test",
                    subject=client_id,
                    token_id=None,
                    expires_at=0.0,
                )
        await self.app(scope, receive, send)


class ObservedApp(Starlette):
    """The wiring recommended for the gateway: the observability policies wrap the whole
    Starlette stack (outside its server-error middleware), so even a crash's 500 carries the
    trace id header and is counted with its final status."""

    def __init__(self, obs: Observability, **kwargs: Any) -> None:
        self.obs = obs
        super().__init__(**kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        return self.obs.wrap(super().build_middleware_stack())


@dataclass
class Harness:
    url: str
    obs: Observability
    backend: StockBackend
    client: BackendClient
    log_stream: io.StringIO
    rate_limit_counts: dict[str, int] = field(default_factory=dict)

    def log_lines(self) -> list[str]:
        return [line for line in self.log_stream.getvalue().splitlines() if line.strip()]


def build_app(obs: Observability, client: BackendClient, counts: dict[str, int]) -> ObservedApp:
    chatty = logging.getLogger("trellis.test.chatty")

    async def order(request: Request) -> Response:
        with step("load order", **{"order.id": request.path_params["order_id"]}):
            first = (await client.request("GET", "/stock/A")).json_object()
        with step("check stock"):
            second = (await client.request("GET", "/stock/B")).json_object()
        return JSONResponse({"order": request.path_params["order_id"], "stock": [first, second]})

    async def thing(request: Request) -> Response:
        return JSONResponse({"id": request.path_params["id"]})

    async def boom(request: Request) -> Response:
        raise RuntimeError("unexpected failure")

    async def talk(request: Request) -> Response:
        jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJwYXJ0bmVyLWEifQ.c2lnbmF0dXJlLWJ5dGVz"
        chatty.info("signup from %s", "jane.doe@example.com")
        chatty.info("forwarding token %s", jwt)
        chatty.warning("card on file: 4111 1111 1111 1111; phone +44 20 7946 0958")
        chatty.info("login attempt %s", {"user": "jane", "password": "hunter2"})
        chatty.info("profile", extra={"contact": {"email": "jane@example.com"}, "api_key": "k-1"})
        return JSONResponse({"ok": True})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await obs.start()  # before the backend session exists: it must be instrumented
        await client.start()
        obs.metrics.watch_breakers({"inventory": client})
        obs.metrics.watch_rate_limits(lambda: counts)
        try:
            yield
        finally:
            await client.close()
            await obs.close()

    routes = [
        Route("/orders/{order_id}", order),
        Mount("/v1", routes=[Route("/things/{id}", thing)]),
        Route("/boom", boom),
        Route("/talk", talk),
        *obs.routes(
            protect=lambda app: RequireScopes(app, read=[obs.config.metrics.require_scope])
        ),
    ]
    return ObservedApp(
        obs,
        routes=routes,
        lifespan=lifespan,
        exception_handlers=dict(HANDLERS),
        middleware=[Middleware(HeaderPrincipal)],
    )


def backend_client(url: str) -> BackendClient:
    config = BackendConfig.model_validate(
        {
            "base_url": url,
            "retry": {"max_attempts": 3, "base_delay_s": 0.001, "max_delay_s": 0.01},
            "timeouts": {"connect_s": 1, "read_s": 1, "total_s": 2},
        }
    )
    return BackendClient(config, url, name="inventory")


@contextlib.asynccontextmanager
async def running(
    tracer_provider: TracerProvider, backend: StockBackend, **config: Any
) -> AsyncIterator[Harness]:
    """The observed app served by uvicorn; its log lines are complete once the block exits."""
    stream = io.StringIO()
    obs = Observability(
        ObservabilityConfig.model_validate(config),
        tracer_provider=tracer_provider,
        log_stream=stream,
    )
    client = backend_client(backend.url)
    counts = {"partner-standard": 3, "burst": 1}
    app = build_app(obs, client, counts)
    async with serve(app) as url:
        yield Harness(url, obs, backend, client, stream, counts)


@pytest.fixture
async def harness(tracer_provider: TracerProvider, backend: StockBackend) -> AsyncIterator[Harness]:
    async with running(tracer_provider, backend) as h:
        yield h
