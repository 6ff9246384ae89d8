"""The shared event store in Redis: the event stream, per-subscriber retries, state and the DLQ.

Keys (``P`` is ``gateway.redis_prefix``; by default ``trellis:``, making ``trellis:events``):
- ``Pevents`` stream (``id``, ``type``, ``event``): the outbox the process APIs XADD to;
- ``Pretry:<subscriber>`` stream: deliveries due again (backoff over, or replayed);
- ``Pdue:<subscriber>`` sorted set + ``Pheld:<subscriber>`` hash: events waiting out a backoff;
- ``Pstate:<event id>`` hash, subscriber -> delivery state JSON (expires with the retention);
- ``Pdone:<subscriber>:<event id>``: the processed marker that makes redelivery a no-op;
- ``Plock:<subscriber>:<event id>``: short lease so a reclaimed entry is never run twice at once;
- ``Pdlq`` hash (id -> dead letter JSON), ``Pdlq:index`` sorted set by time, ``Pdlq:status``
  and ``Pdlq:resolution`` hashes (status changes never rewrite the letter);
- ``Pinbound:<source>:<vendor id>``: a received webhook id, for replay protection.
Every multi-key change is one MULTI/EXEC or Lua script, so a crash never leaves half of one.
Changes of concurrent callers may share one MULTI (publishes; the outcomes of attempts, each
with the XACK of its entry): it applies them all or none, and each stays whole.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from gateway.stores.redis_options import DEFAULT_PREFIX, REDIS_TIMEOUTS
from process_apis.ports import DomainEvent

from .batching import GroupCommit
from .records import (
    Attempt,
    DeadLetter,
    DeadLetterQuery,
    DeadLetterStatus,
    Delivery,
    DeliveryState,
    EventSummary,
    ReplayOutcome,
    ReplayResult,
    at,
    trace_id_of,
    utc,
)

MOVE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(due) do
  local ev = redis.call('HGET', KEYS[2], id)
  if ev then redis.call('XADD', KEYS[3], '*', 'id', id, 'event', ev) end
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
return #due
"""
"""Backoff over: move due events into the subscriber's retry stream, atomically."""

ACCEPT_INBOUND = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) then
  if ARGV[2] ~= '' then
    redis.call('XADD', KEYS[2], '*', 'id', ARGV[3], 'type', ARGV[4], 'event', ARGV[2])
  end
  return 1
end
return 0
"""

REPLAY = """
local st = redis.call('HGET', KEYS[1], ARGV[1])
if not st then return 'not_found' end
if st ~= 'dead' then return 'not_dead' end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], 'already_delivered')
  redis.call('HSET', KEYS[5], ARGV[1], ARGV[4])
  return 'already_delivered'
end
redis.call('HSET', KEYS[1], ARGV[1], 'replayed')
redis.call('HSET', KEYS[5], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[4], ARGV[5], ARGV[6])
redis.call('XADD', KEYS[3], '*', 'id', ARGV[7], 'event', ARGV[2])
return 'replayed'
"""

DISCARD = """
local st = redis.call('HGET', KEYS[1], ARGV[1])
if not st then return 'not_found' end
if st ~= 'dead' then return st end
redis.call('HSET', KEYS[1], ARGV[1], 'discarded')
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
return 'discarded'
"""


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


@dataclass(frozen=True, slots=True)
class Check:
    """What the dispatcher needs to know before it attempts an entry (``RedisEventStore.check``)."""

    done: bool
    """The subscriber has handled this event already."""
    locked: bool
    """This consumer now holds the event's short lock."""
    state: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Settled:
    """How an attempt of a stream entry ended, to be recorded with the entry's XACK."""

    kind: Literal["delivered", "retry", "dead"]
    stream: str
    sub: str
    entry_id: str
    event_id: str
    state: dict[str, Any]
    due_at: float = 0.0
    """``retry``: when the next attempt is due."""
    held: str = ""
    """``retry``: the event (JSON), kept until it is due."""
    letter: DeadLetter | None = None
    """``dead``: the letter (made up front, so writing it twice writes the same)."""


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.events = f"{prefix}events"
        self.dlq = f"{prefix}dlq"
        self.dlq_index = f"{prefix}dlq:index"
        self.dlq_status = f"{prefix}dlq:status"
        self.dlq_resolution = f"{prefix}dlq:resolution"

    def retry(self, sub: str) -> str:
        return f"{self.prefix}retry:{sub}"

    def due(self, sub: str) -> str:
        return f"{self.prefix}due:{sub}"

    def held(self, sub: str) -> str:
        return f"{self.prefix}held:{sub}"

    def state(self, event_id: str) -> str:
        return f"{self.prefix}state:{event_id}"

    def done(self, sub: str, event_id: str) -> str:
        return f"{self.prefix}done:{sub}:{event_id}"

    def lock(self, sub: str, event_id: str) -> str:
        return f"{self.prefix}lock:{sub}:{event_id}"

    def inbound(self, source: str, vendor_id: str) -> str:
        return f"{self.prefix}inbound:{source}:{vendor_id}"


class RedisEventStore:
    def __init__(
        self, url: str, *, prefix: str = DEFAULT_PREFIX, retention_s: int = 7 * 86_400
    ) -> None:
        self.url = url
        self.keys = Keys(prefix)
        self.retention_s = retention_s
        # the bus blocks up to 1 s in XREADGROUP: the read timeout must outlast that
        self.redis: aioredis.Redis = aioredis.Redis.from_url(
            url, decode_responses=True, **{**REDIS_TIMEOUTS, "socket_timeout": 5.0}
        )
        self._move_due = self.redis.register_script(MOVE_DUE)
        self._accept = self.redis.register_script(ACCEPT_INBOUND)
        self._replay = self.redis.register_script(REPLAY)
        self._discard = self.redis.register_script(DISCARD)
        self._publishes: GroupCommit[Sequence[DomainEvent], None] = GroupCommit(self._publish_batch)
        self._outcomes: GroupCommit[Settled, DeadLetter | None] = GroupCommit(self._settle_batch)

    async def open(self) -> None:
        """Fail at startup, not on the first event, when Redis is unreachable."""
        await self.redis.ping()

    async def close(self) -> None:
        await self._publishes.drain()
        await self._outcomes.drain()
        await self.redis.aclose()

    # --- publishing -----------------------------------------------------------------------

    async def publish(self, events: Sequence[DomainEvent]) -> None:
        """XADD the events in one MULTI, shared with concurrent publishes (group commit)."""
        await self._publishes.submit(list(events))

    async def _xadd_all(self, events: Sequence[DomainEvent]) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            for e in events:
                fields = {"id": e.id, "type": e.type, "event": e.model_dump_json()}
                pipe.xadd(self.keys.events, fields)  # type: ignore[arg-type]
            await pipe.execute()

    async def _publish_batch(
        self, batches: Sequence[Sequence[DomainEvent]]
    ) -> list[Exception | None]:
        try:
            await self._xadd_all([e for events in batches for e in events])
            return [None] * len(batches)
        except Exception as exc:
            if len(batches) == 1:
                return [exc]
        out: list[Exception | None] = []
        for events in batches:  # find the publish at fault
            try:
                await self._xadd_all(events)
                out.append(None)
            except Exception as exc:
                out.append(exc)
        return out

    async def accept_inbound(
        self, source: str, vendor_event_id: str, remember_s: int, event: DomainEvent | None
    ) -> bool:
        fresh = await self._accept(
            keys=[self.keys.inbound(source, vendor_event_id), self.keys.events],
            args=[
                remember_s,
                event.model_dump_json() if event else "",
                event.id if event else "",
                event.type if event else "",
            ],
        )
        return bool(fresh)

    # --- used by the dispatcher -----------------------------------------------------------

    async def ensure_group(self, sub: str, start_from: str) -> None:
        for stream, start in ((self.keys.events, start_from), (self.keys.retry(sub), "0")):
            try:
                await self.redis.xgroup_create(stream, sub, id=start, mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def move_due(self, sub: str, limit: int = 500) -> int:
        moved = await self._move_due(
            keys=[self.keys.due(sub), self.keys.held(sub), self.keys.retry(sub)],
            args=[time.time(), limit],
        )
        return int(moved)

    async def check(
        self, sub: str, event_ids: Sequence[str], owner: str, lease_s: float
    ) -> list[Check]:
        """For a batch of entries, in one round trip: handled already? our lock? the state."""
        if not event_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for event_id in event_ids:
                pipe.exists(self.keys.done(sub, event_id))
                pipe.set(self.keys.lock(sub, event_id), owner, nx=True, px=int(lease_s * 1000))
                pipe.hget(self.keys.state(event_id), sub)
            answers = await pipe.execute()
        return [
            Check(bool(done), bool(locked), None if raw is None else dict(orjson.loads(raw)))
            for done, locked, raw in zip(answers[0::3], answers[1::3], answers[2::3], strict=True)
        ]

    async def begin(
        self,
        sub: str,
        acks: Sequence[tuple[str, str]],
        unlocks: Sequence[str],
        states: Sequence[tuple[str, dict[str, Any]]],
    ) -> None:
        """One MULTI: ack entries that need no attempt, drop their locks, and record the
        attempts about to start (``states``: event id -> delivery state)."""
        if not (acks or unlocks or states):
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            by_stream: dict[str, list[str]] = {}
            for stream, entry_id in acks:
                by_stream.setdefault(stream, []).append(entry_id)
            for stream, ids in by_stream.items():
                pipe.xack(stream, sub, *ids)
            if unlocks:
                pipe.delete(*(self.keys.lock(sub, e) for e in unlocks))
            for event_id, state in states:
                key = self.keys.state(event_id)
                pipe.hset(key, sub, _json(state))
                pipe.expire(key, self.retention_s)
            await pipe.execute()

    async def state_of(self, event_id: str, sub: str) -> dict[str, Any] | None:
        raw = await self.redis.hget(self.keys.state(event_id), sub)
        return None if raw is None else dict(orjson.loads(raw))

    async def put_state(self, event_id: str, sub: str, state: dict[str, Any]) -> None:
        key = self.keys.state(event_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, sub, _json(state))
            pipe.expire(key, self.retention_s)
            await pipe.execute()

    async def is_done(self, sub: str, event_id: str) -> bool:
        return bool(await self.redis.exists(self.keys.done(sub, event_id)))

    async def lock(self, sub: str, event_id: str, owner: str, lease_s: float) -> bool:
        return bool(
            await self.redis.set(
                self.keys.lock(sub, event_id), owner, nx=True, px=int(lease_s * 1000)
            )
        )

    async def unlock(self, sub: str, event_id: str) -> None:
        await self.redis.delete(self.keys.lock(sub, event_id))

    async def ack(self, stream: str, sub: str, entry_id: str) -> None:
        await self.redis.xack(stream, sub, entry_id)

    def _settle_cmds(self, pipe: Pipeline, o: Settled) -> None:
        """The commands that record one outcome and acknowledge its entry."""
        sub, event_id = o.sub, o.event_id
        skey = self.keys.state(event_id)
        if o.kind == "delivered":
            pipe.set(self.keys.done(sub, event_id), "1", ex=self.retention_s)
        elif o.kind == "retry":
            pipe.hset(self.keys.held(sub), event_id, o.held)
            pipe.zadd(self.keys.due(sub), {event_id: o.due_at})
        else:
            letter = o.letter
            assert letter is not None, "a dead outcome carries its letter"
            pipe.hset(self.keys.dlq, letter.id, letter.model_dump_json())
            pipe.zadd(self.keys.dlq_index, {letter.id: letter.created_at.timestamp()})
            pipe.hset(self.keys.dlq_status, letter.id, DeadLetterStatus.DEAD.value)
        pipe.hset(skey, sub, _json(o.state))
        pipe.expire(skey, self.retention_s)
        pipe.xack(o.stream, sub, o.entry_id)
        pipe.delete(self.keys.lock(sub, event_id))

    async def _settle_all(self, outcomes: Sequence[Settled]) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            for o in outcomes:
                self._settle_cmds(pipe, o)
            await pipe.execute()

    async def _settle_batch(
        self, outcomes: Sequence[Settled]
    ) -> list[DeadLetter | Exception | None]:
        try:
            await self._settle_all(outcomes)
            return [o.letter for o in outcomes]
        except Exception as exc:
            if len(outcomes) == 1:
                return [exc]
        out: list[DeadLetter | Exception | None] = []
        for o in outcomes:  # every command is idempotent: write each on its own
            try:
                await self._settle_all([o])
                out.append(o.letter)
            except Exception as exc:
                out.append(exc)
        return out

    async def settle(self, outcome: Settled) -> DeadLetter | None:
        """Record an outcome and XACK its entry in one MULTI, shared with concurrent outcomes
        (group commit); return once written (with the dead letter, if one was made)."""
        return await self._outcomes.submit(outcome)

    @staticmethod
    def dead_letter_for(
        sub: str, event: DomainEvent, state: dict[str, Any], errors: list[Attempt]
    ) -> tuple[DeadLetter, dict[str, Any]]:
        """A new dead letter for this delivery, and the delivery state that points to it."""
        now = time.time()
        letter = DeadLetter(
            id=f"dlq_{uuid.uuid4().hex[:24]}",
            event_id=event.id,
            subscriber=sub,
            type=event.type,
            subject=event.subject,
            trace_id=trace_id_of(event.traceparent),
            attempts=len(errors),
            errors=errors,
            created_at=at(now),
            event=event.model_dump(mode="json"),
        )
        state = {**state, "state": DeliveryState.DEAD_LETTERED.value, "dead_letter_id": letter.id}
        return letter, state

    async def succeed(
        self, stream: str, sub: str, entry_id: str, event_id: str, state: dict[str, Any]
    ) -> None:
        await self._settle_all([Settled("delivered", stream, sub, entry_id, event_id, state)])

    async def retry_later(
        self,
        stream: str,
        sub: str,
        entry_id: str,
        event: DomainEvent,
        state: dict[str, Any],
        due_at: float,
    ) -> None:
        held = event.model_dump_json()
        await self._settle_all(
            [Settled("retry", stream, sub, entry_id, event.id, state, due_at, held)]
        )

    async def bury(
        self,
        stream: str,
        sub: str,
        entry_id: str,
        event: DomainEvent,
        state: dict[str, Any],
        errors: list[Attempt],
    ) -> DeadLetter:
        letter, state = self.dead_letter_for(sub, event, state, errors)
        await self._settle_all(
            [Settled("dead", stream, sub, entry_id, event.id, state, letter=letter)]
        )
        return letter

    # --- seeing what happened -------------------------------------------------------------

    async def recent_events(
        self,
        type_: str | None,
        subject: str | None,
        limit: int,
        wants: Callable[[str], list[str]],
    ) -> list[EventSummary]:
        scan = min(10_000, max(limit * 20, 500))
        entries = cast(
            list[tuple[str, dict[str, str]]],
            await self.redis.xrevrange(self.keys.events, count=scan),
        )
        out: list[EventSummary] = []
        for _entry_id, fields in entries:
            if type_ is not None and fields.get("type") != type_:
                continue
            try:
                event = DomainEvent.model_validate_json(fields.get("event", ""))
            except ValueError:
                continue
            if subject is not None and event.subject != subject:
                continue
            states = cast(dict[str, str], await self.redis.hgetall(self.keys.state(event.id)))
            found = {sub: _delivery(sub, orjson.loads(raw)) for sub, raw in states.items()}
            for sub in wants(event.type):
                found.setdefault(sub, Delivery(subscriber=sub, state=DeliveryState.PENDING))
            out.append(
                EventSummary(
                    id=event.id,
                    type=event.type,
                    subject=event.subject,
                    time=event.time,
                    source=event.source,
                    trace_id=trace_id_of(event.traceparent),
                    deliveries=sorted(found.values(), key=lambda d: d.subscriber),
                )
            )
            if len(out) >= limit:
                break
        return out

    # --- dead letters ---------------------------------------------------------------------

    async def _letters(self, ids: Sequence[str]) -> list[DeadLetter]:
        if not ids:
            return []
        raws = await self.redis.hmget(self.keys.dlq, list(ids))
        statuses = await self.redis.hmget(self.keys.dlq_status, list(ids))
        resolutions = await self.redis.hmget(self.keys.dlq_resolution, list(ids))
        out = []
        for raw, status, resolution in zip(raws, statuses, resolutions, strict=True):
            if raw is None:
                continue
            letter = DeadLetter.model_validate_json(raw)
            extra: dict[str, Any] = {"status": DeadLetterStatus(str(status or letter.status))}
            if resolution:
                res = orjson.loads(resolution)
                extra.update(reason=res.get("reason"), resolved_at=utc(res.get("resolved_at")))
            out.append(letter.model_copy(update=extra))
        return out

    async def dead_letters(self, query: DeadLetterQuery) -> list[DeadLetter]:
        hi = query.until.timestamp() if query.until else "+inf"
        lo = query.since.timestamp() if query.since else "-inf"
        out: list[DeadLetter] = []
        offset, page = 0, 500
        while len(out) < query.limit:
            ids = cast(
                list[str],
                await self.redis.zrevrangebyscore(
                    self.keys.dlq_index, hi, lo, start=offset, num=page
                ),
            )
            if not ids:
                break
            offset += len(ids)
            for letter in await self._letters(ids):
                if query.type and letter.type != query.type:
                    continue
                if query.subscriber and letter.subscriber != query.subscriber:
                    continue
                if query.status and letter.status != query.status:
                    continue
                out.append(letter)
        return out[: query.limit]

    async def dead_letter(self, letter_id: str) -> DeadLetter | None:
        found = await self._letters([letter_id])
        return found[0] if found else None

    async def replay(self, letter_ids: Sequence[str]) -> list[ReplayResult]:
        out = []
        for letter_id in dict.fromkeys(letter_ids):
            letter = await self.dead_letter(letter_id)
            if letter is None:
                out.append(ReplayResult(id=letter_id, outcome=ReplayOutcome.NOT_FOUND))
                continue
            previous = await self.state_of(letter.event_id, letter.subscriber) or {}
            now = time.time()
            pending = {
                "state": DeliveryState.PENDING.value,
                "attempts": 0,
                "round": int(previous.get("round", 1)) + 1,
                "errors": [],
                "updated_at": now,
                "next_at": now,
            }
            outcome = await self._replay(
                keys=[
                    self.keys.dlq_status,
                    self.keys.done(letter.subscriber, letter.event_id),
                    self.keys.retry(letter.subscriber),
                    self.keys.state(letter.event_id),
                    self.keys.dlq_resolution,
                ],
                args=[
                    letter_id,
                    _json(letter.event),
                    _json({"resolved_at": now}),
                    _json({"resolved_at": now}),
                    letter.subscriber,
                    _json(pending),
                    letter.event_id,
                ],
            )
            out.append(ReplayResult(id=letter_id, outcome=ReplayOutcome(outcome)))
        return out

    async def discard(self, letter_id: str, reason: str) -> DeadLetter | None:
        letter = await self.dead_letter(letter_id)
        if letter is None:
            return None
        state = await self.state_of(letter.event_id, letter.subscriber) or {}
        state.update(state=DeliveryState.DISCARDED.value, updated_at=time.time())
        await self._discard(
            keys=[self.keys.dlq_status, self.keys.dlq_resolution, self.keys.state(letter.event_id)],
            args=[
                letter_id,
                _json({"reason": reason, "resolved_at": time.time()}),
                letter.subscriber,
                _json(state),
            ],
        )
        return await self.dead_letter(letter_id)


def _delivery(sub: str, state: dict[str, Any]) -> Delivery:
    errors = state.get("errors") or []
    last = next((e.get("error") for e in reversed(errors) if e.get("error")), None)
    st = DeliveryState(state.get("state", DeliveryState.PENDING.value))
    return Delivery(
        subscriber=sub,
        state=st,
        attempts=int(state.get("attempts", 0)),
        last_error=None if st is DeliveryState.DELIVERED else last,
        next_attempt_at=utc(state.get("next_at")) if st is DeliveryState.PENDING else None,
        updated_at=utc(state.get("updated_at")),
        dead_letter_id=state.get("dead_letter_id"),
    )
