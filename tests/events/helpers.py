"""Test tools for the event bus: outbox writers that follow the contract, a loopback receiver."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import web

from gateway.events.component import EventBus
from gateway.events.records import DeadLetter, DeadLetterQuery
from gateway.stores.postgres_records import PostgresOperationStore
from process_apis.ports import DomainEvent, Outcome
from tests.eventually import eventually
from tests.servers import free_port

OUTBOX_DDL = (
    "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " id TEXT UNIQUE NOT NULL, type TEXT NOT NULL, subject TEXT, time TEXT NOT NULL,"
    " event TEXT NOT NULL)"
)


async def commit_events(database_url: str, events: Iterable[DomainEvent]) -> None:
    """Append events to the PostgreSQL outbox as the process APIs do (a commit of their own)."""
    store = PostgresOperationStore(database_url)
    await store.open()
    try:
        await store.commit(Outcome(events=list(events)))
    finally:
        await store.close()


def write_outbox(data_dir: Path, events: Iterable[DomainEvent]) -> None:
    """Append events as the process APIs do (their own connection, the contract's table)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(data_dir / "trellis.db", timeout=10, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(OUTBOX_DDL)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO outbox (id, type, subject, time, event) VALUES (?, ?, ?, ?, ?)",
            [(e.id, e.type, e.subject, e.time.isoformat(), e.model_dump_json()) for e in events],
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


async def xadd_events(redis_url: str, prefix: str, events: Iterable[DomainEvent]) -> None:
    """XADD as the process APIs do: ``<prefix>events`` with fields id, type, event."""
    r = aioredis.Redis.from_url(redis_url)
    try:
        for e in events:
            await r.xadd(
                f"{prefix}events", {"id": e.id, "type": e.type, "event": e.model_dump_json()}
            )
    finally:
        await r.aclose()


async def dead_letters(bus: EventBus, count: int = 1) -> list[DeadLetter]:
    """The bus's dead letters, once there are at least ``count``."""

    async def letters() -> list[DeadLetter]:
        found = await bus.store.dead_letters(DeadLetterQuery())
        return found if len(found) >= count else []

    return await eventually(letters, message=f"{count} dead letter(s)")


def event(type_: str = "test.happened", **data: Any) -> DomainEvent:
    return DomainEvent(
        type=type_,
        subject=data.get("subject"),
        data=data,
        traceparent=f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
    )


@dataclass
class Receiver:
    """A loopback HTTP endpoint that records every POST; it can fail, stall or ask to wait."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_first: int = 0
    always_fail: bool = False
    status: int = 503
    retry_after: str | None = None
    delay_s: float = 0.0

    @property
    def times(self) -> list[float]:
        return [r["at"] for r in self.requests]

    def event_ids(self, ok_only: bool = True) -> Counter[str]:
        return Counter(r["event_id"] for r in self.requests if r["ok"] or not ok_only)

    def bodies(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests]

    async def wait_for(self, predicate: Callable[[Receiver], bool], within: float = 15.0) -> None:
        def met() -> bool:
            assert predicate(self), f"{len(self.requests)} calls so far"
            return True

        await eventually(met, timeout=within, message="receiver condition")


@asynccontextmanager
async def receiver(**kw: Any) -> AsyncIterator[Receiver]:
    rec = Receiver(**kw)

    async def handle(request: web.Request) -> web.Response:
        raw = await request.read()
        if rec.delay_s:
            await asyncio.sleep(rec.delay_s)  # a slow partner
        body = orjson.loads(raw) if raw else None
        failing = rec.always_fail or len(rec.requests) < rec.fail_first
        event_id = request.headers.get("Trellis-Event-Id") or (body or {}).get("id")
        rec.requests.append(
            {
                "at": time.time(),
                "event_id": event_id,
                "headers": dict(request.headers),
                "raw": raw,
                "body": body,
                "ok": not failing,
            }
        )
        if failing:
            headers = {"Retry-After": rec.retry_after} if rec.retry_after else {}
            return web.Response(status=rec.status, headers=headers)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    rec.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield rec
    finally:
        await runner.cleanup()


def hook(url: str, types: list[str] | None = None, **policy: Any) -> dict[str, Any]:
    """An outbound webhook subscription in config shape."""
    out: dict[str, Any] = {
        "partner_id": "partner-test",
        "own_records_only": False,  # generic test events belong to no partner
        "url": url,
        "secret": "whsec_partner_test_secret",
        "event_types": types or ["test.happened"],
        "timeout_s": 5,
    }
    if policy:
        out["delivery"] = policy
    return out


FAST = {"max_attempts": 3, "base_delay_s": 0.3, "max_delay_s": 2.0, "attempt_timeout_s": 5}
