"""The saga log's SQLite store: one operation per key, steps in order, leases that only a live
owner renews, takeover of expired ones, replayable answers, and a private file."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.stores.saga_sqlite import SqliteSagaLog
from process_apis.ports import OpState, StepState, StoredResponse


@pytest.fixture
async def saga_log(tmp_path: Path) -> AsyncIterator[SqliteSagaLog]:
    store = SqliteSagaLog(tmp_path / "sagas.db")
    await store.open()
    yield store
    await store.close()


async def test_one_operation_per_key(saga_log: SqliteSagaLog) -> None:
    op, created = await saga_log.start("order", "k1", "fp", "REF1", "a", 30)
    assert created and op.state is OpState.RUNNING and op.owner == "a"
    again, created_again = await saga_log.start("order", "k1", "fp", "REF2", "b", 30)
    assert not created_again
    assert again.id == op.id and again.reference == "REF1" and again.owner == "a"
    other, created_other = await saga_log.start("order", "k2", "fp", "REF3", "a", 30)
    assert created_other and other.id != op.id


async def test_steps_keep_intent_and_outcome_in_order(saga_log: SqliteSagaLog) -> None:
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


async def test_answers_are_kept_for_replay(saga_log: SqliteSagaLog) -> None:
    op, _ = await saga_log.start("order", "k", "fp", "REF", "a", 30)
    await saga_log.finish(op.id, OpState.DONE, StoredResponse(201, {"id": "7"}))
    done = await saga_log.by_key("k")
    assert done is not None and done.state is OpState.DONE and done.owner is None
    assert done.response == StoredResponse(201, {"id": "7"})


async def test_only_the_owner_renews_and_expired_leases_are_taken_over(
    saga_log: SqliteSagaLog,
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
    saga_log: SqliteSagaLog,
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


async def test_finished_restarts_running_does_not(saga_log: SqliteSagaLog) -> None:
    op, _ = await saga_log.start("onboard", "k", "fp", "R", "a", 60)
    assert await saga_log.restart(op.id, "b", 60) is None  # running
    await saga_log.finish(op.id, OpState.RETRYABLE, None)
    again = await saga_log.restart(op.id, "b", 60)
    assert again is not None and again.state is OpState.RUNNING and again.owner == "b"


async def test_finished_operations_are_forgotten_after_retention(tmp_path: Path) -> None:
    store = SqliteSagaLog(tmp_path / "sagas.db", retain_s=0)
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


async def test_file_is_private(saga_log: SqliteSagaLog) -> None:
    assert stat.S_IMODE(saga_log.path.stat().st_mode) == 0o600
