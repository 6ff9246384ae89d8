"""The shared bus: a consumer group per subscriber on the event stream, shared by every process.

Each process reads new entries of every subscriber's group (plus the subscriber's retry
stream), so each event is handled by one process per subscriber; entries a dead consumer left
pending are taken over with XAUTOCLAIM after ``claim_min_idle_s``. An entry is acknowledged
only in the same MULTI that records its outcome (delivered, retry scheduled, dead-lettered),
so a crash at any point leads to redelivery, which the processed marker turns into a no-op.

The round trips are per batch of entries read, not per entry: one pipeline checks the processed
markers, takes the locks and reads the states of the batch; one MULTI acknowledges the entries
that need no attempt and records the attempts about to start; and the outcomes of attempts that
end together are recorded, each with its XACK, in one MULTI (group commit). An attempt keeps its
slot until its outcome is written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, cast

from opentelemetry import trace

from process_apis.ports import DomainEvent

from ..stopping import cancel_until_done
from .alerts import DeadLetterAlerts
from .config import BusConfig
from .policy import backoff_delay
from .records import Attempt, DeliveryState, at, utc
from .redis_store import RedisEventStore, Settled
from .sqlite_store import INTERRUPTED, owner_id
from .subscriptions import Subscription, attempt, events_tracer

log = logging.getLogger("trellis.events")

BLOCK_MS = 1000
Entry = tuple[str, dict[str, str]]


@dataclass(frozen=True, slots=True)
class _Run:
    """An entry to attempt: its event, delivery state and earlier attempts of this round.

    ``running`` is the attempt already recorded as started; None when the last allowed attempt
    was cut short by a crash and the delivery is to be dead-lettered without another one.
    """

    stream: str
    entry_id: str
    event: DomainEvent
    state: dict[str, Any]
    errors: list[Attempt]
    running: Attempt | None


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
        # cancelled until they end: a loop cut off inside a Redis call may carry on once
        await cancel_until_done(self._tasks)
        self._tasks.clear()
        # nothing new is read; the attempts in flight may end and record their outcome within
        # drain_s (one cut off stays pending and is delivered again after the restart)
        in_flight = {t for tasks in self._in_flight.values() for t in tasks}
        if in_flight:
            await asyncio.wait(in_flight, timeout=self.config.drain_s)
        await cancel_until_done([t for tasks in self._in_flight.values() for t in tasks])

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
                batch = [(stream, entry) for stream, entries in answer or [] for entry in entries]
                if batch:
                    await self._start(sub, batch)
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
                            await self._start(sub, [(stream, (entry_id, fields))])
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

    def _spawn(self, sub: str, run: _Run) -> None:
        """Attempt one delivery in a task; it holds a slot acquired by ``_start``."""
        task = asyncio.create_task(self._guarded(sub, run))
        self._in_flight[sub].add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._in_flight[sub].discard(t)
            self._slots.release()
            self._freed[sub].set()

        task.add_done_callback(done)

    async def _guarded(self, sub: str, run: _Run) -> None:
        try:
            await self._deliver(sub, run)
        except asyncio.CancelledError:
            raise
        except Exception:  # the entry stays pending and is reclaimed later
            log.exception("delivering %s of %s to %s failed", run.entry_id, run.stream, sub)

    # --- a batch of entries ---------------------------------------------------------------

    async def _start(self, sub: str, batch: list[tuple[str, Entry]]) -> None:
        """Check a batch of entries in one round trip, settle those that need no attempt and
        record the attempts about to start in one MULTI, then run those attempts."""
        subscription = self.subscriptions[sub]
        store = self.store
        acks: list[tuple[str, str]] = []
        wanted: list[tuple[str, str, DomainEvent]] = []
        for stream, (entry_id, fields) in batch:
            try:
                event = DomainEvent.model_validate_json(fields.get("event", ""))
            except ValueError:
                log.error("entry %s of %s is not a CloudEvent: skipped", entry_id, stream)
                acks.append((stream, entry_id))
                continue
            if subscription.wants(event.type):
                wanted.append((stream, entry_id, event))
            else:
                acks.append((stream, entry_id))
        held = 0
        runs: list[_Run] = []
        try:
            for _ in wanted:  # a slot per entry before its lock and attempt record
                await self._slots.acquire()
                held += 1
            lease = subscription.policy.attempt_timeout_s + 2
            checks = await store.check(sub, [e.id for _, _, e in wanted], self.consumer, lease)
            unlocks: list[str] = []
            states: list[tuple[str, dict[str, Any]]] = []
            for (stream, entry_id, event), check in zip(wanted, checks, strict=True):
                if check.done:
                    acks.append((stream, entry_id))
                    if check.locked:
                        unlocks.append(event.id)
                    continue
                if not check.locked:
                    continue  # another consumer is handling this event right now; it will ack
                state = check.state or {"round": 1, "errors": []}
                if state.get("state") in (DeliveryState.DEAD_LETTERED, DeliveryState.DISCARDED):
                    acks.append((stream, entry_id))  # a stale copy of a settled delivery
                    unlocks.append(event.id)
                    continue
                errors = _attempts(state)
                for i, a in enumerate(errors):  # an attempt a crash cut short counts, and says so
                    if a.ok is None:
                        errors[i] = a.model_copy(
                            update={
                                "ok": False,
                                "error": INTERRUPTED,
                                "finished_at": utc(time.time()),
                            }
                        )
                n = len(errors) + 1
                if n > subscription.policy.max_attempts:
                    runs.append(_Run(stream, entry_id, event, state, errors, None))
                    continue
                started = time.time()
                running = Attempt(n=n, started_at=at(started))
                state.update(
                    state=DeliveryState.PENDING.value,
                    attempts=n,
                    updated_at=started,
                    errors=[e.model_dump(mode="json") for e in [*errors, running]],
                )
                states.append((event.id, state))
                runs.append(_Run(stream, entry_id, event, state, errors, running))
            await store.begin(sub, acks, unlocks, states)
        except BaseException:
            for _ in range(held):
                self._slots.release()
            raise
        for _ in range(held - len(runs)):
            self._slots.release()
        for run in runs:
            self._spawn(sub, run)

    # --- one entry ------------------------------------------------------------------------

    async def _bury(self, sub: str, run: _Run, state: dict[str, Any]) -> None:
        letter, state = self.store.dead_letter_for(sub, run.event, state, run.errors)
        await self.store.settle(
            Settled("dead", run.stream, sub, run.entry_id, run.event.id, state, letter=letter)
        )
        await self.alerts.dead_lettered(letter)

    async def _deliver(self, sub: str, run: _Run) -> None:
        subscription = self.subscriptions[sub]
        event, state, errors, running = run.event, run.state, run.errors, run.running
        if running is None:  # the last allowed attempt was cut short: not tried again
            await self._bury(sub, run, state)
            return
        n = running.n
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
            await self.store.settle(
                Settled("delivered", run.stream, sub, run.entry_id, event.id, state)
            )
            return
        final = result.permanent or n >= subscription.policy.max_attempts
        if final:
            await self._bury(sub, run, state)
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
        due_at = result.finished_at + delay
        state.update(next_at=due_at)
        await self.store.settle(
            Settled(
                "retry",
                run.stream,
                sub,
                run.entry_id,
                event.id,
                state,
                due_at,
                event.model_dump_json(),
            )
        )
