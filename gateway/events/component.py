"""The event bus component the gateway starts in its lifespan.

It picks the store and dispatcher (SQLite embedded, Redis Streams when ``redis_url`` is set,
PostgreSQL tables when ``database_url`` is set),
binds the process-API subscribers and partner webhooks into subscriptions, and serves the
admin and inbound-webhook routes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from opentelemetry import trace
from starlette.routing import BaseRoute, Mount, Route, Router

from experience_apis.masking import mask_for_channel
from gateway.oauth.scopes import RequireScopes
from process_apis.ports import DomainEvent
from process_apis.subscribers import SUBSCRIBERS
from process_apis.subscribers.base import Subscriber
from system_apis.registry import SystemApis

from ..settings import Settings
from .admin import AdminStore, admin_routes
from .alerts import DeadLetterAlerts
from .inbound import inbound_view
from .outbound import webhook_subscriptions
from .postgres_store import PostgresEventStore
from .redis_bus import RedisBus
from .redis_store import RedisEventStore
from .sqlite_bus import SqliteBus
from .sqlite_store import SqliteEventStore
from .subscriptions import Subscription, bind_subscribers, events_tracer, unknown_subscribers

log = logging.getLogger("trellis.events")

ADMIN_PREFIX = "/admin/v1"
WEBHOOKS_PATH = "/webhooks/{source}"


EventStore = SqliteEventStore | RedisEventStore | PostgresEventStore


def open_store(settings: Settings) -> EventStore:
    """The store the gateway uses (also what the ``trellis dlq`` commands open): PostgreSQL
    when ``database_url`` is set, else Redis when ``redis_url`` is, else SQLite."""
    if settings.gateway.database_url:
        return PostgresEventStore(settings.gateway.database_url)
    if settings.gateway.redis_url:
        return RedisEventStore(
            settings.gateway.redis_url,
            prefix=settings.gateway.redis_prefix,
            retention_s=settings.events.bus.retention_s,
        )
    return SqliteEventStore.in_data_dir(Path(settings.gateway.data_dir))


class EventBus:
    def __init__(
        self,
        settings: Settings,
        systems: SystemApis,
        *,
        subscribers: Mapping[str, Subscriber] | None = None,
        extra_subscriptions: Sequence[Subscription] = (),
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.settings = settings
        self.tracer = events_tracer(tracer_provider)
        self.systems = systems
        self.config = settings.events
        known = SUBSCRIBERS if subscribers is None else subscribers
        for name in unknown_subscribers(self.config, known):
            log.warning("events.yaml names subscriber %r, which no code defines", name)
        self._session: aiohttp.ClientSession | None = None
        self.subscriptions: list[Subscription] = [
            *bind_subscribers(known, systems, self.config),
            *webhook_subscriptions(self.config, self._http, self._mask_for_partners),
            *extra_subscriptions,
        ]
        self.store = open_store(settings)
        self.alerts = DeadLetterAlerts(self.config.alerts)
        self.bus: SqliteBus | RedisBus | None = None

    def _mask_for_partners(self, data: Any) -> Any:
        return mask_for_channel(self.settings.experience, "partner", data)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the event bus is not started")
        return self._session

    def wants(self, event_type: str) -> list[str]:
        """Names of the subscriptions an event of this type goes to."""
        return [s.name for s in self.subscriptions if s.wants(event_type)]

    def _store(self) -> EventStore:
        return self.store

    def _admin_store(self) -> AdminStore:
        store: AdminStore = self.store
        return store

    def wake(self) -> None:
        """Deliver now: an in-process publisher just committed to the outbox."""
        if self.bus is not None:
            self.bus.wake()

    async def publish(self, events: Sequence[DomainEvent]) -> None:
        """Append to the outbox (or stream) and wake the dispatcher."""
        await self.store.publish(events)
        self.wake()

    def routes(self) -> list[BaseRoute]:
        return [
            Mount(
                ADMIN_PREFIX,
                app=RequireScopes(
                    Router(routes=admin_routes(self._admin_store, self.wants)), read=["admin"]
                ),
            ),
            Route(
                WEBHOOKS_PATH,
                inbound_view(self.config.inbound_webhooks, self._store, self.wake),
                methods=["POST"],
            ),
        ]

    async def start(self) -> None:
        await self.store.open()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=60, connect=5),
            connector=aiohttp.TCPConnector(limit=self.config.bus.concurrency * 2),
        )
        self.alerts.session = self._session
        if not self.config.enabled:
            return
        if isinstance(self.store, RedisEventStore):
            self.bus = RedisBus(
                self.store, self.subscriptions, self.config.bus, self.alerts, self.tracer
            )
        else:
            self.bus = SqliteBus(
                self.store,
                self.subscriptions,
                self.config.bus,
                self.alerts,
                self.config.bus.retention_s,
                self.tracer,
            )
        await self.bus.start()

    async def close(self) -> None:
        if self.bus is not None:
            await self.bus.close()
            self.bus = None
        await self.alerts.close()
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self.store.close()
