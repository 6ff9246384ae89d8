"""Fixtures: an event bus in this process over real SQLite files, a real Redis or PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.events.component import EventBus
from gateway.events.subscriptions import Subscription
from gateway.settings import Settings
from system_apis.registry import SystemApis
from tests.conftest import SandboxThread
from tests.gateway.helpers import test_settings

BusFactory = Callable[..., AbstractAsyncContextManager[EventBus]]


def bus_settings(
    sandbox: SandboxThread,
    tmp: Path,
    events: dict[str, Any],
    redis_url: str | None = None,
    redis_prefix: str | None = None,
    database_url: str | None = None,
) -> Settings:
    gateway: dict[str, Any] = {
        "sandbox": {"base_port": sandbox.base_port},
        "data_dir": str(tmp / "data"),
    }
    if redis_url:
        assert redis_prefix, "a test on the shared Redis takes the redis_prefix fixture"
        gateway["redis_url"] = redis_url
        gateway["redis_prefix"] = redis_prefix
    if database_url:
        gateway["database_url"] = database_url
    return test_settings(sandbox.base_port, tmp, gateway=gateway, events=events)


@pytest.fixture
def make_bus(sandbox: SandboxThread, tmp_path: Path) -> BusFactory:
    @asynccontextmanager
    async def make(
        events: dict[str, Any],
        *,
        redis_url: str | None = None,
        redis_prefix: str | None = None,
        subscribers: Any = None,
        extra: Sequence[Subscription] = (),
        with_systems: bool = False,
        tracer_provider: Any = None,
        database_url: str | None = None,
    ) -> AsyncIterator[EventBus]:
        settings = bus_settings(sandbox, tmp_path, events, redis_url, redis_prefix, database_url)
        systems = SystemApis.from_config(settings.backends, settings.backend_url)
        if with_systems:
            await systems.start()
        bus = EventBus(
            settings,
            systems,
            subscribers={} if subscribers is None else subscribers,
            extra_subscriptions=extra,
            tracer_provider=tracer_provider,
        )
        await bus.start()
        try:
            yield bus
        finally:
            await bus.close()
            if with_systems:
                await systems.close()

    return make
