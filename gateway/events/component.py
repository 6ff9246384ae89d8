"""The event bus component the gateway starts in its lifespan."""

from __future__ import annotations

from starlette.routing import BaseRoute

from system_apis.registry import SystemApis

from ..settings import Settings


class EventBus:
    def __init__(self, settings: Settings, systems: SystemApis) -> None:
        self.settings = settings
        self.systems = systems

    def routes(self) -> list[BaseRoute]:
        return []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
