"""Metrics policy: Prometheus series for requests, backends, breakers and rate limiting.

``prometheus-client`` does the bookkeeping and the text exposition (a labelled counter
increment costs 1-2 microseconds). Labels stay bounded: routes are templates, never raw
paths; the client label is a client id only for authenticated principals, else
``anonymous``; backend errors are labelled by error kind. Breaker states and rate-limit
counts are read from their owners at scrape time, so nothing has to push them.

Each worker process keeps its own numbers; with several workers, ``/metrics`` (and the
separate metrics port) shows the sum of all of them (``gateway.policies.worker_metrics``).
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, disable_created_metrics
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.policies.worker_metrics import WorkerMetricsShare
from gateway.principal import principal_of

log = logging.getLogger("trellis.metrics")

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BREAKER_STATES: tuple[str, ...] = ("closed", "open", "half_open")
ANONYMOUS = "anonymous"
_CONTENT_TYPE = {"Content-Type": CONTENT_TYPE_LATEST}
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    """The request method, or ``_OTHER`` so invented methods cannot add series."""
    return method if method in METHODS else "_OTHER"


class MetricsConfig(BaseModel):
    """Whether and how ``/metrics`` is exposed, and who may read it."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    path: str = Field("/metrics", pattern=r"^/[A-Za-z0-9/_.-]*$")
    public: bool = Field(False, description="Serve without a token (only on a private network).")
    require_scope: str = Field("admin", min_length=1, description="Scope a scraper's token needs.")
    port: int | None = Field(
        None, ge=1, le=65535, description="Serve on this separate port instead of the gateway's."
    )
    host: str = Field("127.0.0.1", description="Address of the separate metrics port.")
    latency_buckets: list[float] = Field(default_factory=lambda: list(DEFAULT_BUCKETS))

    @model_validator(mode="after")
    def _sorted_buckets(self) -> MetricsConfig:
        if not self.latency_buckets or sorted(self.latency_buckets) != self.latency_buckets:
            raise ValueError("latency_buckets must be a non-empty ascending list")
        return self


class _Breaker(Protocol):
    @property
    def state(self) -> Any: ...


class BreakerHolder(Protocol):
    """What the breaker collector needs of a backend client (``BackendClient`` satisfies it)."""

    @property
    def breaker(self) -> _Breaker: ...


class _Snapshot:
    """The scrape-time series, as last refreshed on the event loop.

    Sources (breakers, rate-limit counts) are read on the loop, where their owners live;
    only the rendering of numbers already taken runs in a worker thread.
    """

    def __init__(self) -> None:
        self.metrics: list[Metric] = []

    def collect(self) -> Iterable[Metric]:
        return list(self.metrics)

    def describe(self) -> Iterable[Metric]:
        return ()  # names are dynamic; skip prometheus-client's duplicate-name check


class LoopCounter:
    """A labelled counter kept as plain floats, updated on the event loop only.

    prometheus-client's ``Counter`` takes a lock and validates per ``inc``; every request
    counts several series, and the event loop is one thread. The values are copied into a
    metric family on the loop at scrape time (``GatewayMetrics.refresh``) and rendered from
    that copy in a worker thread.
    """

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name, self.documentation, self.labels = name, documentation, list(labels)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *labels: str) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + 1.0

    def family(self) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, value in self.values.items():
            family.add_metric(list(labels), value)
        return family


class LoopHistogram:
    """A labelled histogram kept as plain counts per bucket, updated on the event loop only
    (see ``LoopCounter``). Buckets are upper bounds, inclusive, as Prometheus's ``le``."""

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.name, self.documentation, self.labels = name, documentation, list(labels)
        self.bounds = [float(b) for b in buckets if b != float("inf")]
        # per series: a count per bound, one for +Inf, then the sum
        self.values: dict[tuple[str, ...], list[float]] = {}

    def observe(self, value: float, *labels: str) -> None:
        entry = self.values.get(labels)
        if entry is None:
            entry = self.values[labels] = [0.0] * (len(self.bounds) + 2)
        entry[bisect_left(self.bounds, value)] += 1
        entry[-1] += value

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        names = [floatToGoString(b) for b in self.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        for labels, entry in self.values.items():
            cumulative, running = [], 0.0
            for name, count in zip(names, entry[:-1], strict=True):
                running += count
                cumulative.append((name, running))
            family.add_metric(list(labels), cumulative, entry[-1])
        return family


class GatewayMetrics:
    """The gateway's series in one registry; also the backend-call observer of the clients."""

    def __init__(
        self, config: MetricsConfig | None = None, registry: CollectorRegistry | None = None
    ) -> None:
        self.config = config or MetricsConfig()
        # no ``_created`` twin of every counter: half the series, and nobody graphs them
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry or CollectorRegistry(auto_describe=False)
        self._sources: list[tuple[str, Callable[[], Iterable[Metric]]]] = []
        self.share: WorkerMetricsShare | None = None  # set when workers share one /metrics
        self._snapshot = _Snapshot()
        self.registry.register(self._snapshot)
        buckets = self.config.latency_buckets
        r = self.registry
        self.requests = LoopCounter(
            "trellis_http_requests",
            "HTTP requests answered, by route template, method, status and client id.",
            ["route", "method", "status", "client"],
        )
        self.latency = LoopHistogram(
            "trellis_http_request_duration_seconds",
            "Time from request start to the end of the response, by route template and method.",
            ["route", "method"],
            buckets,
        )
        # counted in two plain ints on the event loop, read at scrape time: a Gauge's
        # locked inc and dec on every request cost more than the count itself
        self.started = 0
        self.finished = 0
        self.in_flight = Gauge(
            "trellis_http_requests_in_flight", "Requests being processed now.", registry=r
        )
        self.in_flight.set_function(lambda: self.started - self.finished)
        self.backend_calls = LoopCounter(
            "trellis_backend_requests",
            "Attempts sent to a backend (each retry counts), by backend, method and status.",
            ["backend", "method", "status"],
        )
        self.backend_errors = LoopCounter(
            "trellis_backend_errors",
            "Failed backend attempts: exception kind, or the HTTP status for 429 and 5xx.",
            ["backend", "kind"],
        )
        self.backend_retries = LoopCounter(
            "trellis_backend_retries", "Attempts after the first of a call.", ["backend"]
        )
        self.backend_latency = LoopHistogram(
            "trellis_backend_request_duration_seconds",
            "Duration of one backend attempt.",
            ["backend"],
            buckets,
        )
        self._loop_series: list[LoopCounter | LoopHistogram] = [
            self.requests,
            self.latency,
            self.backend_calls,
            self.backend_errors,
            self.backend_retries,
            self.backend_latency,
        ]

    # --- the CallObserver protocol (system_apis.observe) ----------------------------------

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
        """Count one backend attempt; called by the client base after every try."""
        self.backend_calls.inc(backend, method, str(status) if status else "none")
        self.backend_latency.observe(duration_s, backend)
        if error is not None:
            self.backend_errors.inc(backend, error)
        elif status is not None and (status == 429 or status >= 500):
            self.backend_errors.inc(backend, str(status))
        if attempt > 1:
            self.backend_retries.inc(backend)

    # --- scrape-time sources --------------------------------------------------------------

    def watch_breakers(self, clients: Mapping[str, BreakerHolder]) -> None:
        """Expose each client's breaker as ``trellis_backend_breaker_state{backend,state}``."""

        def collect() -> Iterator[Metric]:
            family = GaugeMetricFamily(
                "trellis_backend_breaker_state",
                "1 for the current circuit-breaker state of each backend, 0 for the others.",
                labels=["backend", "state"],
            )
            for name, client in clients.items():
                current = str(client.breaker.state)
                for state in BREAKER_STATES:
                    family.add_metric([name, state], 1.0 if state == current else 0.0)
            yield family

        self._sources.append(("trellis_backend_breaker_state", collect))

    def watch_counts(
        self, name: str, documentation: str, label: str, source: Callable[[], Mapping[str, int]]
    ) -> None:
        """Expose a monotonically growing mapping (e.g. a policy's ``stats()``) as a counter."""

        def collect() -> Iterator[Metric]:
            family = CounterMetricFamily(name, documentation, labels=[label])
            for key, value in sorted(dict(source()).items()):
                family.add_metric([str(key)], float(value))
            yield family

        self._sources.append((name, collect))

    def watch_rate_limits(self, stats: Callable[[], Mapping[str, int]]) -> None:
        """``trellis_ratelimit_rejections_total{limit}`` from the rate-limit policy's counts."""
        self.watch_counts(
            "trellis_ratelimit_rejections",
            "Requests refused by the rate-limit policy, by limit.",
            "limit",
            stats,
        )

    # --- exposition -----------------------------------------------------------------------

    def refresh(self) -> None:
        """Read the scrape-time sources now (on the loop); a failing one is left out, logged."""
        taken: list[Metric] = [series.family() for series in self._loop_series]
        for name, collect in self._sources:
            try:
                taken.extend(collect())
            except Exception:  # one broken source must not break the whole scrape
                log.exception("metrics source failed", extra={"metric": name})
        self._snapshot.metrics = taken

    def render(self) -> bytes:
        """The Prometheus text exposition of every series (call ``refresh`` first)."""
        return generate_latest(self.registry)

    def current(self) -> list[Metric]:
        """Every series as of now, read on the loop (what a worker shares with the others)."""
        self.refresh()
        return list(self.registry.collect())

    async def scrape(self) -> bytes:
        """Refresh on the loop, render in a worker thread: rendering costs several
        microseconds a series, which for a large registry would stall every request. With
        workers sharing one ``/metrics``, the others' series are read and summed there too."""
        share = self.share
        if share is not None:
            return await asyncio.to_thread(share.render, self.current())
        self.refresh()
        return await asyncio.to_thread(self.render)

    async def endpoint(self, request: Request) -> Response:
        """``GET /metrics`` on the gateway's port (see ``route`` for its protection)."""
        return Response(await self.scrape(), media_type=CONTENT_TYPE_LATEST)

    async def serve_port(self) -> web.AppRunner:
        """Serve ``GET {path}`` unauthenticated on ``config.port`` (a private admin port).

        ``reuse_port`` lets several workers share it, as they share the gateway's port.
        """

        async def handle(request: web.Request) -> web.Response:
            return web.Response(body=await self.scrape(), headers=_CONTENT_TYPE)

        app = web.Application()
        app.router.add_get(self.config.path, handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port, reuse_port=True)
        await site.start()
        return runner

    def route(self, protect: Callable[[ASGIApp], ASGIApp] | None = None) -> Route:
        """The metrics route; unless ``public``, wrapped by ``protect`` (a scope check).

        Pass ``lambda app: RequireScopes(app, read=[config.require_scope])``; a non-public
        config without ``protect`` is refused rather than served open by mistake.
        """
        app: ASGIApp = _AsgiEndpoint(self.endpoint)
        if not self.config.public:
            if protect is None:
                raise ValueError("metrics are not public: pass protect= (a scope check)")
            app = protect(app)
        return Route(self.config.path, app, methods=["GET"])


class _AsgiEndpoint:
    """An endpoint as an ASGI app object (Starlette treats a plain function as an endpoint)."""

    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.endpoint(Request(scope, receive))
        await response(scope, receive, send)


def count_request(
    metrics: GatewayMetrics, scope: Scope, route: str, status: int, duration_s: float
) -> None:
    """Count one answered request (the envelope calls it once the response is complete)."""
    method = method_label(scope["method"])
    principal = principal_of(scope)
    client = principal.client_id if principal is not None else ANONYMOUS
    metrics.requests.inc(route, method, str(status), client)
    metrics.latency.observe(duration_s, route, method)
