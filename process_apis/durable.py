"""Durable multi-step operations: the saga log decides what a retry, a restart or an operator
sees, never a process's memory.

- Before each step's backend call its intent is recorded (with the reference the backend gets),
  and its outcome after, in the saga log (``ports.SagaLog``). A step whose intent is recorded
  but not its outcome is *unknown*: before it is undone it is looked up at the vendor by that
  reference (``Recovery.lookup``).
- The operation holds a lease while it runs, renewed in the background. When its process dies
  the lease expires and any gateway process's sweeper (``gateway/operations.py``) takes it over:
  it finishes what was already finished (the answer was recorded) or undoes what was made.
- A retry with the same Idempotency-Key gets the operation's one outcome from the log: the first
  201, the first problem when it failed (whether its undo is done or still being retried), a
  409 with ``Retry-After`` only while a live process runs it. A failure that kept its steps
  for resumption (``resumable``) runs again.
- Each operation gets a reference of its own, never reused: a cancelled order or void invoice
  is never handed to a later run as if it were its result.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from system_apis.errors import BackendError, BackendUnavailable

from .errors import KeyInProgress, StepFailed
from .idempotency import HEADER, reference_of
from .ports import OperationRecord, OpState, SagaLog, StepRecord, StepState, StoredResponse
from .web import InvalidInput

log = logging.getLogger("trellis.process.durable")

OWNER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
"""This process, as the owner of the leases it takes."""

__all__ = [
    "OWNER",
    "RECOVERY",
    "DurableConfig",
    "Journal",
    "OperationInterrupted",
    "Recovery",
    "Replayed",
    "durable_once",
    "problem_of",
    "recover",
]


@dataclass(frozen=True, slots=True)
class DurableConfig:
    lease_s: float = 15.0
    """A running operation whose process stops renewing this long is taken over."""
    undo_attempts: int = 5
    """Failed undos are retried this many times (with backoff) before an operator is needed."""
    backoff_s: float = 2.0
    backoff_max_s: float = 300.0

    def backoff(self, attempt: int) -> float:
        return float(min(self.backoff_max_s, self.backoff_s * 2 ** max(0, attempt)))


class OperationInterrupted(BackendUnavailable):
    """The saga log could not record the operation's progress, or its process stopped: it is
    finished or undone by a gateway process, and the same request then answers its outcome."""

    problem_type = "operation-interrupted"

    def __init__(self, detail: str, *, retry_after: float = 5.0) -> None:
        super().__init__("trellis", detail, retry_after=retry_after)


class Replayed(BackendError):
    """The problem an operation answered first, answered again to a retry of the same key."""

    def __init__(self, problem: dict[str, Any], status: int) -> None:
        super().__init__(str(problem.get("backend", "trellis")), str(problem.get("detail", "")))
        self.status = status
        self.problem_type = str(problem.get("problem_type", "step-failed"))
        self._extra = {
            k: v for k, v in problem.items() if k not in ("backend", "detail", "problem_type")
        }

    def problem_extra(self) -> dict[str, object]:
        return dict(self._extra)


def problem_of(exc: BackendError) -> StoredResponse:
    """The problem ``exc`` renders as, in the form the log keeps for replays."""
    extra: dict[str, object] = getattr(exc, "problem_extra", dict)()
    body = {"problem_type": exc.problem_type, "backend": exc.backend, "detail": exc.detail}
    return StoredResponse(exc.status, {**body, **extra})


def _as_record(value: Any) -> dict[str, Any]:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, StoredResponse):
        return {"status": value.status, "body": value.body}
    if isinstance(value, dict):
        return value
    return {"value": value}


@dataclass(slots=True)
class Journal:
    """One running operation's handle on the log, given to its ``Saga``."""

    log: SagaLog
    op: OperationRecord
    made: set[str] = field(default_factory=set)

    @property
    def reference(self) -> str:
        return self.op.reference

    async def intent(self, step: str, intent: dict[str, Any]) -> None:
        await self.log.step(self.op.id, step, StepState.INTENT, intent=intent)

    async def done(self, step: str, result: Any) -> None:
        await self.log.step(self.op.id, step, StepState.DONE, result=_as_record(result))
        self.made.add(step)

    async def note(self, step: str, state: StepState, error: str | None = None) -> None:
        """An outcome that is best recorded but must not hide the failure being handled."""
        try:
            await self.log.step(self.op.id, step, state, error=error)
        except Exception as exc:
            log.error(
                "saga log unavailable; the sweeper reconciles this step",
                extra={"operation": self.op.id, "step": step, "error": repr(exc)},
            )


@dataclass(frozen=True, slots=True)
class Recovery:
    """How to undo an operation's steps from their records alone, after its process is gone.

    ``undo[step](apis, op, result)`` undoes a step whose result was recorded; ``lookup[step]
    (apis, op, intent)`` finds at the vendor what a step with an unknown outcome made (by the
    reference it was sent), returning the result to undo, or None when nothing was made. A step
    with no undo is a kept fact (a CRM activity, a customer record) and is reported as such.
    """

    undo: dict[str, Callable[[Any, OperationRecord, dict[str, Any]], Awaitable[Any]]]
    lookup: dict[
        str, Callable[[Any, OperationRecord, dict[str, Any]], Awaitable[dict[str, Any] | None]]
    ]
    resumable: bool = False
    """A failure keeps the steps done and the same request resumes (no undo exists)."""


RECOVERY: dict[str, Recovery] = {}
"""Per operation kind; each domain module registers its own."""


class _Lease:
    """Renews the operation's lease while it runs, so only a dead process loses it."""

    def __init__(self, log_: SagaLog, op: OperationRecord, config: DurableConfig) -> None:
        self._log, self._op, self._config = log_, op, config
        self._task: asyncio.Task[None] | None = None

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self._config.lease_s / 3)
            try:
                await self._log.renew(self._op.id, OWNER, self._config.lease_s)
            except Exception as exc:  # the next renewal may succeed; expiry is the backstop
                log.warning(
                    "lease renewal failed", extra={"operation": self._op.id, "error": repr(exc)}
                )

    def __enter__(self) -> _Lease:
        self._task = asyncio.get_running_loop().create_task(self._renew())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


def _mismatch() -> InvalidInput:
    return InvalidInput(
        f"this {HEADER} was already used with a different request body",
        [
            {
                "path": f"header/{HEADER}",
                "message": "reused with another body",
                "type": "idempotency_mismatch",
            }
        ],
    )


def _answer(op: OperationRecord, fp: str, rerun_failed: bool) -> StoredResponse | None:
    """The recorded outcome for a retry of ``op``; None when the retry should run it again."""
    if op.fingerprint != fp:
        raise _mismatch()
    if op.state is OpState.DONE and op.response is not None:
        return op.response
    if op.state is OpState.RETRYABLE or (rerun_failed and op.state is OpState.FAILED):
        return None
    if op.response is not None and op.response.status >= 400:
        raise Replayed(op.response.body, op.response.status)
    if op.state is OpState.RUNNING:
        wait = max(1.0, op.lease_until - time.time())
        raise KeyInProgress(retry_after=wait)
    raise OperationInterrupted(op.detail or "the operation did not complete")


async def durable_once(
    saga_log: SagaLog,
    kind: str,
    key: str,
    fp: str,
    run: Callable[[Journal], Awaitable[StoredResponse]],
    config: DurableConfig,
    *,
    rerun_failed: bool = False,
) -> tuple[StoredResponse, bool]:
    """Run ``run`` once per ``key`` under the saga log; the answer and whether it is a replay.

    ``rerun_failed``: the key is not the caller's request but the record acted on (a deal), so
    a failure that was fully undone runs again on the next request, under a new reference."""
    try:
        op, created = await saga_log.start(
            kind, key, fp, reference_of(f"{key}#{uuid.uuid4().hex}"), OWNER, config.lease_s
        )
    except Exception as exc:
        log.error("saga log unavailable", extra={"kind": kind, "error": repr(exc)})
        raise OperationInterrupted(
            "the operation log is unavailable; nothing was done, retry later"
        ) from exc
    if not created:
        replay = _answer(op, fp, rerun_failed)
        if replay is not None:
            return replay, True
        fresh = reference_of(f"{key}#{uuid.uuid4().hex}") if op.state is OpState.FAILED else None
        restarted = await saga_log.restart(op.id, OWNER, config.lease_s, fresh)
        if restarted is None:
            raise KeyInProgress(retry_after=1.0)
        op = restarted
    journal = Journal(saga_log, op)
    with _Lease(saga_log, op, config):
        try:
            response = await run(journal)
        except StepFailed as exc:
            await _record_failure(saga_log, op, journal, exc, config)
            raise
        except OperationInterrupted:
            raise
        except BackendError as exc:
            await _record_other(saga_log, op, journal, problem_of(exc))
            raise
        except Exception:
            await _record_other(saga_log, op, journal, None)
            raise
    try:
        await saga_log.finish(op.id, OpState.DONE, response)
    except Exception as exc:  # the answer is in the publish step's record: the sweeper finishes
        log.error("saga log unavailable at finish", extra={"operation": op.id, "error": repr(exc)})
    return response, False


async def _record_failure(
    saga_log: SagaLog,
    op: OperationRecord,
    journal: Journal,
    exc: StepFailed,
    config: DurableConfig,
) -> None:
    problem = problem_of(exc)
    unresolved = {  # what the sweeper must still settle; a kept step is a fact, not a debt
        k: v for k, v in exc.not_undone.items() if v.startswith(("undo failed", "outcome unknown"))
    }
    try:
        if (exc.resumable and not exc.compensated) or (not journal.made and not exc.not_undone):
            # nothing was made (or all is kept for resumption): the same request runs again
            await saga_log.finish(op.id, OpState.RETRYABLE, problem, exc.detail)
        elif unresolved and RECOVERY.get(op.kind) is not None:
            # an undo failed or an outcome is unknown: the sweeper retries it with backoff
            await saga_log.finish(
                op.id,
                OpState.RUNNING,
                problem,
                exc.detail,
                retry_at=time.time() + config.backoff(0),
            )
        else:
            await saga_log.finish(op.id, OpState.FAILED, problem, exc.detail)
    except Exception as err:  # the lease expires and the sweeper reconciles from the steps
        log.error("saga log unavailable at failure", extra={"operation": op.id, "error": repr(err)})


async def _record_other(
    saga_log: SagaLog, op: OperationRecord, journal: Journal, problem: StoredResponse | None
) -> None:
    """A failure outside any step (bad input, a read before the first write): if nothing was
    made the same request may simply run again; otherwise the sweeper undoes what was made."""
    if journal.made:
        return
    try:
        await saga_log.finish(op.id, OpState.RETRYABLE, problem)
    except Exception as err:
        log.error("saga log unavailable", extra={"operation": op.id, "error": repr(err)})


# --- recovery: the sweeper's work on one operation --------------------------------------------

INTERRUPTED = "the gateway stopped while the operation ran; what it made was undone"


async def recover(
    apis: Any, saga_log: SagaLog, op: OperationRecord, config: DurableConfig
) -> OpState:
    """Finish or undo an operation whose process is gone (or whose undo failed before)."""
    rec = RECOVERY.get(op.kind)
    publish = next((s for s in op.steps if s.name == "publish"), None)
    committed = publish.result if publish is not None else None
    if (
        publish is not None
        and publish.state is StepState.INTENT
        and rec
        and "publish" in rec.lookup
    ):
        committed = await rec.lookup["publish"](apis, op, publish.intent)
    if publish is not None and committed and publish.state in (StepState.DONE, StepState.INTENT):
        response = StoredResponse(int(committed["status"]), committed["body"])
        await saga_log.step(op.id, "publish", StepState.DONE, result=committed)
        await saga_log.finish(op.id, OpState.DONE, response)
        return OpState.DONE
    problem = op.response or StoredResponse(
        503,
        {"problem_type": "operation-interrupted", "backend": "trellis", "detail": INTERRUPTED},
    )
    if rec is None or rec.resumable:
        await saga_log.finish(op.id, OpState.RETRYABLE, problem, op.detail or INTERRUPTED)
        return OpState.RETRYABLE
    failures: dict[str, str] = {}
    for step in reversed(op.steps):
        failure = await _undo_step(apis, saga_log, op, rec, step)
        if failure is not None:
            failures[step.name] = failure
    if not failures:
        await saga_log.finish(op.id, OpState.FAILED, problem, op.detail or INTERRUPTED)
        return OpState.FAILED
    detail = "; ".join(f"{k}: {v}" for k, v in failures.items())
    if op.attempts + 1 >= config.undo_attempts:
        await saga_log.finish(op.id, OpState.STUCK, problem, detail)
        log.error(
            "ALERT operation stuck: operator action needed",
            extra={"operation": op.id, "kind": op.kind, "detail": detail},
        )
        return OpState.STUCK
    retry_at = time.time() + config.backoff(op.attempts + 1)
    await saga_log.finish(op.id, OpState.RUNNING, problem, detail, retry_at=retry_at)
    return OpState.RUNNING


async def _undo_step(
    apis: Any, saga_log: SagaLog, op: OperationRecord, rec: Recovery, step: StepRecord
) -> str | None:
    if step.state in (StepState.UNDONE, StepState.FAILED, StepState.KEPT) or step.name == "publish":
        return None
    undo = rec.undo.get(step.name)
    if undo is None:
        await saga_log.step(op.id, step.name, StepState.KEPT)
        return None
    result = step.result
    if step.state is StepState.INTENT or result is None:
        lookup = rec.lookup.get(step.name)
        if lookup is None:
            return "outcome unknown and no way to look it up"
        try:
            result = await lookup(apis, op, step.intent)
        except Exception as exc:
            await saga_log.step(op.id, step.name, StepState.INTENT, error=f"lookup failed: {exc!r}")
            return f"lookup failed: {type(exc).__name__}"
        if result is None:
            await saga_log.step(op.id, step.name, StepState.FAILED, error="not found at the vendor")
            return None
        await saga_log.step(op.id, step.name, StepState.DONE, result=result)
    try:  # each undo checks the record first: one already undone is left as it is
        await undo(apis, op, {**step.intent, **result})
    except Exception as exc:
        await saga_log.step(op.id, step.name, StepState.UNDO_FAILED, error=repr(exc)[:500])
        return f"undo failed: {type(exc).__name__}"
    await saga_log.step(op.id, step.name, StepState.UNDONE)
    return None
