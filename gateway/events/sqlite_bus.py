"""The table bus: one dispatcher task relays the outbox and delivers with bounded concurrency.

It drives the embedded store (``SqliteEventStore``, each step in a worker thread) and the
PostgreSQL store of several hosts (``PostgresEventStore``, whose steps are async) alike.

It polls (cheap indexed reads) and can be woken at once by an in-process publisher; a crash
loses nothing because every step is a transaction in ``SqliteEventStore`` and leases of a
dead process are freed on the next start.

Each dispatcher step is one transaction in one worker thread (``SqliteEventStore.dispatch``):
it records the outcomes of the attempts that ended since the last step, relays new outbox
rows, and leases as many due deliveries as there are free slots. An attempt keeps its slot (and
its lease) until its outcome is committed, so no more than ``concurrency`` deliveries are ever
unrecorded, and a crash re-sends at most those.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from opentelemetry import trace

from .alerts import DeadLetterAlerts
from .config import BusConfig
from .policy import backoff_delay
from .postgres_store import PostgresEventStore
from .records import DeadLetter
from .sqlite_store import Claimed, Outcome, SqliteEventStore, Step
from .subscriptions import Subscription, attempt, events_tracer

log = logging.getLogger("trellis.events")

PRUNE_EVERY_S = 600.0


class StepStore(Protocol):
    """The dispatcher's steps, each one transaction of the store."""

    async def release_dead_leases(self) -> int: ...

    async def dispatch(
        self,
        outcomes: Sequence[Outcome],
        wants: Callable[[str], list[str]],
        batch: int,
        subscribers: Sequence[str],
        limit: int,
        lease_s: float,
    ) -> Step: ...

    async def record(self, outcomes: Sequence[Outcome]) -> list[DeadLetter | Exception | None]: ...

    async def prune(self, retention_s: float) -> None: ...


class InThreads:
    """The SQLite store's blocking steps, each run in a worker thread."""

    def __init__(self, store: SqliteEventStore) -> None:
        self.store = store

    async def release_dead_leases(self) -> int:
        return await asyncio.to_thread(self.store.release_dead_leases)

    async def dispatch(
        self,
        outcomes: Sequence[Outcome],
        wants: Callable[[str], list[str]],
        batch: int,
        subscribers: Sequence[str],
        limit: int,
        lease_s: float,
    ) -> Step:
        return await asyncio.to_thread(
            self.store.dispatch, outcomes, wants, batch, subscribers, limit, lease_s
        )

    async def record(self, outcomes: Sequence[Outcome]) -> list[DeadLetter | Exception | None]:
        return await asyncio.to_thread(self.store.record, outcomes)

    async def prune(self, retention_s: float) -> None:
        await asyncio.to_thread(self.store.prune, retention_s)


@dataclass(slots=True)
class _Pending:
    """An outcome waiting for the next dispatcher step to commit it."""

    outcome: Outcome
    done: asyncio.Future[DeadLetter | None] = field(repr=False)


class SqliteBus:
    def __init__(
        self,
        store: SqliteEventStore | PostgresEventStore,
        subscriptions: list[Subscription],
        config: BusConfig,
        alerts: DeadLetterAlerts,
        retention_s: float,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.tracer = tracer or events_tracer()
        self.store = store
        self.steps: StepStore = InThreads(store) if isinstance(store, SqliteEventStore) else store
        self.subscriptions = {s.name: s for s in subscriptions}
        self.config = config
        self.alerts = alerts
        self.retention_s = retention_s
        self._wake = asyncio.Event()
        self._busy = 0
        """Claimed deliveries whose outcome is not committed yet (each holds a slot)."""
        self._outcomes: list[_Pending] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._draining = False
        """No new claims: shutting down, the deliveries in flight finishing (``drain_s``)."""
        self._last_prune = 0.0
        self._due: float | None = None
        self._names = list(self.subscriptions)
        self._lease = max(
            [config.lease_s] + [s.policy.attempt_timeout_s + 5 for s in subscriptions]
        )

    def wants(self, event_type: str) -> list[str]:
        return [s.name for s in self.subscriptions.values() if s.wants(event_type)]

    def wake(self) -> None:
        """Look at the outbox now (a publisher in this process just committed)."""
        self._wake.set()

    async def start(self) -> None:
        freed = await self.steps.release_dead_leases()
        if freed:
            log.info("released %d delivery lease(s) of processes that ended", freed)
        self._stopping = self._draining = False
        self._task = asyncio.create_task(self._run(), name="trellis-events-sqlite")

    async def close(self) -> None:
        if self._task is not None and self._in_flight:
            # claim nothing more, let the attempts in flight end and their outcomes be
            # recorded (the loop keeps running for that), within drain_s: a delivery cut off
            # mid-attempt would be delivered again after the restart
            self._draining = True
            await asyncio.wait(set(self._in_flight), timeout=self.config.drain_s)
        if self._task is not None:
            self._stopping = True  # let a step in progress finish and answer its outcomes
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 10.0)
            except TimeoutError:
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        # A delivery cut off here keeps its lease row; the next start frees it (pid gone).
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        # attempts that ended but were not recorded yet: record them now
        pending, self._outcomes = self._outcomes, []
        if pending:
            try:
                results = await self.steps.record([p.outcome for p in pending])
            except Exception:
                log.exception("recording %d delivery outcome(s) at shutdown failed", len(pending))
                return
            for letter in results:
                if isinstance(letter, DeadLetter):
                    await self.alerts.dead_lettered(letter)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                again = await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # a locked or unavailable DB: keep going, say so
                log.exception("event dispatcher step failed; retrying")
                await asyncio.sleep(1.0)
                again = False
            if not again and not self._stopping:
                await self._sleep(self._due)

    async def _tick(self) -> bool:
        """One step; True when there is more to do at once."""
        self._wake.clear()  # a wake-up from now on means another step
        pending, self._outcomes = self._outcomes, []
        closing = self._stopping or self._draining
        free = 0 if closing else self.config.concurrency - self._busy + len(pending)
        try:
            step = await self.steps.dispatch(
                [p.outcome for p in pending],
                self.wants,
                self.config.batch_size,
                self._names,
                free,
                self._lease,
            )
        except BaseException:
            self._outcomes[:0] = pending  # not answered: the next step records them
            raise
        self._busy -= len(pending)
        for p, result in zip(pending, step.recorded, strict=True):
            if p.done.done():
                continue
            if isinstance(result, Exception):
                p.done.set_exception(result)
            else:
                p.done.set_result(result)
        for item in step.claimed:
            self._busy += 1
            task = asyncio.create_task(self._deliver(item))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        self._due = step.next_due
        if step.error is not None:
            raise step.error
        now = time.time()
        if now - self._last_prune > PRUNE_EVERY_S:
            self._last_prune = now
            await self.steps.prune(self.retention_s)
        if step.relayed >= self.config.batch_size:
            return True  # the outbox has more
        return step.claim_full and self._busy < self.config.concurrency

    async def _sleep(self, due: float | None) -> None:
        """Until woken (a publish, an attempt ended), the next backoff ends, or the next poll.

        A delivery already due that the last step did not claim waits for a free slot (whose
        attempt wakes us) or is held by a lease (the poll sees it expire).
        """
        timeout = self.config.poll_interval_s
        if due is not None and self._busy < self.config.concurrency:
            wait = due - time.time()
            if wait > 0:
                timeout = min(timeout, wait)
        if self._wake.is_set():
            return
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass

    async def _record(self, outcome: Outcome) -> DeadLetter | None:
        """Hand the outcome to the next dispatcher step; return once it is committed."""
        done: asyncio.Future[DeadLetter | None] = asyncio.get_running_loop().create_future()
        self._outcomes.append(_Pending(outcome, done))
        self._wake.set()
        return await done

    async def _deliver(self, item: Claimed) -> None:
        sub = self.subscriptions[item.subscriber]
        try:
            if item.n > sub.policy.max_attempts:
                buried = await self._record(Outcome(item, time.time(), False, interrupted=True))
                if buried is not None:
                    await self.alerts.dead_lettered(buried)
                return
            result = await attempt(sub, item.event, item.n, self.tracer)
            if result.ok:
                await self._record(Outcome(item, result.finished_at, True))
                return
            final = result.permanent or item.n >= sub.policy.max_attempts
            retry_in = None if final else backoff_delay(sub.policy, item.n, result.retry_after)
            log.warning(
                "event %s to %s: attempt %d failed: %s%s",
                item.event.id,
                item.subscriber,
                item.n,
                result.error,
                "" if retry_in is None else f"; retrying in {retry_in:.2f}s",
            )
            error = result.error or "failed"
            letter = await self._record(
                Outcome(item, result.finished_at, False, error, result.retry_after, retry_in)
            )
            if letter is not None:
                await self.alerts.dead_lettered(letter)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "recording the delivery of %s to %s failed", item.event.id, item.subscriber
            )
