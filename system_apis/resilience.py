"""Resilience primitives for outbound calls: backoff, circuit breaker, outbound pacing.

Hand-written rather than a library: each is a few lines, must be asyncio-native and must expose
its state to metrics and traces; the libraries on PyPI (pybreaker, aiobreaker, tenacity) are
either sync-first or do not honour Retry-After together with a breaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Callable
from enum import StrEnum

from .config import BreakerPolicy, VendorRateLimit
from .errors import Saturated

Clock = Callable[[], float]


def full_jitter_backoff(attempt: int, base_s: float, cap_s: float) -> float:
    """AWS 'full jitter': uniform in [0, min(cap, base * 2**attempt)]. ``attempt`` is 0-based."""
    return random.uniform(0.0, min(cap_s, base_s * (2**attempt)))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if absent."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Closed -> open after N consecutive failures -> half-open after a pause -> closed again."""

    def __init__(self, policy: BreakerPolicy, clock: Clock = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._half_open_in_flight = 0
        self._verdict: asyncio.Event | None = None
        self.listeners: list[Callable[[BreakerState], None]] = []

    @property
    def state(self) -> BreakerState:
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self.policy.reset_timeout_s
        ):
            self._set(BreakerState.HALF_OPEN)
        return self._state

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a trial call through."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self.policy.reset_timeout_s - (self._clock() - self._opened_at))

    def try_acquire(self) -> bool:
        """May a call go now? In half-open only a limited number of trial calls pass."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and (
            self._half_open_in_flight < self.policy.half_open_max_calls
        ):
            self._half_open_in_flight += 1
            return True
        return False

    async def await_trial(self, timeout_s: float) -> bool:
        """Half-open with every trial slot taken: wait (at most ``timeout_s``) for a trial's
        verdict, then try again. The concurrent calls of one view share the trial's outcome
        instead of being refused while it runs. False: still no slot (the trial failed, or
        no verdict in time)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while not self.try_acquire():
            remaining = end - loop.time()
            if self.state is not BreakerState.HALF_OPEN or remaining <= 0:
                return False  # open again (the trial failed), or no verdict in time
            if self._verdict is None:
                self._verdict = asyncio.Event()
            verdict = self._verdict
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await verdict.wait()
        return True

    def _trial_ended(self) -> None:
        if self._verdict is not None:
            self._verdict.set()  # wake the waiters; the next half-open round gets a new event
            self._verdict = None

    def record_success(self) -> None:
        self._failures = 0
        if self._state is not BreakerState.CLOSED:
            self._half_open_in_flight = 0
            self._set(BreakerState.CLOSED)
            self._trial_ended()

    def record_failure(self) -> None:
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or (
            self._state is BreakerState.CLOSED and self._failures >= self.policy.failure_threshold
        ):
            self._half_open_in_flight = 0
            self._opened_at = self._clock()
            self._set(BreakerState.OPEN)
            self._trial_ended()

    def release_trial(self) -> None:
        """A half-open trial ended without a verdict (e.g. cancelled): free its slot."""
        if self._state is BreakerState.HALF_OPEN and self._half_open_in_flight > 0:
            self._half_open_in_flight -= 1
            self._trial_ended()  # a slot is free: one waiter takes it

    def _set(self, state: BreakerState) -> None:
        if state is not self._state:
            self._state = state
            for listener in self.listeners:
                listener(state)


class OutboundQueueFull(Saturated):
    """The outbound pacer's queue is longer than the caller's timeout: nothing was sent, so
    it is no verdict on the backend (no breaker failure) and not retried."""


class OutboundPacer:
    """Token bucket that *waits* for a token, so steady traffic never trips a vendor's 429.

    ``limits`` (used for inbound limits) only answers allowed/refused; outbound we want to queue.
    A caller reserves its token when it arrives: the bucket may go below zero, by the tokens
    callers already waiting hold, so a newcomer's wait includes everyone queued before it and
    is known at once. A caller whose wait would exceed its timeout is refused immediately and
    takes nothing; callers are served in arrival order without a lock.
    """

    def __init__(self, limit: VendorRateLimit, clock: Clock = time.monotonic) -> None:
        self.rate = limit.per_second
        self.capacity = float(limit.burst or max(1, round(limit.rate)))
        self._tokens = self.capacity  # below zero: tokens reserved by callers still waiting
        self._clock = clock
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def available(self) -> float:
        """Tokens in the bucket now (``capacity`` when idle; below 1, or below 0 with callers
        queued, when calls must wait)."""
        self._refill()
        return self._tokens

    def reserve(self, timeout_s: float | None = None) -> float | None:
        """Reserve one token: the seconds until it is due (0: now), counting every caller
        queued ahead; None, with nothing reserved, when that is longer than ``timeout_s``."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        wait = (1.0 - self._tokens) / self.rate
        if timeout_s is not None and wait > timeout_s:
            return None
        self._tokens -= 1.0
        return wait

    def cancel(self) -> None:
        """Give back a reserved token that will not be used (its caller gave up waiting)."""
        self._refill()
        self._tokens = min(self.capacity, self._tokens + 1.0)

    async def acquire(self, timeout_s: float | None = None) -> bool:
        """Take one token, waiting at most ``timeout_s`` in all (queueing included); False at
        once, without waiting, if the token would come later than that."""
        wait = self.reserve(timeout_s)
        if wait is None:
            return False
        if wait > 0.0:
            try:
                await asyncio.sleep(wait)
            except BaseException:  # cancelled while waiting: the token goes to the next caller
                self.cancel()
                raise
        return True


class Slots:
    """At most ``limit`` holders at once; waiters are served first come, first served.

    A backend client's bulkhead and a transport's connection cap. Unlike ``asyncio.Semaphore``
    a free slot is taken without an await (its ``locked()`` walks the waiters with a generator
    on every call), and a wait has a deadline on the loop's clock. A released slot passes
    straight to the first waiter, so a newcomer never takes it ahead of the queue.
    """

    __slots__ = ("_waiters", "held", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_take(self) -> bool:
        if self.held < self.limit:  # a waiter exists only while every slot is held
            self.held += 1
            return True
        return False

    async def take(self, deadline: float) -> None:
        """A slot, waiting for one until ``deadline`` (``loop.time()``); else TimeoutError."""
        if self.try_take():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            async with asyncio.timeout_at(deadline):
                await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.give_back()  # handed a slot just as we gave up: pass it on
            else:
                fut.cancel()
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
            raise

    def give_back(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to the first in line
                return
        self.held -= 1
