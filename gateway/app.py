"""Assemble the gateway: edge policies around the routes of every layer, one lifespan.

Request path: admission (503 past the worker's limit of requests in progress) -> envelope
(request id, span, metrics, access log, security headers; also the server-error layer) ->
CORS -> body limit -> authentication -> rate limit -> Starlette's exception handlers -> route
(each mount declares its scopes) -> experience / process / system views. Everything not
explicitly public requires a scope.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import ASGIApp

from gateway.oauth import OAuth
from gateway.oauth.config import public_base_url, with_issuer
from gateway.oauth.scopes import RequireScopes
from system_apis.registry import SystemApis

from .console.component import Console
from .docs import docs_routes
from .errors import HANDLERS
from .events.component import EventBus
from .gc_tuning import restore, tune_after_startup
from .health import health_routes
from .layers import Layers, build_layers
from .observability import Observability
from .policies.admission import AdmissionLimit
from .policies.body_limit import BodyLimitMiddleware
from .policies.edge import cors_middleware
from .policies.handled_errors import HandledErrors
from .policies.hosts import AllowedHosts
from .policies.ratelimit import RateLimitMiddleware, RateLimitPolicy
from .policies.routing import served_directly
from .policies.worker_metrics import WorkerMetricsShare
from .settings import Settings, load_settings
from .stores.readiness import StoreProbe

log = logging.getLogger("trellis.gateway")

PUBLIC_PATHS: tuple[str, ...] = (
    "/healthz",
    "/readyz",
    "/oauth/token",
    "/oauth/introspect",
    "/oauth/revoke",
    "/.well-known/jwks.json",
    "/.well-known/oauth-authorization-server",
)
"""Routes reachable without a token (introspect/revoke authenticate the client themselves)."""

PUBLIC_PREFIXES: tuple[str, ...] = ("/webhooks/", "/docs", "/openapi.json", "/console")
"""Public by prefix: inbound webhooks (authenticated by signature), the API documentation and
the operator console (its own sign-in: an admin session, see gateway/console/auth.py)."""


class Gateway(Starlette):
    """The Starlette app plus handles tests and the CLI use (settings, clients, auth)."""

    settings: Settings
    systems: SystemApis
    oauth: OAuth
    layers: Layers
    events: EventBus
    ratelimit: RateLimitPolicy
    observability: Observability
    admission: AdmissionLimit
    console: Console

    def build_middleware_stack(self) -> ASGIApp:
        """Starlette's stack, its server-error layer being the request envelope: the envelope
        answers a crash with the app's 500 handler (so the 500 still carries the request id,
        trace id and security headers, and is traced, counted and logged with its final
        status), then the user middleware, the other handlers (``HandledErrors``: Starlette's
        rules without a ``Request`` and a ``send`` wrapper per request), and the router."""
        server_error = None
        handlers: dict[Any, Any] = {}
        for key, handler in self.exception_handlers.items():
            if key in (500, Exception):
                server_error = handler
            else:
                handlers[key] = handler
        app: ASGIApp = HandledErrors(self.router, handlers)
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        envelope = self.observability.wrap(app, self.settings.gateway.edge, server_error)
        return self.admission.wrap(envelope)  # outermost: a refusal costs next to nothing


def system_mounts(systems: SystemApis) -> list[BaseRoute]:
    """/system/v1/{backend}: canonical views for internal callers; read and write scopes.

    One flat mount per backend (not a /system/v1 mount of mounts), the busiest first, and
    before them the busiest routes (``BUSIEST_ROUTES``) on their own: each a level of routing
    less for the requests most made (docs/performance.md).
    """
    hoisted: list[BaseRoute] = []
    mounts: list[BaseRoute] = []
    for name, routes in sorted(systems.routes().items(), key=_busiest_first):
        served = served_directly(routes)
        mounts.append(
            Mount(f"/system/v1/{name}", app=RequireScopes(Router(routes=served), **SYSTEM_SCOPES))
        )
        for route in served:
            if isinstance(route, Route) and (name, route.path) in BUSIEST_ROUTES:
                hoisted.append(
                    Route(
                        f"/system/v1/{name}{route.path}",
                        RequireScopes(route.endpoint, **SYSTEM_SCOPES),
                        methods=route.methods,
                        name=route.name,
                        include_in_schema=False,  # the document lists it under its mount
                    )
                )
    return [*hoisted, *mounts]


SYSTEM_SCOPES: dict[str, list[str]] = {"read": ["system:read"], "write": ["system:write"]}
"""What a system view asks of a token: reading needs ``system:read``, writing
``system:write``."""

BUSIEST_ROUTES: frozenset[tuple[str, str]] = frozenset({("inventory", "/stock/{sku}")})
"""System routes (backend, path in its mount) the top-level router tries before any mount:
the stock look-up (every product page and cart asks). Each is also in its backend's mount,
where a request it does not take (another method: the mount's 405) still goes; a request
that no such route takes pays one pattern match for each (docs/performance.md)."""

BUSIEST_FIRST: tuple[str, ...] = ("inventory", "crm", "erp", "billing", "support", "marketing")
"""The system mounts in the order Starlette's router tries them: stock look-ups first (every
product page and cart asks), then customers and orders; each mount a request passes costs a
pattern match (docs/performance.md)."""


def _busiest_first(item: tuple[str, object]) -> int:
    name = item[0]
    return BUSIEST_FIRST.index(name) if name in BUSIEST_FIRST else len(BUSIEST_FIRST)


def edge_middleware(
    settings: Settings, oauth: OAuth, ratelimit: RateLimitPolicy
) -> list[Middleware]:
    """The policies that may refuse a request, outermost first, inside the request envelope
    (request id, trusted proxies, security headers, tracing, metrics, access log: see
    ``Gateway.build_middleware_stack``)."""
    gw = settings.gateway
    chain: list[Middleware] = [Middleware(AllowedHosts, gw.server.hosts(gw.host))]
    if gw.edge.cors.allow_origins:
        chain.append(Middleware(cors_middleware, gw.edge.cors))
    chain.append(Middleware(BodyLimitMiddleware, gw.max_body_bytes))
    chain.append(Middleware(oauth.middleware))
    chain.append(Middleware(RateLimitMiddleware, policy=ratelimit))  # after auth: keyed by tier
    return chain


def create_app(settings: Settings, *, tracer_provider: TracerProvider | None = None) -> Gateway:
    """The whole gateway as one ASGI app, with its edge policies applied outermost.

    ``tracer_provider``: use this one (tests pass an in-memory one) instead of the configured.
    """
    obs = Observability(
        settings.observability,
        tracer_provider=tracer_provider,
        log_level=settings.gateway.log_level,
    )
    systems = SystemApis.from_config(settings.backends, settings.backend_url, settings.roles)
    gw = settings.gateway
    oauth = OAuth(
        with_issuer(settings.oauth, public_base_url(gw.public_url, gw.host, gw.port)),
        settings.clients,
        redis_url=settings.gateway.redis_url,
        redis_prefix=settings.gateway.redis_prefix,
        data_dir=Path(settings.gateway.data_dir),
        database_url=settings.gateway.database_url,
    )

    ratelimit = RateLimitPolicy(
        settings.ratelimit,
        redis_url=settings.gateway.redis_url,
        redis_prefix=settings.gateway.redis_prefix,
        # exact limits hold a connection per request in progress: one each, opened on demand
        max_connections=settings.gateway.admission.max_in_flight,
    )
    admission = AdmissionLimit(settings.gateway.admission)
    layers = build_layers(settings, systems)
    events = EventBus(settings, systems, tracer_provider=obs.tracer_provider)
    console = Console(
        settings,
        systems=systems,
        oauth=oauth,
        events=events,
        observability=obs,
        limit_rejections=ratelimit_rejections(ratelimit),
    )

    store_probe = StoreProbe(
        settings.gateway.redis_url,
        Path(settings.gateway.data_dir),
        database_url=settings.gateway.database_url,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(store_probe.close)
            # observability first: its tracer provider and log handler serve all that follows
            for component in (obs, systems, oauth, ratelimit, layers, events, console):
                await component.start()
                stack.push_async_callback(component.close)
            obs.metrics.watch_breakers(systems.all())
            obs.metrics.watch_rate_limits(ratelimit_rejections(ratelimit))
            if settings.gateway.workers > 1:  # one /metrics for all the host's workers
                share = WorkerMetricsShare(metrics_dir(settings))
                obs.metrics.share = share
                await share.start(obs.metrics.current)
                stack.push_async_callback(share.close)
            if ratelimit.counters is not None:
                obs.metrics.watch_counts(
                    "trellis_ratelimit_counters_evicted",
                    "Rate-limit counter keys evicted at the table's cap (ratelimit memory).",
                    "table",
                    lambda: {"memory": ratelimit.stats()["counters_evicted"]},
                )
            obs.metrics.watch_counts(
                "trellis_operations_stuck",
                "Operations whose undo kept failing: an operator is needed (/admin/v1/operations).",
                "kind",
                layers.stuck_counts,
            )
            obs.metrics.watch_counts(
                "trellis_admission_rejections",
                "Requests answered 503 at the worker's limit of requests in progress.",
                "limit",
                admission.stats,
            )
            stack.callback(restore, tune_after_startup(settings.gateway.gc))
            yield

    routes: list[BaseRoute] = [  # the busiest first: Starlette's router tries them in order
        *system_mounts(systems),
        *layers.routes,
        *health_routes(settings, systems, store_probe),
        *oauth.routes(),
        *events.routes(),
        *obs.routes(protect=metrics_guard(settings)),
        *docs_routes(),
        *console.routes(),
    ]
    app = Gateway(
        routes=routes,
        lifespan=lifespan,
        exception_handlers=dict(HANDLERS),
        middleware=edge_middleware(settings, oauth, ratelimit),
    )
    app.settings, app.systems, app.oauth, app.layers, app.events = (
        settings,
        systems,
        oauth,
        layers,
        events,
    )
    app.ratelimit, app.observability, app.admission = ratelimit, obs, admission
    app.console = console
    # no trailing-slash redirects: Starlette builds their absolute URL from the Host header
    app.router.redirect_slashes = False
    return app


def metrics_dir(settings: Settings) -> Path:
    """Where the workers of one host share their metrics."""
    return Path(settings.gateway.data_dir) / "metrics"


def metrics_guard(settings: Settings) -> Callable[[ASGIApp], ASGIApp] | None:
    """/metrics needs the configured scope unless configured public."""
    cfg = settings.observability.metrics
    if cfg.public:
        return None
    return lambda app: RequireScopes(app, read=[cfg.require_scope])


def ratelimit_rejections(policy: RateLimitPolicy) -> Callable[[], Mapping[str, int]]:
    def read() -> Mapping[str, int]:
        return dict(policy.rejections)

    return read


def app_from_env() -> ASGIApp:
    """Factory for ``uvicorn --factory`` and worker processes: config dir from the environment."""
    return create_app(load_settings())
