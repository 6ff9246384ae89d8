"""Assemble the gateway: edge policies around the routes of every layer, one lifespan.

Request path: envelope (request id, span, metrics, access log, security headers) -> body limit
-> authentication -> rate limit -> route (each mount declares its scopes) ->
experience / process / system views. Everything not explicitly public requires a scope.
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
from starlette.routing import BaseRoute, Mount, Router
from starlette.types import ASGIApp

from gateway.oauth import OAuth
from gateway.oauth.scopes import RequireScopes
from system_apis.registry import SystemApis

from .docs import docs_routes
from .errors import HANDLERS, ErrorHandlers, split_handlers
from .events.component import EventBus
from .gc_tuning import restore, tune_after_startup
from .health import health_routes
from .layers import Layers, build_layers
from .observability import Observability
from .policies.body_limit import BodyLimitMiddleware
from .policies.edge import cors_middleware
from .policies.ratelimit import RateLimitMiddleware, RateLimitPolicy
from .policies.routing import PrefixRouter, lean_endpoints
from .settings import Settings, load_settings

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

PUBLIC_PREFIXES: tuple[str, ...] = ("/webhooks/", "/docs", "/openapi.json")
"""Public by prefix: inbound webhooks (authenticated by signature) and the API documentation."""


class Gateway(Starlette):
    """The Starlette app plus handles tests and the CLI use (settings, clients, auth)."""

    settings: Settings
    systems: SystemApis
    oauth: OAuth
    layers: Layers
    events: EventBus
    ratelimit: RateLimitPolicy
    observability: Observability

    def __init__(self, *, routes: list[BaseRoute], lifespan: Any, **kwargs: Any) -> None:
        super().__init__(routes=routes, lifespan=lifespan, **kwargs)
        # the same routes and lifespan, with mounts found by prefix (policies/routing.py)
        self.router = PrefixRouter(routes, lifespan=lifespan)

    def build_middleware_stack(self) -> ASGIApp:
        """Starlette's stack, leaner: the request envelope is also the server-error layer (a
        crash's 500 is still traced, counted and logged with its final status), and
        ``ErrorHandlers`` (gateway/errors.py) replaces ``ExceptionMiddleware`` around the
        router, where the user middleware (CORS) still acts on its answers."""
        server_error, handlers = split_handlers(self.exception_handlers)
        app: ASGIApp = ErrorHandlers(self.router, handlers)
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return self.observability.wrap(app, self.settings.gateway.edge, server_error=server_error)


def system_mounts(systems: SystemApis) -> list[BaseRoute]:
    """/system/v1/{backend}: canonical views for internal callers; read and write scopes.

    One flat mount per backend (not a /system/v1 mount of mounts): a level of routing less
    on every call (docs/performance.md).
    """
    return [
        Mount(
            f"/system/v1/{name}",
            app=RequireScopes(Router(routes=routes), read=["system:read"], write=["system:write"]),
        )
        for name, routes in systems.routes().items()
    ]


def edge_middleware(
    settings: Settings, oauth: OAuth, ratelimit: RateLimitPolicy
) -> list[Middleware]:
    """The policies that may refuse a request, outermost first, inside the request envelope
    (request id, trusted proxies, security headers, tracing, metrics, access log: see
    ``Gateway.build_middleware_stack``)."""
    gw = settings.gateway
    chain: list[Middleware] = []
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
    systems = SystemApis.from_config(settings.backends, settings.backend_url)
    oauth = OAuth(
        settings.oauth,
        settings.clients,
        redis_url=settings.gateway.redis_url,
        redis_prefix=settings.gateway.redis_prefix,
        data_dir=Path(settings.gateway.data_dir),
    )

    ratelimit = RateLimitPolicy(
        settings.ratelimit,
        redis_url=settings.gateway.redis_url,
        redis_prefix=settings.gateway.redis_prefix,
    )
    layers = build_layers(settings, systems)
    events = EventBus(settings, systems, tracer_provider=obs.tracer_provider)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            # observability first: client instrumentation only affects sessions made after it
            for component in (obs, systems, oauth, ratelimit, layers, events):
                await component.start()
                stack.push_async_callback(component.close)
            obs.metrics.watch_breakers(systems.all())
            obs.metrics.watch_rate_limits(ratelimit_rejections(ratelimit))
            stack.callback(restore, tune_after_startup(settings.gateway.gc))
            yield

    routes: list[BaseRoute] = [  # the busiest first: the router tries them in order
        *system_mounts(systems),
        *layers.routes,
        *health_routes(settings, systems),
        *oauth.routes(),
        *events.routes(),
        *obs.routes(protect=metrics_guard(settings)),
        *docs_routes(),
    ]
    lean_endpoints(routes)
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
    app.ratelimit, app.observability = ratelimit, obs
    return app


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
