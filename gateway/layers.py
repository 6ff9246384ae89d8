"""The process and experience layers, assembled for the gateway (owned by the process-API work).

``build_layers`` returns the mounts (each wrapped in its scopes) and the lifespan hooks that
open and close the operation store (idempotency keys, cross-references, outbox) and the saga
log of multi-step operations, with the sweeper that takes over a dead process's operations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from starlette.routing import BaseRoute, Mount, Router

from experience_apis.channels import channel_apps
from gateway.oauth.scopes import RequireScopes
from process_apis.service import ProcessApis
from process_apis.views import routes as process_routes
from system_apis.registry import SystemApis

from .errors import handled_within
from .operations import OperationsConfig, Sweeper, operation_routes
from .settings import Settings
from .stores.operations import RedisOperationStore, SqliteOperationStore, open_operation_store
from .stores.postgres_records import PostgresOperationStore
from .stores.redis_options import DEFAULT_PREFIX
from .stores.saga_postgres import PostgresSagaLog
from .stores.saga_sqlite import SqliteSagaLog

CHANNEL_SCOPES: dict[str, str] = {
    "web": "experience:web",
    "mobile": "experience:mobile",
    "support": "experience:support",
    "partner": "partner",
}
"""The scope a token needs for each experience channel (reads and writes alike)."""


@dataclass
class Layers:
    routes: list[BaseRoute] = field(default_factory=list)
    process: ProcessApis | None = None
    redis_url: str | None = None
    redis_prefix: str = DEFAULT_PREFIX
    data_dir: Path = Path("var")
    database_url: str | None = None
    store: SqliteOperationStore | RedisOperationStore | PostgresOperationStore | None = None
    operations: OperationsConfig = field(default_factory=OperationsConfig)
    saga_log: SqliteSagaLog | PostgresSagaLog | None = None
    sweeper: Sweeper | None = None

    async def start(self) -> None:
        if self.process is None:
            return
        self.store = await open_operation_store(
            self.redis_url,
            self.data_dir,
            redis_prefix=self.redis_prefix,
            database_url=self.database_url,
        )
        self.saga_log = self._saga_log()
        await self.saga_log.open()
        self.process.attach(self.store, self.saga_log)
        self.sweeper = Sweeper(self.process, self.saga_log, self.operations)
        self.sweeper.start()  # takes over what a stopped process left running

    def _saga_log(self) -> SqliteSagaLog | PostgresSagaLog:
        """In PostgreSQL beside the other durable records when ``database_url`` is set, so
        every host sharing the database takes over the others' operations; else a SQLite file
        of its own in the data dir."""
        retain_s = self.operations.retain_s
        if self.database_url:
            return PostgresSagaLog(self.database_url, retain_s=retain_s)
        return SqliteSagaLog(self.data_dir / "sagas.db", retain_s=retain_s)

    def stuck_counts(self) -> dict[str, int]:
        """Operations found stuck (an operator is needed), by kind, since this process started."""
        return dict(self.sweeper.stuck) if self.sweeper is not None else {}

    async def close(self) -> None:
        if self.sweeper is not None:
            await self.sweeper.close()
            self.sweeper = None
        if self.process is not None:
            self.process.attach(None)
        if self.saga_log is not None:
            await self.saga_log.close()
            self.saga_log = None
        if self.store is not None:
            await self.store.close()
            self.store = None


def build_layers(settings: Settings, systems: SystemApis) -> Layers:
    """Process APIs under /process/v1 and experience APIs under /experience/{channel}/v1."""
    views = settings.gateway.views
    process = ProcessApis(
        systems,
        durable=settings.gateway.operations.durable(),
        section_timeout_s=views.section_timeout_s,
        view_deadline_s=views.deadline_s,
    )
    routes: list[BaseRoute] = [
        *operation_routes(process),
        Mount(
            "/process/v1",
            app=RequireScopes(
                Router(routes=process_routes(process)),
                read=["process:read"],
                write=["process:write"],
            ),
        ),
    ]
    for channel, versions in channel_apps(process, settings.experience).items():
        scope = CHANNEL_SCOPES[channel]
        for version, app in versions.items():
            routes.append(
                Mount(
                    f"/experience/{channel}/{version}",
                    # the version's headers on its routes' error answers too
                    app=RequireScopes(handled_within(app), read=[scope]),
                )
            )
    return Layers(
        routes=routes,
        process=process,
        redis_url=settings.gateway.redis_url,
        redis_prefix=settings.gateway.redis_prefix,
        data_dir=Path(settings.gateway.data_dir),
        operations=settings.gateway.operations,
        database_url=settings.gateway.database_url,
    )
