"""Liveness and readiness.

``/healthz`` says the process is alive. ``/readyz`` says it can serve: config loaded, the
required backends answer, and not every breaker is open; otherwise 503 with the reasons.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from system_apis.http.common import json_response
from system_apis.registry import SystemApis
from system_apis.resilience import BreakerState

from .settings import Settings


def health_routes(settings: Settings, systems: SystemApis) -> list[Route]:
    required = set(settings.gateway.readiness.required_backends or settings.backends)
    timeout = settings.gateway.readiness.probe_timeout_s

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(request: Request) -> Response:
        probes = await systems.probe(timeout)
        breakers = {name: c.breaker.state.value for name, c in systems.all().items()}
        reasons = [f"{name}: {why}" for name, why in probes.items() if why and name in required]
        if all(state == BreakerState.OPEN for state in breakers.values()):
            reasons.append("every backend's circuit breaker is open")
        body = {
            "status": "not ready" if reasons else "ready",
            "config": "loaded",
            "backends": {
                name: {"reachable": why is None, "reason": why, "breaker": breakers[name]}
                for name, why in probes.items()
            },
            "reasons": reasons,
        }
        return json_response(body, status=503 if reasons else 200)

    return [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]
