"""Scenario 8: events per second from published (outbox / stream) to handled (subscriber ran).

The gateway's own ``EventBus`` (``gateway/events/component.py``) with one counting
subscriber for ``bench.ping``: events go in through ``EventBus.publish`` (the outbox append
and wake-up process APIs use), one event per call from 16 concurrent publishers, and are
handled by the real dispatcher (SQLite outbox with leases, Redis Streams with a consumer
group, or the PostgreSQL tables with SKIP LOCKED claims, in a schema of its own dropped
afterwards). Runs in this process, bounded by ``count`` and a 60 s deadline; reported as n/a
when the bus, Redis or PostgreSQL is not there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any

PUBLISHERS = 16
DEADLINE_S = 60.0
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql://trellis:trellis@127.0.0.1:5432/trellis_test"
)


class EventsUnavailable(Exception):
    """The bus cannot be measured here (missing module, no Redis)."""


def run_events(store: str, count: int, workdir: Path) -> dict[str, Any]:
    """Publish ``count`` events on the ``store`` ("sqlite", "redis" or "postgres") bus; rates
    per second."""
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        import uvloop

        return uvloop.run(_measure(store, count, workdir))
    except ImportError:  # pragma: no cover - uvloop is a runtime dependency (not on Windows)
        return asyncio.run(_measure(store, count, workdir))


async def _redis_ready(url: str) -> None:
    try:
        import redis.asyncio as redis
    except ImportError as exc:
        raise EventsUnavailable("redis client not installed") from exc
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        await client.ping()
    except Exception as exc:
        raise EventsUnavailable(f"no Redis at {url} ({type(exc).__name__})") from exc
    finally:
        await client.aclose()


async def _drop_prefix(url: str, prefix: str) -> None:
    import redis.asyncio as redis

    client = redis.Redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def _schema(sql: str) -> None:
    try:
        import asyncpg
    except ImportError as exc:
        raise EventsUnavailable("asyncpg not installed") from exc
    try:
        conn = await asyncpg.connect(DATABASE_URL, timeout=2)
    except Exception as exc:
        raise EventsUnavailable(f"no PostgreSQL ({type(exc).__name__})") from exc
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _measure(store: str, count: int, workdir: Path) -> dict[str, Any]:
    try:
        from gateway.events.component import EventBus
        from gateway.settings import DEFAULT_CONFIG_DIR, load_settings
        from process_apis.ports import DomainEvent
        from process_apis.subscribers.base import Subscriber
        from system_apis.registry import SystemApis
    except ImportError as exc:
        raise EventsUnavailable(f"event bus not importable: {exc}") from exc
    prefix = f"trellis-bench-{os.getpid()}:"
    gateway: dict[str, Any] = {
        "data_dir": str(workdir),
        "log_level": "warning",
        "redis_prefix": prefix,
    }
    if store == "redis":
        await _redis_ready(REDIS_URL)
        gateway["redis_url"] = REDIS_URL
    schema = f"bench_{os.getpid()}"
    if store == "postgres":
        await _schema(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        sep = "&" if "?" in DATABASE_URL else "?"
        gateway["database_url"] = f"{DATABASE_URL}{sep}search_path={schema}"
    settings = load_settings(
        DEFAULT_CONFIG_DIR,
        gateway=gateway,
        oauth={"keys_dir": str(workdir / "keys")},
        events={"bus": {"poll_interval_s": 0.05}},
    )
    handled = 0
    all_handled = asyncio.Event()

    async def handle(event: Any, systems: Any) -> None:
        nonlocal handled
        handled += 1
        if handled >= count:
            all_handled.set()

    subscriber = Subscriber(frozenset({"bench.ping"}), handle, "bench counter")
    systems = SystemApis.from_config(settings.backends, settings.backend_url)
    bus = EventBus(settings, systems, subscribers={"bench-counter": subscriber})
    await bus.start()
    try:
        per_publisher = -(-count // PUBLISHERS)

        async def publisher(p: int) -> None:
            for i in range(p * per_publisher, min(count, (p + 1) * per_publisher)):
                await bus.publish([DomainEvent(type="bench.ping", data={"n": i})])

        start = time.perf_counter()
        await asyncio.gather(*(publisher(p) for p in range(PUBLISHERS)))
        published_s = time.perf_counter() - start
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_handled.wait(), DEADLINE_S)
        handled_s = time.perf_counter() - start
    finally:
        await bus.close()
        if store == "redis":
            with contextlib.suppress(Exception):
                await _drop_prefix(REDIS_URL, prefix)
        if store == "postgres":
            with contextlib.suppress(Exception):
                await _schema(f"DROP SCHEMA {schema} CASCADE")
    if handled < count:
        raise EventsUnavailable(f"only {handled}/{count} events handled within {DEADLINE_S:.0f}s")
    return {
        "store": store,
        "events": count,
        "publishers": PUBLISHERS,
        "published_per_s": round(count / published_s, 1),
        "handled_per_s": round(count / handled_s, 1),
        "publish_s": round(published_s, 3),
        "end_to_end_s": round(handled_s, 3),
    }
