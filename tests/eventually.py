"""Wait for a condition instead of sleeping a fixed time: ``eventually`` and ``eventually_sync``.

The condition is called until it returns a truthy value, which is returned. An exception it
raises (a failed ``assert`` included) counts as "not yet". On timeout the test fails with an
``AssertionError`` naming the last value returned or chaining the last exception raised, so a
timeout says what was seen, not only that time ran out.

    rows = await eventually(lambda: store.rows() or None, timeout=10)

    async def delivered() -> bool:
        return await bus.store.state_of(ev.id, "webhook:t") is not None

    await eventually(delivered)
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

TIMEOUT_S = 15.0
"""Generous: a test on a loaded 2-core machine is slow, never wrong, when it waits longer."""
INTERVAL_S = 0.05

_NOTHING = object()


class _Tracker:
    """The last thing a condition produced, for the message on timeout."""

    def __init__(self, message: str | None) -> None:
        self.message = message
        self.value: object = _NOTHING
        self.error: BaseException | None = None
        self.calls = 0

    def failure(self, timeout: float) -> AssertionError:
        what = self.message or "condition"
        if self.error is not None:
            seen = f"last raised {type(self.error).__name__}: {self.error}"
        elif self.value is not _NOTHING:
            seen = f"last returned {self.value!r}"
        else:
            seen = "never returned"
        failure = AssertionError(f"{what} not met within {timeout} s ({self.calls} tries); {seen}")
        failure.__cause__ = self.error
        return failure


async def eventually(
    condition: Callable[[], T | Awaitable[T]],
    *,
    # a poll deadline, not a cancellation: on timeout the failure names the last value seen
    timeout: float = TIMEOUT_S,  # noqa: ASYNC109
    interval: float = INTERVAL_S,
    message: str | None = None,
) -> T:
    """Await ``condition()`` (sync or async) until it is truthy; return that value."""
    tracker = _Tracker(message)
    deadline = time.monotonic() + timeout
    while True:
        tracker.calls += 1
        try:
            value = condition()
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:
            tracker.error = exc
        else:
            tracker.error = None
            tracker.value = value
            if value:
                return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise tracker.failure(timeout)
        await asyncio.sleep(interval)


def eventually_sync(
    condition: Callable[[], T],
    *,
    timeout: float = TIMEOUT_S,
    interval: float = INTERVAL_S,
    message: str | None = None,
) -> T:
    """``eventually`` for tests that run no event loop (subprocesses driven synchronously)."""
    tracker = _Tracker(message)
    deadline = time.monotonic() + timeout
    while True:
        tracker.calls += 1
        try:
            value = condition()
        except Exception as exc:
            tracker.error = exc
        else:
            tracker.error = None
            tracker.value = value
            if value:
                return value
        if time.monotonic() >= deadline:
            raise tracker.failure(timeout)
        time.sleep(interval)
