"""The process and experience layers, assembled for the gateway (owned by the process-API work).

``build_layers`` returns the mounts (each wrapped in its scopes) and the lifespan hooks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.routing import BaseRoute

from system_apis.registry import SystemApis

from .settings import Settings


@dataclass
class Layers:
    routes: list[BaseRoute] = field(default_factory=list)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


def build_layers(settings: Settings, systems: SystemApis) -> Layers:
    """Process APIs under /process/v1 and experience APIs under /experience/{channel}/v1."""
    return Layers()
