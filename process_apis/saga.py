"""A saga: run steps in order, remember how to undo each, undo in reverse when one fails.

Every step is traced as its own span, and a failure becomes ``StepFailed`` naming the step, the
steps undone and those that could not be undone, so the caller learns the business state.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from system_apis.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    BadBackendData,
    CircuitOpen,
)

from .durable import Journal, OperationInterrupted
from .errors import StepFailed
from .ports import StepState
from .tracing import step as span

T = TypeVar("T")
log = logging.getLogger("trellis.process.saga")

__all__ = ["Saga", "outcome_unknown"]


def outcome_unknown(exc: BaseException) -> bool:
    """Could the backend have applied the write although we got no usable answer?"""
    if isinstance(exc, CircuitOpen):
        return False  # never sent
    if isinstance(exc, (BackendTimeout, BadBackendData)):
        return True
    if isinstance(exc, BackendUnavailable):
        return True  # reset, cut-off body or 5xx after retries: the write may have landed
    return not isinstance(exc, BackendError)  # an unexpected error: assume the worst


class Saga:
    """With a ``journal`` every step's intent is recorded before its call and its outcome
    after (``durable.py``), so another process can finish or undo it."""

    def __init__(self, name: str, journal: Journal | None = None) -> None:
        self.name = name
        self.journal = journal
        self._undo: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
        self._kept: dict[str, str] = {}

    async def run(
        self,
        step: str,
        action: Callable[[], Awaitable[T]],
        undo: Callable[[T], Awaitable[Any]] | None = None,
        *,
        keep_reason: str | None = None,
        resumable: bool = False,
        intent: dict[str, Any] | None = None,
        final: bool = False,
    ) -> T:
        """Do one step; on failure undo the earlier ones and raise ``StepFailed``.

        ``keep_reason`` marks a step that cannot be undone (the backend offers no way), so a
        later failure reports it as kept instead of pretending it was rolled back.
        ``intent`` is what the saga log keeps to look the step's record up at the vendor.
        ``final`` marks the commit point: once it succeeded nothing is undone, even when the
        log cannot record it (the sweeper finds the commit by its intent).
        """
        journal = self.journal
        if journal is not None:
            try:
                await journal.intent(step, intent or {})
            except Exception as exc:  # not called: undo what was made and say so
                await self._interrupted(step, exc)
        with span(f"{self.name}.{step}"):
            try:
                result = await action()
            except Exception as exc:
                unknown = outcome_unknown(exc)
                if undo is not None and unknown:
                    await self._settle(step, action, undo)
                elif keep_reason is not None and unknown:
                    # no undo, and it may have been applied: report it kept, never rolled back
                    self._kept[step] = f"outcome unknown: it may have been applied; {keep_reason}"
                elif journal is not None and not unknown:
                    await journal.note(step, StepState.FAILED, repr(exc)[:500])
                compensated, failed = await self.compensate()
                raise StepFailed(
                    step,
                    exc,
                    compensated=compensated,
                    not_undone={**self._kept, **failed},
                    resumable=resumable,
                ) from exc
        if undo is not None:
            self._undo.append((step, lambda: undo(result)))
        elif keep_reason is not None:
            self._kept[step] = keep_reason
        if journal is not None:
            try:
                await journal.done(step, result)
            except Exception as exc:
                if final:
                    log.error("saga log unavailable after commit", extra={"error": repr(exc)})
                    return result
                await self._interrupted(step, exc)
        return result

    async def _interrupted(self, step: str, exc: Exception) -> None:
        """The saga log failed: nothing more is done, what was made is undone now, and the
        sweeper reconciles from the log once it answers again (the lease expires)."""
        log.error(
            "saga log unavailable; undoing",
            extra={"saga": self.name, "step": step, "error": repr(exc)},
        )
        compensated, _ = await self.compensate()
        raise OperationInterrupted(
            f"step {step}: the operation log is unavailable; undone: "
            f"{', '.join(compensated) or 'nothing'}; the gateway reconciles the rest",
        ) from exc

    async def _settle(
        self, step: str, action: Callable[[], Awaitable[T]], undo: Callable[[T], Awaitable[Any]]
    ) -> None:
        """The step failed without a clear answer: it may have been applied (a timeout, a reset,
        a cut-off body). Every saga action carries a stable reference / idempotency key, so
        running it once more returns what the first try made (or makes it); then it is undone
        with the rest. If even that fails, the step is reported as possibly applied."""
        with span(f"{self.name}.settle.{step}"):
            try:
                result = await action()
            except Exception as exc:
                log.error(
                    "saga step outcome unknown; not undone",
                    extra={"saga": self.name, "step": step, "error": repr(exc)},
                )
                self._kept[step] = (
                    "outcome unknown: the backend may have applied it; it carries this request's "
                    "reference for reconciliation"
                )
                return
        self._undo.append((step, lambda: undo(result)))
        if self.journal is not None:
            try:
                await self.journal.done(step, result)
            except Exception as exc:  # the intent stays: the sweeper looks it up
                log.error("saga log unavailable", extra={"saga": self.name, "error": repr(exc)})

    async def compensate(self) -> tuple[list[str], dict[str, str]]:
        """Undo completed steps, newest first; an undo that fails is reported, not raised."""
        done: list[str] = []
        failed: dict[str, str] = {}
        for step, undo in reversed(self._undo):
            with span(f"{self.name}.undo.{step}"):
                try:
                    await undo()
                    done.append(step)
                    if self.journal is not None:
                        await self.journal.note(step, StepState.UNDONE)
                except Exception as exc:  # keep undoing the rest; report this one
                    if self.journal is not None:
                        await self.journal.note(step, StepState.UNDO_FAILED, repr(exc)[:500])
                    log.error(
                        "compensation failed",
                        extra={"saga": self.name, "step": step, "error": repr(exc)},
                    )
                    failed[step] = f"undo failed: {type(exc).__name__}"
        self._undo.clear()
        return done, failed
