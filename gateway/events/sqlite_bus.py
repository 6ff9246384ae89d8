"""The embedded bus: one dispatcher task relays the outbox and delivers with bounded concurrency.

It polls (cheap indexed reads) and can be woken at once by an in-process publisher; a crash
loses nothing because every step is a transaction in ``SqliteEventStore`` and leases of a
dead process are freed on the next start.
"""

from __future__ import annotations

import asyncio
import logging
import time

from opentelemetry import trace

from .alerts import DeadLetterAlerts
from .config import BusConfig
from .policy import backoff_delay
from .sqlite_store import Claimed, SqliteEventStore
from .subscriptions import Subscription, attempt, events_tracer

log = logging.getLogger("trellis.events")

PRUNE_EVERY_S = 600.0


class SqliteBus:
    def __init__(
        self,
        store: SqliteEventStore,
        subscriptions: list[Subscription],
        config: BusConfig,
        alerts: DeadLetterAlerts,
        retention_s: float,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.tracer = tracer or events_tracer()
        self.store = store
        self.subscriptions = {s.name: s for s in subscriptions}
        self.config = config
        self.alerts = alerts
        self.retention_s = retention_s
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(config.concurrency)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._last_prune = 0.0

    def wants(self, event_type: str) -> list[str]:
        return [s.name for s in self.subscriptions.values() if s.wants(event_type)]

    def wake(self) -> None:
        """Look at the outbox now (a publisher in this process just committed)."""
        self._wake.set()

    async def start(self) -> None:
        freed = await asyncio.to_thread(self.store.release_dead_leases)
        if freed:
            log.info("released %d delivery lease(s) of processes that ended", freed)
        self._task = asyncio.create_task(self._run(), name="trellis-events-sqlite")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        # A delivery cut off here keeps its lease row; the next start frees it (pid gone).
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # a locked or unavailable DB: keep going, say so
                log.exception("event dispatcher step failed; retrying")
                await asyncio.sleep(1.0)
            await self._sleep()

    async def _tick(self) -> None:
        names = list(self.subscriptions)
        while await asyncio.to_thread(self.store.relay, self.wants, self.config.batch_size):
            pass
        free = self.config.concurrency - len(self._in_flight)
        lease = max(
            [self.config.lease_s]
            + [s.policy.attempt_timeout_s + 5 for s in self.subscriptions.values()]
        )
        claimed = await asyncio.to_thread(self.store.claim, names, free, lease)
        for item in claimed:
            await self._slots.acquire()
            task = asyncio.create_task(self._deliver(item))
            self._in_flight.add(task)
            task.add_done_callback(self._done)
        now = time.time()
        if now - self._last_prune > PRUNE_EVERY_S:
            self._last_prune = now
            await asyncio.to_thread(self.store.prune, self.retention_s)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._slots.release()
        self._wake.set()  # a slot is free: more may be due

    async def _sleep(self) -> None:
        timeout = self.config.poll_interval_s
        if self.subscriptions:
            due = await asyncio.to_thread(self.store.next_due, list(self.subscriptions))
            if due is not None and len(self._in_flight) < self.config.concurrency:
                timeout = min(timeout, max(0.0, due - time.time()))
        if timeout <= 0:
            return
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass
        self._wake.clear()

    async def _deliver(self, item: Claimed) -> None:
        sub = self.subscriptions[item.subscriber]
        try:
            if item.n > sub.policy.max_attempts:
                buried = await asyncio.to_thread(self.store.dead_letter_interrupted, item)
                await self.alerts.dead_lettered(buried)
                return
            result = await attempt(sub, item.event, item.n, self.tracer)
            if result.ok:
                await asyncio.to_thread(self.store.succeed, item, result.finished_at)
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
            letter = await asyncio.to_thread(
                self.store.fail, item, result.finished_at, error, result.retry_after, retry_in
            )
            if letter is not None:
                await self.alerts.dead_lettered(letter)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "recording the delivery of %s to %s failed", item.event.id, item.subscriber
            )
