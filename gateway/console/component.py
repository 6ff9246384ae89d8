"""The console component: its state (time series, probes), its lifespan and its routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from starlette.routing import BaseRoute, Mount, Route, Router

from gateway.events.component import EventBus
from gateway.oauth import OAuth
from gateway.observability import Observability
from system_apis.registry import SystemApis

from ..settings import Settings
from .auth import ConsoleAuth
from .history import History
from .routes import PREFIX, ConsolePages
from .sources import Reachability

log = logging.getLogger("trellis.console")


class Console:
    """``/console`` for one worker; ``start`` begins sampling the time series, ``close``
    stops it."""

    def __init__(
        self,
        settings: Settings,
        *,
        systems: SystemApis,
        oauth: OAuth,
        events: EventBus,
        observability: Observability,
        limit_rejections: Callable[[], Mapping[str, int]],
        config_dir: Path | None = None,
    ) -> None:
        self.config = settings.observability.console
        self.history = History(observability.metrics, self.config.sample_interval_s)
        self.reachability = Reachability(
            systems.all(), self.config.probe_timeout_s, max_age_s=self.config.refresh_s
        )
        self.pages = ConsolePages(
            settings,
            auth=ConsoleAuth(oauth, self.config),
            systems=systems,
            events=events,
            history=self.history,
            reachability=self.reachability,
            spans=observability.spans,
            limit_rejections=limit_rejections,
            tracing_exporter=settings.observability.tracing.exporter,
            config_dir=config_dir,
        )
        self._sampler: asyncio.Task[None] | None = None

    def routes(self) -> list[BaseRoute]:
        if not self.config.enabled:
            return []
        return [
            Route(
                PREFIX,
                self.pages.page(self.pages.overview),
                methods=["GET"],
                include_in_schema=False,  # pages for people, not API operations
            ),
            Mount(PREFIX, app=Router(routes=self.pages.routes())),
        ]

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(self.config.sample_interval_s)
            try:
                self.history.sample()
            except Exception:  # a sample lost is a gap in a chart, never a dead sampler
                log.exception("console sample failed")

    async def start(self) -> None:
        if not self.config.enabled:
            return
        self.history.sample()
        self._sampler = asyncio.create_task(self._sample(), name="console-sampler")

    async def close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None
