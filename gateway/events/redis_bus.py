"""The shared bus: a consumer group per subscriber on the event stream, shared by every process.

Each process reads new entries of every subscriber's group (plus the subscriber's retry
stream), so each event is handled by one process per subscriber; entries a dead consumer left
pending are taken over with XAUTOCLAIM after ``claim_min_idle_s``. An entry is acknowledged
only in the same MULTI that records its outcome (delivered, retry scheduled, dead-lettered),
so a crash at any point leads to redelivery, which the processed marker turns into a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

from opentelemetry import trace

from process_apis.ports import DomainEvent

from .alerts import DeadLetterAlerts
from .config import BusConfig
from .policy import backoff_delay
from .records import Attempt, DeliveryState, at, utc
from .redis_store import RedisEventStore
from .sqlite_store import INTERRUPTED, owner_id
from .subscriptions import Subscription, attempt, events_tracer

log = logging.getLogger("trellis.events")

BLOCK_MS = 1000
Entry = tuple[str, dict[str, str]]


def _attempts(state: dict[str, Any]) -> list[Attempt]:
    return [Attempt.model_validate(a) for a in state.get("errors") or []]


class RedisBus:
    def __init__(
        self,
        store: RedisEventStore,
        subscriptions: list[Subscription],
        config: BusConfig,
        alerts: DeadLetterAlerts,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.tracer = tracer or events_tracer()
        self.store = store
        self.subscriptions = {s.name: s for s in subscriptions}
        self.config = config
        self.alerts = alerts
        self.consumer = owner_id()
        self._slots = asyncio.Semaphore(config.concurrency)
        self._tasks: list[asyncio.Task[None]] = []
        self._in_flight: dict[str, set[asyncio.Task[None]]] = {n: set() for n in self.subscriptions}
        self._freed: dict[str, asyncio.Event] = {n: asyncio.Event() for n in self.subscriptions}
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Nothing to do: blocking stream reads see new entries at once."""
        self._wake.set()

    async def start(self) -> None:
        for name in self.subscriptions:
            await self.store.ensure_group(name, self.config.start_from)
        for name in self.subscriptions:
            self._tasks.append(asyncio.create_task(self._read(name), name=f"events-read-{name}"))
            self._tasks.append(
                asyncio.create_task(self._reclaim(name), name=f"events-claim-{name}")
            )
        self._tasks.append(asyncio.create_task(self._move_due(), name="events-due"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        in_flight = [t for tasks in self._in_flight.values() for t in tasks]
        for task in in_flight:
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)

    # --- loops ----------------------------------------------------------------------------

    async def _read(self, sub: str) -> None:
        streams = {self.store.keys.events: ">", self.store.keys.retry(sub): ">"}
        while True:
            try:
                free = min(self.config.batch_size, self.config.concurrency) - len(
                    self._in_flight[sub]
                )
                if free <= 0:
                    self._freed[sub].clear()
                    await self._freed[sub].wait()
                    continue
                answer = cast(
                    list[tuple[str, list[Entry]]],
                    await self.store.redis.xreadgroup(
                        sub,
                        self.consumer,
                        streams,  # type: ignore[arg-type]
                        count=free,
                        block=BLOCK_MS,
                    ),
                )
                for stream, entries in answer or []:
                    for entry in entries:
                        self._spawn(sub, stream, entry)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading the event stream for %s failed; retrying", sub)
                await asyncio.sleep(1.0)

    async def _reclaim(self, sub: str) -> None:
        """Take over entries a consumer left pending longer than ``claim_min_idle_s``."""
        idle_ms = int(self.config.claim_min_idle_s * 1000)
        interval = max(0.2, min(self.config.claim_min_idle_s / 2, 30.0))
        while True:
            try:
                for stream in (self.store.keys.events, self.store.keys.retry(sub)):
                    cursor = "0-0"
                    while True:
                        answer: list[Any] = await self.store.redis.xautoclaim(
                            stream, sub, self.consumer, idle_ms, cursor, count=100
                        )
                        cursor, entries = answer[0], answer[1]
                        for entry_id, fields in entries:
                            if not fields:  # trimmed away meanwhile: nothing left to deliver
                                await self.store.ack(stream, sub, entry_id)
                                continue
                            log.info("reclaimed %s of %s for %s", entry_id, stream, sub)
                            self._spawn(sub, stream, (entry_id, fields))
                        if cursor in ("0-0", b"0-0"):
                            break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reclaiming pending events for %s failed", sub)
            await asyncio.sleep(interval)

    async def _move_due(self) -> None:
        while True:
            try:
                for sub in self.subscriptions:
                    await self.store.move_due(sub)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("moving due retries failed")
            await asyncio.sleep(self.config.poll_interval_s)

    def _spawn(self, sub: str, stream: str, entry: Entry) -> None:
        task = asyncio.create_task(self._guarded(sub, stream, entry))
        self._in_flight[sub].add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._in_flight[sub].discard(t)
            self._freed[sub].set()

        task.add_done_callback(done)

    async def _guarded(self, sub: str, stream: str, entry: Entry) -> None:
        async with self._slots:
            try:
                await self._deliver(sub, stream, entry)
            except asyncio.CancelledError:
                raise
            except Exception:  # the entry stays pending and is reclaimed later
                log.exception("delivering %s of %s to %s failed", entry[0], stream, sub)

    # --- one entry ------------------------------------------------------------------------

    async def _deliver(self, sub: str, stream: str, entry: Entry) -> None:
        entry_id, fields = entry
        subscription = self.subscriptions[sub]
        store = self.store
        try:
            event = DomainEvent.model_validate_json(fields.get("event", ""))
        except ValueError:
            log.error("entry %s of %s is not a CloudEvent: skipped", entry_id, stream)
            await store.ack(stream, sub, entry_id)
            return
        if not subscription.wants(event.type) or await store.is_done(sub, event.id):
            await store.ack(stream, sub, entry_id)
            return
        lease = subscription.policy.attempt_timeout_s + 2
        if not await store.lock(sub, event.id, self.consumer, lease):
            return  # another consumer is handling this event right now; it will ack
        state = await store.state_of(event.id, sub) or {"round": 1, "errors": []}
        if state.get("state") in (DeliveryState.DEAD_LETTERED, DeliveryState.DISCARDED):
            await store.ack(stream, sub, entry_id)  # a stale copy of a settled delivery
            await store.unlock(sub, event.id)
            return
        errors = _attempts(state)
        for i, a in enumerate(errors):  # an attempt a crash cut short counts, and says so
            if a.ok is None:
                errors[i] = a.model_copy(
                    update={"ok": False, "error": INTERRUPTED, "finished_at": utc(time.time())}
                )
        n = len(errors) + 1
        if n > subscription.policy.max_attempts:
            letter = await store.bury(stream, sub, entry_id, event, state, errors)
            await self.alerts.dead_lettered(letter)
            return
        started = time.time()
        running = Attempt(n=n, started_at=at(started))
        state.update(
            state=DeliveryState.PENDING.value,
            attempts=n,
            updated_at=started,
            errors=[e.model_dump(mode="json") for e in [*errors, running]],
        )
        await store.put_state(event.id, sub, state)
        result = await attempt(subscription, event, n, self.tracer)
        finished = running.model_copy(
            update={
                "finished_at": utc(result.finished_at),
                "ok": result.ok,
                "error": result.error,
                "retry_after_s": result.retry_after,
            }
        )
        errors.append(finished)
        state.update(
            updated_at=result.finished_at, errors=[e.model_dump(mode="json") for e in errors]
        )
        if result.ok:
            state.update(state=DeliveryState.DELIVERED.value, next_at=None)
            await store.succeed(stream, sub, entry_id, event.id, state)
            return
        final = result.permanent or n >= subscription.policy.max_attempts
        if final:
            letter = await store.bury(stream, sub, entry_id, event, state, errors)
            await self.alerts.dead_lettered(letter)
            return
        delay = backoff_delay(subscription.policy, n, result.retry_after)
        log.warning(
            "event %s to %s: attempt %d failed: %s; retrying in %.2fs",
            event.id,
            sub,
            n,
            result.error,
            delay,
        )
        state.update(next_at=result.finished_at + delay)
        await store.retry_later(stream, sub, entry_id, event, state, result.finished_at + delay)
