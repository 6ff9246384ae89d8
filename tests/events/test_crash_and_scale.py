"""Gateway processes killed with SIGKILL mid-delivery lose nothing; several share one Redis or
one PostgreSQL.

Effects are counted at a loopback receiver by event id. A delivery whose answer was lost in the
kill is sent again after the restart (at-least-once); the receiver, like any partner, applies
an event id once, so each event takes effect exactly once, and only events that were in flight
at the kill may be re-sent at all.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from tests.conftest import SandboxThread
from tests.events.helpers import (
    Receiver,
    commit_events,
    event,
    hook,
    receiver,
    write_outbox,
    xadd_events,
)
from tests.eventually import eventually

pytestmark = pytest.mark.slow  # gateway subprocesses, killed and restarted

ROOT = Path(__file__).resolve().parents[2]


def overrides(
    sandbox: SandboxThread,
    tmp: Path,
    url: str,
    redis_url: str | None,
    prefix: str | None,
    database_url: str | None = None,
) -> dict[str, Any]:
    gateway: dict[str, Any] = {
        "sandbox": {"base_port": sandbox.base_port},
        "data_dir": str(tmp / "data"),
    }
    if redis_url:
        gateway["redis_url"] = redis_url
        gateway["redis_prefix"] = prefix
    if database_url:
        gateway["database_url"] = database_url
    return {
        "gateway": gateway,
        "events": {
            "outbound_webhooks": {
                "t": hook(
                    url, max_attempts=10, base_delay_s=0.1, max_delay_s=0.5, attempt_timeout_s=3
                )
            },
            "bus": {
                "concurrency": 8,
                "poll_interval_s": 0.05,
                "claim_min_idle_s": 1.0,
            },
        },
    }


@contextmanager
def gateway_process(
    config: dict[str, Any], tmp: Path, name: str
) -> Iterator[subprocess.Popen[str]]:
    """A real gateway process (HTTP server, lifespan, event bus) with these settings."""
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TRELLIS_REDIS_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.events.gateway_process", str(path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("ready "), f"gateway process did not start: {line!r}"
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def assert_exactly_once_effects(rec: Receiver, ids: set[str], in_flight: set[str]) -> None:
    applied = rec.event_ids(ok_only=True)
    assert set(applied) == ids, f"missing: {len(ids - set(applied))}"
    resent = {i for i, n in applied.items() if n > 1}
    assert resent <= in_flight, "only deliveries cut off by the kill may be sent again"
    assert len(resent) <= 8  # at most the concurrency in flight


async def crash_and_recover(
    sandbox: SandboxThread,
    tmp: Path,
    redis_url: str | None,
    prefix: str | None,
    database_url: str | None = None,
) -> None:
    events = [event() for _ in range(40)]
    ids = {e.id for e in events}
    async with receiver(delay_s=0.15) as rec:
        config = overrides(sandbox, tmp, rec.url, redis_url, prefix, database_url)
        with gateway_process(config, tmp, "first") as proc:
            if database_url:
                await commit_events(database_url, events)
            elif redis_url and prefix:
                await xadd_events(redis_url, prefix, events)
            else:
                write_outbox(tmp / "data", events)
            await rec.wait_for(lambda r: len(r.requests) >= 10, within=20)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        received_before = {r["event_id"] for r in rec.requests}
        assert len(received_before) < len(ids), "the kill came too late to test anything"
        # requests the killed process had sent may still sit unread in the receiver's socket
        # buffers, and nothing signals the last one: they all land within this window
        await asyncio.sleep(0.3)
        in_flight = {r["event_id"] for r in rec.requests}
        with gateway_process(config, tmp, "second"):
            await rec.wait_for(lambda r: set(r.event_ids()) >= ids, within=30)
            await asyncio.sleep(1.5)  # the window in which a duplicate would arrive
        assert_exactly_once_effects(rec, ids, in_flight)


async def test_sqlite_bus_survives_sigkill(sandbox: SandboxThread, tmp_path: Path) -> None:
    await crash_and_recover(sandbox, tmp_path, None, None)


async def test_redis_bus_survives_sigkill(
    sandbox: SandboxThread, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    await crash_and_recover(sandbox, tmp_path, redis_url, redis_prefix)


async def test_two_processes_share_one_redis_stream(
    sandbox: SandboxThread, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    events = [event() for _ in range(60)]
    ids = {e.id for e in events}
    async with receiver(delay_s=0.02) as rec:
        config = overrides(sandbox, tmp_path, rec.url, redis_url, redis_prefix)
        with gateway_process(config, tmp_path, "a"), gateway_process(config, tmp_path, "b"):
            await xadd_events(redis_url, redis_prefix, events)
            await rec.wait_for(lambda r: set(r.event_ids()) >= ids, within=30)
            r = aioredis.Redis.from_url(redis_url, decode_responses=True)
            try:

                async def all_acknowledged() -> list[dict[str, Any]]:
                    consumers = await r.xinfo_consumers(f"{redis_prefix}events", "webhook:t")
                    assert all(c["pending"] == 0 for c in consumers), consumers
                    return list(consumers)

                consumers = await eventually(all_acknowledged, message="every entry acked")
            finally:
                await r.aclose()
        assert len(rec.requests) == len(ids)  # each event handled once, by one process
        assert rec.event_ids() == {i: 1 for i in ids}
        assert len(consumers) == 2 and all(c["pending"] == 0 for c in consumers)


async def test_postgres_bus_survives_sigkill(
    sandbox: SandboxThread, tmp_path: Path, database_url: str
) -> None:
    await crash_and_recover(sandbox, tmp_path, None, None, database_url)


async def test_two_processes_share_one_postgres_and_deliver_each_event_once(
    sandbox: SandboxThread, tmp_path: Path, database_url: str
) -> None:
    """Two gateways relay and claim from one outbox (SKIP LOCKED): every event is delivered
    exactly once, and the tables say so."""
    events = [event() for _ in range(60)]
    ids = {e.id for e in events}
    async with receiver(delay_s=0.02) as rec:
        config = overrides(sandbox, tmp_path, rec.url, None, None, database_url)
        with gateway_process(config, tmp_path, "a"), gateway_process(config, tmp_path, "b"):
            for start in range(0, len(events), 10):  # commits arriving while both dispatch
                await commit_events(database_url, events[start : start + 10])
            await rec.wait_for(lambda r: set(r.event_ids()) >= ids, within=30)
            conn = await asyncpg.connect(database_url)
            try:

                async def all_settled() -> list[Any]:
                    rows = await conn.fetch(
                        "SELECT state, attempts FROM event_deliveries WHERE subscriber = $1",
                        "webhook:t",
                    )
                    assert len(rows) == len(ids) and {r["state"] for r in rows} == {"delivered"}
                    return list(rows)

                deliveries = await eventually(all_settled, message="every delivery recorded")
                attempts = await conn.fetch("SELECT ok FROM event_attempts")
                unrelayed = await conn.fetchval("SELECT count(*) FROM outbox WHERE NOT relayed")
            finally:
                await conn.close()
        assert len(rec.requests) == len(ids)  # each event handled once, by one process
        assert rec.event_ids() == {i: 1 for i in ids}
        assert all(r["attempts"] == 1 for r in deliveries)
        assert len(attempts) == len(ids) and all(a["ok"] for a in attempts)
        assert unrelayed == 0
