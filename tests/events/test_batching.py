"""Batched bookkeeping: group-committed publishes and outcomes keep every guarantee.

Outcomes of attempts that end together share a transaction (SQLite) or a MULTI (Redis), and
concurrent publishes share one; each caller still returns only once its own write is durable,
one bad write does not take its batch down, and the concurrency bound still holds.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from gateway.events.batching import GroupCommit
from gateway.events.config import DeliveryPolicy
from gateway.events.records import DeadLetter, DeadLetterQuery
from gateway.events.sqlite_store import Claimed, Outcome, SqliteEventStore
from gateway.events.subscriptions import Subscription
from process_apis.ports import DomainEvent
from tests.events.conftest import BusFactory
from tests.events.helpers import FAST, event
from tests.eventually import eventually


async def test_group_commit_answers_each_caller_and_isolates_failures() -> None:
    calls: list[list[int]] = []

    async def flush(items: list[int]) -> list[int | Exception]:
        calls.append(list(items))
        await asyncio.sleep(0.01)
        return [ValueError(i) if i == 3 else i * 10 for i in items]

    commit: GroupCommit[int, int] = GroupCommit(flush)  # type: ignore[arg-type]
    results = await asyncio.gather(*(commit.submit(i) for i in range(8)), return_exceptions=True)
    assert [r for r in results if not isinstance(r, Exception)] == [0, 10, 20, 40, 50, 60, 70]
    assert isinstance(results[3], ValueError)
    assert len(calls) < 8 and sorted(i for c in calls for i in c) == list(range(8))


async def test_concurrent_sqlite_publishes_share_transactions(tmp_path: Path) -> None:
    store = SqliteEventStore.in_data_dir(tmp_path)
    await store.open()
    events = [event() for _ in range(200)]
    try:
        await asyncio.gather(*(store.publish([e]) for e in events), store.publish([events[0]]))
        conn = sqlite3.connect(store.path)
        ids = [r[0] for r in conn.execute("SELECT id FROM outbox ORDER BY seq")]
        conn.close()
        assert sorted(ids) == sorted(e.id for e in events)  # each once, the repeat kept out
    finally:
        await store.close()


def _claim_all(store: SqliteEventStore, events: list[DomainEvent]) -> list[Claimed]:
    store.relay(lambda t: ["s"], 100)
    claimed = store.claim(["s"], 100, 60.0)
    assert {c.event.id for c in claimed} == {e.id for e in events}
    return sorted(claimed, key=lambda c: [e.id for e in events].index(c.event.id))


async def test_sqlite_batch_of_outcomes_survives_one_bad_outcome(tmp_path: Path) -> None:
    class Flaky(SqliteEventStore):
        def _fail(self, conn, claimed, *args):  # type: ignore[no-untyped-def]
            if claimed.event.subject == "bad":
                raise sqlite3.OperationalError("disk trouble")
            return super()._fail(conn, claimed, *args)

    store = Flaky.in_data_dir(tmp_path)
    await store.open()
    events = [event(), event(subject="bad"), event(), event()]
    try:
        await store.publish(events)
        ok1, bad, dead, ok2 = await asyncio.to_thread(_claim_all, store, events)
        now = time.time()
        outcomes = [
            Outcome(ok1, now, True),
            Outcome(bad, now, False, "boom", None, 1.0),
            Outcome(dead, now, False, "PermanentFailure: no", None, None),
            Outcome(ok2, now, True),
        ]
        step = await asyncio.to_thread(
            store.dispatch, outcomes, lambda t: ["s"], 100, ["s"], 10, 60.0
        )
        assert step.recorded[0] is None and step.recorded[3] is None
        assert isinstance(step.recorded[1], sqlite3.OperationalError)
        letter = step.recorded[2]
        assert isinstance(letter, DeadLetter) and letter.event_id == dead.event.id
        assert step.error is None and step.claimed == []  # the bad one is still leased
        conn = sqlite3.connect(store.path)
        states = dict(conn.execute("SELECT event_id, state FROM event_deliveries"))
        processed = {r[0] for r in conn.execute("SELECT event_id FROM event_processed")}
        conn.close()
        assert states == {
            ok1.event.id: "delivered",
            bad.event.id: "pending",
            dead.event.id: "dead_lettered",
            ok2.event.id: "delivered",
        }
        assert processed == {ok1.event.id, ok2.event.id}
        assert [d.id for d in await store.dead_letters(DeadLetterQuery())] == [letter.id]
    finally:
        await store.close()


async def handled_once_within_the_concurrency(
    make_bus: BusFactory, redis_url: str | None, prefix: str | None
) -> None:
    running = peak = 0
    handled: list[str] = []

    async def handle(ev: DomainEvent) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.002)
        running -= 1
        handled.append(ev.id)

    sub = Subscription("count", frozenset({"test.happened"}), handle, DeliveryPolicy(**FAST))
    bus_cfg: dict[str, object] = {"concurrency": 4, "poll_interval_s": 0.05}
    events = [event() for _ in range(300)]
    async with make_bus(
        {"bus": bus_cfg}, extra=[sub], redis_url=redis_url, redis_prefix=prefix
    ) as bus:
        await asyncio.gather(*(bus.publish([e]) for e in events))
        await eventually(
            lambda: len(handled) >= len(events), timeout=20, message="every event handled"
        )
        await asyncio.sleep(0.3)  # the window a second handling of an event would happen in
    assert sorted(handled) == sorted(e.id for e in events)  # each once
    assert peak <= 4


@pytest.mark.slow  # a running bus
async def test_sqlite_many_events_each_handled_once_within_the_concurrency(
    make_bus: BusFactory,
) -> None:
    await handled_once_within_the_concurrency(make_bus, None, None)


@pytest.mark.slow  # a running bus
async def test_redis_many_events_each_handled_once_within_the_concurrency(
    make_bus: BusFactory, redis_url: str, redis_prefix: str
) -> None:
    await handled_once_within_the_concurrency(make_bus, redis_url, redis_prefix)
