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

from .errors import StepFailed
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
    def __init__(self, name: str) -> None:
        self.name = name
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
    ) -> T:
        """Do one step; on failure undo the earlier ones and raise ``StepFailed``.

        ``keep_reason`` marks a step that cannot be undone (the backend offers no way), so a
        later failure reports it as kept instead of pretending it was rolled back.
        """
        with span(f"{self.name}.{step}"):
            try:
                result = await action()
            except Exception as exc:
                if undo is not None and outcome_unknown(exc):
                    await self._settle(step, action, undo)
                elif keep_reason is not None and outcome_unknown(exc):
                    # no undo, and it may have been applied: report it kept, never rolled back
                    self._kept[step] = f"outcome unknown: it may have been applied; {keep_reason}"
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
        return result

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

    async def compensate(self) -> tuple[list[str], dict[str, str]]:
        """Undo completed steps, newest first; an undo that fails is reported, not raised."""
        done: list[str] = []
        failed: dict[str, str] = {}
        for step, undo in reversed(self._undo):
            with span(f"{self.name}.undo.{step}"):
                try:
                    await undo()
                    done.append(step)
                except Exception as exc:  # keep undoing the rest; report this one
                    log.error(
                        "compensation failed",
                        extra={"saga": self.name, "step": step, "error": repr(exc)},
                    )
                    failed[step] = f"undo failed: {type(exc).__name__}"
        self._undo.clear()
        return done, failed
