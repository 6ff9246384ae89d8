"""The saga log, on each of its stores (SQLite, PostgreSQL): one operation per key, steps in
order, leases that only a live owner renews, takeover of expired ones (once, when several hosts
claim together), replayable answers, bounded retention, and (SQLite) a private file."""

from __future__ import annotations

import asyncio
import stat
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.stores.saga_postgres import PostgresSagaLog
from gateway.stores.saga_sqlite import SqliteSagaLog
from process_apis.ports import OpState, StepState, StoredResponse

Log = SqliteSagaLog | PostgresSagaLog
Opener = Callable[..., Log]


@pytest.fixture(params=["sqlite", "postgres"])
def make_log(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """A factory of logs on one store: several logs from it share the store, as hosts do."""
    if request.param == "sqlite":
        return lambda **kw: SqliteSagaLog(tmp_path / "sagas.db", **kw)
    url: str = request.getfixturevalue("database_url")
    return lambda **kw: PostgresSagaLog(url, **kw)


@pytest.fixture
async def saga_log(make_log: Opener) -> AsyncIterator[Log]:
    store = make_log()
    await store.open()
    yield store
    await store.close()


async def test_one_operation_per_key(saga_log: Log) -> None:
    op, created = await saga_log.start("order", "k1", "fp", "REF1", "a", 30)
    assert created and op.state is OpState.RUNNING and op.owner == "a"
    again, created_again = await saga_log.start("order", "k1", "fp", "REF2", "b", 30)
    assert not created_again
    assert again.id == op.id and again.reference == "REF1" and again.owner == "a"
    other, created_other = await saga_log.start("order", "k2", "fp", "REF3", "a", 30)
    assert created_other and other.id != op.id


async def test_steps_keep_intent_and_outcome_in_order(saga_log: Log) -> None:
    op, _ = await saga_log.start("order", "k", "fp", "REF", "a", 30)
    await saga_log.step(op.id, "erp.create_order", StepState.INTENT, intent={"reference": "REF"})
    await saga_log.step(op.id, "inventory.reserve", StepState.INTENT, intent={"n": 1})
    await saga_log.step(op.id, "erp.create_order", StepState.DONE, result={"id": "42"})
    await saga_log.step(op.id, "erp.create_order", StepState.UNDO_FAILED, error="boom")
    got = await saga_log.get(op.id)
    assert got is not None
    assert [s.name for s in got.steps] == ["erp.create_order", "inventory.reserve"]
    erp = got.steps[0]
    assert erp.state is StepState.UNDO_FAILED
    assert erp.intent == {"reference": "REF"}  # an outcome never erases the intent
    assert erp.result == {"id": "42"}  # nor the result undo needs
    assert erp.error == "boom" and erp.attempts == 1


async def test_answers_are_kept_for_replay(saga_log: Log) -> None:
    op, _ = await saga_log.start("order", "k", "fp", "REF", "a", 30)
    await saga_log.finish(op.id, OpState.DONE, StoredResponse(201, {"id": "7"}))
    done = await saga_log.by_key("k")
    assert done is not None and done.state is OpState.DONE and done.owner is None
    assert done.response == StoredResponse(201, {"id": "7"})


async def test_only_the_owner_renews_and_expired_leases_are_taken_over(
    saga_log: Log,
) -> None:
    live, _ = await saga_log.start("order", "live", "fp", "R1", "a", 60)
    dead, _ = await saga_log.start("order", "dead", "fp", "R2", "a", 0)
    assert not await saga_log.renew(live.id, "b", 60)
    assert await saga_log.renew(live.id, "a", 60)
    claimed = await saga_log.claim_expired("b", 60, 10)
    assert [op.id for op in claimed] == [dead.id]
    assert claimed[0].owner == "b"
    assert await saga_log.claim_expired("c", 60, 10) == []  # b's lease is live now
    assert not await saga_log.renew(dead.id, "a", 60)  # a lost it


async def test_failed_undo_waits_for_its_backoff_then_stuck_is_left_to_the_operator(
    saga_log: Log,
) -> None:
    op, _ = await saga_log.start("order", "k", "fp", "R", "a", 60)
    problem = StoredResponse(503, {"problem_type": "step-failed"})
    await saga_log.finish(op.id, OpState.RUNNING, problem, "undo failed", retry_at=0)
    (due,) = await saga_log.claim_expired("a", 60, 10)
    assert due.attempts == 1 and due.response == problem
    await saga_log.finish(op.id, OpState.STUCK, problem, "undo failed")
    assert await saga_log.claim_expired("a", 60, 10) == []
    stuck = await saga_log.listing(OpState.STUCK, 10)
    assert [s.id for s in stuck] == [op.id]


async def test_finished_restarts_running_does_not(saga_log: Log) -> None:
    op, _ = await saga_log.start("onboard", "k", "fp", "R", "a", 60)
    assert await saga_log.restart(op.id, "b", 60) is None  # running
    await saga_log.finish(op.id, OpState.RETRYABLE, None)
    again = await saga_log.restart(op.id, "b", 60)
    assert again is not None and again.state is OpState.RUNNING and again.owner == "b"


async def test_finished_operations_are_forgotten_after_retention(make_log: Opener) -> None:
    store = make_log(retain_s=0)
    await store.open()
    try:
        old, _ = await store.start("order", "old", "fp", "R", "a", 60)
        await store.step(old.id, "s", StepState.INTENT)
        await store.finish(old.id, OpState.DONE, StoredResponse(201, {}))
        running, _ = await store.start("order", "running", "fp", "R2", "a", 60)
        await store.start("order", "new", "fp", "R3", "a", 60)
        assert await store.get(old.id) is None
        assert await store.get(running.id) is not None  # unfinished work is never dropped
    finally:
        await store.close()


async def test_file_is_private(tmp_path: Path) -> None:
    saga_log = SqliteSagaLog(tmp_path / "sagas.db")
    await saga_log.open()
    try:
        assert stat.S_IMODE(saga_log.path.stat().st_mode) == 0o600
    finally:
        await saga_log.close()


async def test_hosts_claiming_together_take_each_expired_operation_once(
    make_log: Opener,
) -> None:
    """Three hosts' logs on one store sweep at the same moment: every expired operation is
    leased to exactly one of them, and a live one to none."""
    hosts = [make_log() for _ in range(3)]
    for host in hosts:
        await host.open()
    try:
        dead = [
            (await hosts[0].start("order", f"k{i}", "fp", f"R{i}", "gone", 0))[0] for i in range(12)
        ]
        live, _ = await hosts[0].start("order", "live", "fp", "RL", "alive", 60)
        claims = await asyncio.gather(
            *(
                host.claim_expired(f"host{n}", 60, 5)
                for n, host in enumerate(hosts)
                for _ in range(2)
            )
        )
        claimed = [op for batch in claims for op in batch]
        assert sorted(op.id for op in claimed) == sorted(op.id for op in dead)
        for op in claimed:
            again = await hosts[1].get(op.id)
            assert again is not None and again.owner == op.owner != "gone"
        assert (await hosts[2].get(live.id)).owner == "alive"  # type: ignore[union-attr]
    finally:
        for host in hosts:
            await host.close()


async def test_a_failed_undo_is_not_claimed_before_its_backoff(saga_log: Log) -> None:
    op, _ = await saga_log.start("order", "k", "fp", "R", "a", 60)
    problem = StoredResponse(503, {"problem_type": "step-failed"})
    await saga_log.finish(op.id, OpState.RUNNING, problem, "undo failed", retry_at=time.time() + 60)
    assert await saga_log.claim_expired("b", 60, 10) == []
    waiting = await saga_log.get(op.id)
    assert waiting is not None and waiting.owner is None
    assert 50 < waiting.next_attempt_at - time.time() <= 61


async def test_a_new_run_drops_the_old_steps_and_a_running_one_keeps_them(saga_log: Log) -> None:
    op, _ = await saga_log.start("order", "k", "fp", "R1", "a", 60)
    await saga_log.step(op.id, "erp.create_order", StepState.DONE, result={"id": "1"})
    # running: a restart (even one with a new reference) changes nothing, steps included
    assert await saga_log.restart(op.id, "b", 60, "R2") is None
    kept = await saga_log.get(op.id)
    assert kept is not None and kept.reference == "R1" and len(kept.steps) == 1
    await saga_log.finish(op.id, OpState.FAILED, StoredResponse(502, {}))
    again = await saga_log.restart(op.id, "b", 60, "R2")
    assert again is not None and again.reference == "R2" and again.steps == ()
    assert again.response is None and again.owner == "b"


async def test_an_old_finished_operation_of_the_same_key_is_still_replayed(
    make_log: Opener,
) -> None:
    store = make_log(retain_s=0)
    await store.open()
    try:
        op, _ = await store.start("order", "k", "fp", "R", "a", 60)
        await store.finish(op.id, OpState.DONE, StoredResponse(201, {"id": "1"}))
        again, created = await store.start("order", "k", "fp", "R2", "b", 60)
        assert (
            not created and again.id == op.id and again.response == StoredResponse(201, {"id": "1"})
        )
    finally:
        await store.close()
