"""Liveness and readiness.

``/healthz`` says the process is alive. ``/readyz`` says it can serve what its callers need:
config loaded, the stores answer (PostgreSQL with ``database_url``, Redis when configured, the
embedded SQLite files in use), the critical backends (``critical: true``, the systems of
record) and those listed in ``gateway.readiness.required_backends`` answer, and not every
breaker is open; otherwise 503.
A non-critical backend that is down, or whose breaker is open, degrades the views that use it
and does not take the gateway out of its load balancer. It is public (load
balancers call it without a token), so it says only ready or not; the reasons, each backend's
reachability, each breaker's state and the warnings (a backend whose TLS certificate is not
verified) are for a caller with the ``admin`` scope, since an outsider watching a breaker open
learns when a backend is weak, and one told that verification is off learns where to listen.
"""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from system_apis.egress import tls_warning
from system_apis.http.common import json_response
from system_apis.registry import SystemApis
from system_apis.resilience import BreakerState

from .principal import principal_of
from .settings import Settings
from .stores.readiness import StoreProbe

DETAILS_SCOPE = frozenset({"admin"})

PROBE_TTL_S = 2.0
"""How long one round of backend probes answers /readyz."""


def required_backends(settings: Settings) -> set[str]:
    """The backends /readyz waits for: the critical ones and those the config names."""
    critical = {name for name, config in settings.backends.items() if config.critical}
    return critical | set(settings.gateway.readiness.required_backends)


def health_routes(settings: Settings, systems: SystemApis, stores: StoreProbe) -> list[Route]:
    required = required_backends(settings)
    timeout = settings.gateway.readiness.probe_timeout_s

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok"})

    warnings = [  # settings that weaken a backend's security, shown for as long as they hold
        f"{name}: {why}" for name, c in systems.all().items() if (why := tls_warning(c.config))
    ]
    cache: dict[str, tuple[float, tuple[dict[str, str | None], list[str]]]] = {}
    lock = asyncio.Lock()

    async def probe() -> tuple[dict[str, str | None], list[str]]:
        # Public and unlimited, so one probe round serves every caller for PROBE_TTL_S:
        # /readyz must not become a way to spend the vendors' quotas.
        async with lock:
            hit = cache.get("probes")
            if hit is not None and time.monotonic() - hit[0] < PROBE_TTL_S:
                return hit[1]
            result = await asyncio.gather(systems.probe(timeout), stores.problems(timeout))
            cache["probes"] = (time.monotonic(), result)
            return result

    async def readyz(request: Request) -> Response:
        probes, store_problems = await probe()
        breakers = {name: c.breaker.state.value for name, c in systems.all().items()}
        reasons = list(store_problems)
        reasons += [f"{name}: {why}" for name, why in probes.items() if why and name in required]
        if all(state == BreakerState.OPEN for state in breakers.values()):
            reasons.append("every backend's circuit breaker is open")
        status = 503 if reasons else 200
        summary = {"status": "not ready" if reasons else "ready"}
        principal = principal_of(request.scope)
        if principal is None or not principal.has_scopes(DETAILS_SCOPE):
            return json_response(summary, status=status)
        body = {
            **summary,
            "config": "loaded",
            "backends": {
                name: {"reachable": why is None, "reason": why, "breaker": breakers[name]}
                for name, why in probes.items()
            },
            "required_backends": sorted(required),
            "stores": store_problems or "ok",
            "reasons": reasons,
            "warnings": warnings,
        }
        return json_response(body, status=status)

    return [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]
