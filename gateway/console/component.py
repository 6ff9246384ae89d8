"""The console component: its state (time series, probes), its lifespan and its routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from prometheus_client import Gauge
from starlette.routing import BaseRoute, Mount, Route, Router

from gateway.events.component import EventBus
from gateway.events.records import DeadLetterQuery, DeadLetterStatus
from gateway.oauth import OAuth
from gateway.observability import Observability
from system_apis.registry import SystemApis

from ..settings import Settings
from .auth import ConsoleAuth
from .history import History
from .routes import PREFIX, ConsolePages
from .sources import Reachability
from .trace_share import TraceShare

log = logging.getLogger("trellis.console")

DLQ_COUNT_CAP = 1000
"""The DLQ gauge counts this far (the admin store's largest page): enough to see it grow."""


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
        self.share: TraceShare | None = None
        """With Redis: this worker's side of trace look-ups across workers."""
        redis_url = settings.gateway.redis_url
        recording = settings.observability.tracing.exporter != "none" or self.config.record_spans
        if self.config.enabled and redis_url and observability.spans.size and recording:
            self.share = TraceShare(
                observability.spans,
                redis_url,
                prefix=settings.gateway.redis_prefix,
                wait_s=self.config.trace_lookup_wait_s,
            )
        self.pages = ConsolePages(
            settings,
            auth=ConsoleAuth(oauth, self.config),
            systems=systems,
            events=events,
            history=self.history,
            reachability=self.reachability,
            spans=observability.spans,
            share=self.share,
            limit_rejections=limit_rejections,
            tracing_exporter=settings.observability.tracing.exporter,
            config_dir=config_dir,
        )
        self._sampler: asyncio.Task[None] | None = None
        self.events = events
        self.dead_letters = 0
        """Dead letters waiting in the store (at most ``DLQ_COUNT_CAP``), taken per sample."""
        metrics = observability.metrics
        metrics.watch_counts(
            "trellis_events_dead_lettered",
            "Deliveries this worker moved to the dead-letter queue, by subscriber.",
            "subscriber",
            lambda: events.alerts.counts,
        )
        if metrics.config.enabled:
            Gauge(
                "trellis_events_dead_letters",
                f"Dead letters waiting for replay or discard in the shared store (counted up "
                f"to {DLQ_COUNT_CAP}), as of the console's last sample.",
                registry=metrics.registry,
            ).set_function(lambda: self.dead_letters)

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

    async def _count_dead_letters(self) -> None:
        query = DeadLetterQuery(status=DeadLetterStatus.DEAD, limit=DLQ_COUNT_CAP)
        self.dead_letters = len(await self.events.store.dead_letters(query))

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(self.config.sample_interval_s)
            try:
                await self.history.take()
                await self._count_dead_letters()
            except Exception:  # a sample lost is a gap in a chart, never a dead sampler
                log.exception("console sample failed")

    async def start(self) -> None:
        """Sample now and every interval (also with the pages off: the DLQ gauge needs it)."""
        await self.history.take()
        try:
            await self._count_dead_letters()
        except Exception:
            log.exception("counting dead letters failed")
        self._sampler = asyncio.create_task(self._sample(), name="console-sampler")
        if self.share is not None:
            await self.share.start()

    async def close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None
        if self.share is not None:
            await self.share.close()
