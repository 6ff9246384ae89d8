"""The event store in PostgreSQL: the outbox, deliveries, attempts and dead letters of several
hosts, with the same steps and guarantees as ``sqlite_store.py`` (the dispatcher of
``sqlite_bus.py`` drives both).

What differs is how several dispatchers share the tables. Each step is one transaction:

- **relay**: outbox rows not relayed yet are locked ``FOR UPDATE SKIP LOCKED``, turned into
  delivery rows and marked relayed, so two hosts relaying at once split the rows between them
  and none is relayed twice or skipped (a cursor on ``seq`` would skip a row whose transaction
  committed after a later one's);
- **claim**: due deliveries whose lease is free are locked ``FOR UPDATE SKIP LOCKED`` and leased,
  so a delivery is attempted by one dispatcher at a time, and the other takes the next ones
  instead of waiting;
- a lease of a process that ended is freed at the next start on the same host, or expires.

Delivery stays at least once (an attempt cut by a crash is retried), and a delivery that
succeeded is never attempted again: the processed id is written with its outcome.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import asyncpg
import orjson

from gateway.stores.postgres import close_pool, connection, open_pool, transaction
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
from .sqlite_store import INTERRUPTED, Claimed, Outcome, Step, _owner_alive, owner_id


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class PostgresEventStore:
    """The event tables of ``gateway/stores/postgres.py`` through one bounded pool."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.owner = owner_id()
        self._pool: asyncpg.Pool | None = None
        self._publishes: GroupCommit[Sequence[DomainEvent], None] = GroupCommit(self._publish_batch)

    def _ready(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the event store is not open")
        return self._pool

    async def open(self) -> None:
        """Connect and migrate now, so an unreachable database fails at startup."""
        if self._pool is None:
            self._pool = await open_pool(self.url)

    async def close(self) -> None:
        await self._publishes.drain()
        pool, self._pool = self._pool, None
        if pool is not None:
            await close_pool(pool)

    # --- publishing -----------------------------------------------------------------------

    @staticmethod
    async def _insert_events(conn: asyncpg.Connection, events: Iterable[DomainEvent]) -> None:
        rows = [(e.id, e.type, e.subject, e.time.isoformat(), e.model_dump_json()) for e in events]
        if rows:
            await conn.executemany(
                "INSERT INTO outbox (id, type, subject, time, event) VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (id) DO NOTHING",
                rows,
            )

    async def publish(self, events: Sequence[DomainEvent]) -> None:
        """Append events to the outbox (inbound webhooks, tools); an existing id is kept.
        Concurrent publishes share one transaction (group commit)."""
        await self._publishes.submit(list(events))

    async def _publish_batch(
        self, batches: Sequence[Sequence[DomainEvent]]
    ) -> list[Exception | None]:
        try:
            async with transaction(self._ready()) as conn:
                await self._insert_events(conn, [e for events in batches for e in events])
            return [None] * len(batches)
        except Exception as exc:
            if len(batches) == 1:
                return [exc]
        out: list[Exception | None] = []
        for events in batches:  # find the bad one
            try:
                async with transaction(self._ready()) as conn:
                    await self._insert_events(conn, events)
                out.append(None)
            except Exception as exc:
                out.append(exc)
        return out

    async def accept_inbound(
        self, source: str, vendor_event_id: str, remember_s: int, event: DomainEvent | None
    ) -> bool:
        """Remember a webhook's id and enqueue its domain event atomically; False if seen."""
        async with transaction(self._ready()) as conn:
            now = time.time()
            await conn.execute(
                "DELETE FROM inbound_webhook_ids WHERE source = $1 AND received_at < $2",
                source,
                now - remember_s,
            )
            new = await conn.fetchval(
                "INSERT INTO inbound_webhook_ids (source, event_id, received_at)"
                " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1",
                source,
                vendor_event_id,
                now,
            )
            if new is None:
                return False
            if event is not None:
                await self._insert_events(conn, [event])
            return True

    # --- dispatching ----------------------------------------------------------------------

    async def release_dead_leases(self) -> int:
        """Free leases held by processes of this host that no longer run: retry at once."""
        async with transaction(self._ready()) as conn:
            owners = await conn.fetch(
                "SELECT DISTINCT lease_owner FROM event_deliveries"
                " WHERE lease_owner IS NOT NULL AND state = 'pending'"
            )
            freed = 0
            for (owner,) in owners:
                if not _owner_alive(owner, self.owner):
                    status = await conn.execute(
                        "UPDATE event_deliveries SET lease_owner = NULL, lease_until = NULL"
                        " WHERE lease_owner = $1",
                        owner,
                    )
                    freed += int(status.split()[-1])
            return freed

    @staticmethod
    async def _relay(
        conn: asyncpg.Connection, wants: Callable[[str], list[str]], batch: int
    ) -> int:
        rows = await conn.fetch(
            "SELECT seq, id, type FROM outbox WHERE NOT relayed ORDER BY seq LIMIT $1"
            " FOR UPDATE SKIP LOCKED",
            batch,
        )
        if not rows:
            return 0
        now = time.time()
        deliveries = [(event_id, sub, seq) for seq, event_id, type_ in rows for sub in wants(type_)]
        if deliveries:
            await conn.execute(
                "INSERT INTO event_deliveries (event_id, subscriber, seq, state, next_at,"
                " created_at, updated_at) SELECT ev, sub, seq, 'pending', $4, $4, $4"
                " FROM unnest($1::text[], $2::text[], $3::bigint[]) AS t(ev, sub, seq)"
                " ON CONFLICT DO NOTHING",
                [d[0] for d in deliveries],
                [d[1] for d in deliveries],
                [d[2] for d in deliveries],
                now,
            )
        await conn.execute(
            "UPDATE outbox SET relayed = TRUE WHERE seq = ANY($1::bigint[])",
            [r["seq"] for r in rows],
        )
        return len(rows)

    async def relay(self, wants: Callable[[str], list[str]], batch: int) -> int:
        """Turn new outbox rows into delivery rows, one per interested subscriber."""
        async with transaction(self._ready()) as conn:
            return await self._relay(conn, wants, batch)

    @staticmethod
    async def _next_free_due(
        conn: asyncpg.Connection, subscribers: Sequence[str], now: float
    ) -> float | None:
        """The earliest ``next_at`` of a pending delivery no live lease holds."""
        if not subscribers:
            return None
        found = await conn.fetchval(
            "SELECT next_at FROM event_deliveries WHERE state = 'pending'"
            " AND (lease_until IS NULL OR lease_until < $1) AND subscriber = ANY($2::text[])"
            " ORDER BY next_at LIMIT 1",
            now,
            list(subscribers),
        )
        return None if found is None else float(found)

    async def _claim(
        self, conn: asyncpg.Connection, subscribers: Sequence[str], limit: int, lease_s: float
    ) -> tuple[list[Claimed], bool]:
        """The leased deliveries, and whether ``limit`` stopped the claim (more may be due)."""
        if not subscribers or limit <= 0:
            return [], False
        now = time.time()
        rows = await conn.fetch(
            "SELECT d.event_id, d.subscriber, d.round, d.attempts, o.event,"
            " EXISTS (SELECT 1 FROM event_processed p"
            "  WHERE p.subscriber = d.subscriber AND p.event_id = d.event_id) AS done"
            " FROM event_deliveries d JOIN outbox o ON o.seq = d.seq"
            " WHERE d.state = 'pending' AND d.next_at <= $1"
            " AND (d.lease_until IS NULL OR d.lease_until < $1)"
            " AND d.subscriber = ANY($2::text[]) ORDER BY d.next_at LIMIT $3"
            " FOR UPDATE OF d SKIP LOCKED",
            now,
            list(subscribers),
            limit,
        )
        if not rows:
            return [], False
        # an attempt left open by a crash counts, and says so (a round without attempts has none)
        reopened = [
            (now, INTERRUPTED, r["event_id"], r["subscriber"], r["round"])
            for r in rows
            if r["attempts"] > 0
        ]
        if reopened:
            await conn.executemany(
                "UPDATE event_attempts SET ok = FALSE, finished_at = $1, error = $2"
                " WHERE event_id = $3 AND subscriber = $4 AND round = $5 AND ok IS NULL",
                reopened,
            )
        done = [(now, r["event_id"], r["subscriber"]) for r in rows if r["done"]]
        if done:  # handled already (by another worker, or before a crash)
            await conn.executemany(
                "UPDATE event_deliveries SET state = 'delivered', lease_owner = NULL,"
                " lease_until = NULL, updated_at = $1 WHERE event_id = $2 AND subscriber = $3",
                done,
            )
        todo = [r for r in rows if not r["done"]]
        if not todo:
            return [], len(rows) >= limit
        evs, subs = [r["event_id"] for r in todo], [r["subscriber"] for r in todo]
        ns = [r["attempts"] + 1 for r in todo]
        await conn.execute(
            "UPDATE event_deliveries d SET attempts = t.n, lease_owner = $4, lease_until = $5,"
            " updated_at = $6 FROM unnest($1::text[], $2::text[], $3::int[]) AS t(ev, sub, n)"
            " WHERE d.event_id = t.ev AND d.subscriber = t.sub",
            evs,
            subs,
            ns,
            self.owner,
            now + lease_s,
            now,
        )
        ids = await conn.fetch(
            "INSERT INTO event_attempts (event_id, subscriber, round, n, started_at)"
            " SELECT ev, sub, rnd, n, $5 FROM unnest($1::text[], $2::text[], $3::int[],"
            " $4::int[]) AS t(ev, sub, rnd, n) RETURNING id, event_id, subscriber",
            evs,
            subs,
            [r["round"] for r in todo],
            ns,
            now,
        )
        attempt_of = {(a["event_id"], a["subscriber"]): int(a["id"]) for a in ids}
        out = [
            Claimed(
                DomainEvent.model_validate_json(r["event"]),
                r["subscriber"],
                r["round"],
                n,
                attempt_of[(r["event_id"], r["subscriber"])],
            )
            for r, n in zip(todo, ns, strict=True)
        ]
        return out, len(rows) >= limit

    async def claim(self, subscribers: Sequence[str], limit: int, lease_s: float) -> list[Claimed]:
        """Lease up to ``limit`` due deliveries and open an attempt row for each."""
        if not subscribers or limit <= 0:
            return []
        async with transaction(self._ready()) as conn:
            return (await self._claim(conn, subscribers, limit, lease_s))[0]

    @staticmethod
    async def _errors(
        conn: asyncpg.Connection, event_id: str, sub: str, round_: int
    ) -> list[Attempt]:
        rows = await conn.fetch(
            "SELECT n, started_at, finished_at, ok, error, retry_after FROM event_attempts"
            " WHERE event_id = $1 AND subscriber = $2 AND round = $3 ORDER BY n, id",
            event_id,
            sub,
            round_,
        )
        return [
            Attempt(
                n=r["n"],
                started_at=at(r["started_at"]),
                finished_at=utc(r["finished_at"]),
                ok=r["ok"],
                error=r["error"],
                retry_after_s=r["retry_after"],
            )
            for r in rows
        ]

    @staticmethod
    async def _succeed(conn: asyncpg.Connection, done: Sequence[tuple[Claimed, float]]) -> None:
        """Delivered: close the attempts, settle the deliveries, remember the processed ids."""
        if not done:
            return
        at_ = [finished_at for _, finished_at in done]
        await conn.execute(
            "UPDATE event_attempts a SET ok = TRUE, finished_at = t.at"
            " FROM unnest($1::bigint[], $2::float8[]) AS t(id, at) WHERE a.id = t.id",
            [c.attempt_id for c, _ in done],
            at_,
        )
        evs, subs = [c.event.id for c, _ in done], [c.subscriber for c, _ in done]
        await conn.execute(
            "UPDATE event_deliveries d SET state = 'delivered', lease_owner = NULL,"
            " lease_until = NULL, last_error = NULL, updated_at = t.at"
            " FROM unnest($1::text[], $2::text[], $3::float8[]) AS t(ev, sub, at)"
            " WHERE d.event_id = t.ev AND d.subscriber = t.sub",
            evs,
            subs,
            at_,
        )
        await conn.execute(
            "INSERT INTO event_processed (subscriber, event_id, at)"
            " SELECT sub, ev, at FROM unnest($1::text[], $2::text[], $3::float8[])"
            " AS t(ev, sub, at) ON CONFLICT DO NOTHING",
            evs,
            subs,
            at_,
        )

    async def _fail(
        self,
        conn: asyncpg.Connection,
        claimed: Claimed,
        finished_at: float,
        error: str,
        retry_after: float | None,
        retry_in: float | None,
    ) -> DeadLetter | None:
        await conn.execute(
            "UPDATE event_attempts SET ok = FALSE, finished_at = $1, error = $2,"
            " retry_after = $3 WHERE id = $4",
            finished_at,
            error,
            retry_after,
            claimed.attempt_id,
        )
        if retry_in is not None:
            await conn.execute(
                "UPDATE event_deliveries SET next_at = $1, lease_owner = NULL,"
                " lease_until = NULL, last_error = $2, updated_at = $3"
                " WHERE event_id = $4 AND subscriber = $5",
                finished_at + retry_in,
                error,
                finished_at,
                claimed.event.id,
                claimed.subscriber,
            )
            return None
        return await self._dead_letter(
            conn, claimed.event, claimed.subscriber, claimed.round, finished_at, error
        )

    async def _interrupted(self, conn: asyncpg.Connection, claimed: Claimed) -> DeadLetter:
        now = time.time()
        await conn.execute("DELETE FROM event_attempts WHERE id = $1", claimed.attempt_id)
        await conn.execute(
            "UPDATE event_deliveries SET attempts = attempts - 1"
            " WHERE event_id = $1 AND subscriber = $2",
            claimed.event.id,
            claimed.subscriber,
        )
        return await self._dead_letter(
            conn, claimed.event, claimed.subscriber, claimed.round, now, INTERRUPTED
        )

    async def _record_one(self, conn: asyncpg.Connection, outcome: Outcome) -> DeadLetter | None:
        if outcome.interrupted:
            return await self._interrupted(conn, outcome.claimed)
        if outcome.ok:
            await self._succeed(conn, [(outcome.claimed, outcome.finished_at)])
            return None
        return await self._fail(
            conn,
            outcome.claimed,
            outcome.finished_at,
            outcome.error or "failed",
            outcome.retry_after,
            outcome.retry_in,
        )

    async def _record(
        self, conn: asyncpg.Connection, outcomes: Sequence[Outcome]
    ) -> list[DeadLetter | Exception | None]:
        """Record outcomes in order; consecutive successes share their statements."""
        out: list[DeadLetter | Exception | None] = []
        delivered: list[tuple[Claimed, float]] = []
        for outcome in outcomes:
            if outcome.ok and not outcome.interrupted:
                delivered.append((outcome.claimed, outcome.finished_at))
                out.append(None)
                continue
            await self._succeed(conn, delivered)
            delivered = []
            out.append(await self._record_one(conn, outcome))
        await self._succeed(conn, delivered)
        return out

    async def _record_each(
        self, outcomes: Sequence[Outcome]
    ) -> list[DeadLetter | Exception | None]:
        """One transaction per outcome: a batch failed, so find the outcome at fault."""
        out: list[DeadLetter | Exception | None] = []
        for outcome in outcomes:
            try:
                async with transaction(self._ready()) as conn:
                    out.append(await self._record_one(conn, outcome))
            except Exception as exc:
                out.append(exc)
        return out

    async def record(self, outcomes: Sequence[Outcome]) -> list[DeadLetter | Exception | None]:
        """Record the outcomes of attempts in one transaction (each on its own if that fails)."""
        if not outcomes:
            return []
        try:
            async with transaction(self._ready()) as conn:
                return await self._record(conn, outcomes)
        except Exception:
            if len(outcomes) == 1:
                raise
        return await self._record_each(outcomes)

    async def dispatch(
        self,
        outcomes: Sequence[Outcome],
        wants: Callable[[str], list[str]],
        batch: int,
        subscribers: Sequence[str],
        limit: int,
        lease_s: float,
    ) -> Step:
        """One dispatcher step in one transaction: record ``outcomes``, relay up to ``batch``
        outbox rows, lease up to ``limit`` due deliveries, and say when the next one is due.
        If that fails, the outcomes are recorded each on its own, then the relay and claim are
        tried once more; their error is returned, not raised."""

        async def rest(
            conn: asyncpg.Connection, recorded: list[DeadLetter | Exception | None]
        ) -> Step:
            relayed = await self._relay(conn, wants, batch)
            claimed, full = await self._claim(conn, subscribers, limit, lease_s)
            due = await self._next_free_due(conn, subscribers, time.time())
            return Step(recorded, relayed, claimed, due, full)

        try:
            async with transaction(self._ready()) as conn:
                return await rest(conn, await self._record(conn, outcomes))
        except Exception as exc:
            if not outcomes:
                return Step([], 0, [], None, error=exc)
        recorded = await self._record_each(outcomes)
        try:
            async with transaction(self._ready()) as conn:
                return await rest(conn, recorded)
        except Exception as exc:
            return Step(recorded, 0, [], None, error=exc)

    async def _dead_letter(
        self,
        conn: asyncpg.Connection,
        event: DomainEvent,
        sub: str,
        round_: int,
        now: float,
        error: str,
    ) -> DeadLetter:
        errors = await self._errors(conn, event.id, sub, round_)
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
        await conn.execute(
            "INSERT INTO event_dead_letters (id, event_id, subscriber, type, subject, trace_id,"
            " attempts, errors, event, created_at, status)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'dead')",
            letter.id,
            letter.event_id,
            sub,
            letter.type,
            letter.subject,
            letter.trace_id,
            letter.attempts,
            _dumps([e.model_dump(mode="json") for e in errors]),
            _dumps(letter.event),
            now,
        )
        await conn.execute(
            "UPDATE event_deliveries SET state = 'dead_lettered', dead_letter_id = $1,"
            " lease_owner = NULL, lease_until = NULL, last_error = $2, updated_at = $3"
            " WHERE event_id = $4 AND subscriber = $5",
            letter.id,
            error,
            now,
            event.id,
            sub,
        )
        return letter

    async def prune(self, retention_s: float) -> None:
        """Forget finished deliveries older than the retention (the outbox is not ours to trim)."""
        cutoff = time.time() - retention_s
        async with transaction(self._ready()) as conn:
            await conn.execute("DELETE FROM event_attempts WHERE finished_at < $1 AND ok", cutoff)
            await conn.execute("DELETE FROM event_processed WHERE at < $1", cutoff)

    # --- seeing what happened -------------------------------------------------------------

    async def recent_events(
        self,
        type_: str | None,
        subject: str | None,
        limit: int,
        wants: Callable[[str], list[str]],
    ) -> list[EventSummary]:
        async with connection(self._ready()) as conn:
            rows = await conn.fetch(
                "SELECT id, type, subject, event FROM outbox"
                " WHERE ($1::text IS NULL OR type = $1) AND ($2::text IS NULL OR subject = $2)"
                " ORDER BY seq DESC LIMIT $3",
                type_,
                subject,
                limit,
            )
            out = []
            for event_id, etype, esubject, raw in rows:
                event = DomainEvent.model_validate_json(raw)
                found = {d.subscriber: d for d in await self._deliveries(conn, event_id)}
                for sub in wants(etype):
                    found.setdefault(sub, Delivery(subscriber=sub, state=DeliveryState.PENDING))
                out.append(
                    EventSummary(
                        id=event_id,
                        type=etype,
                        subject=esubject,
                        time=event.time,
                        source=event.source,
                        trace_id=trace_id_of(event.traceparent),
                        deliveries=sorted(found.values(), key=lambda d: d.subscriber),
                    )
                )
            return out

    @staticmethod
    async def _deliveries(conn: asyncpg.Connection, event_id: str) -> list[Delivery]:
        rows = await conn.fetch(
            "SELECT subscriber, state, attempts, last_error, next_at, updated_at,"
            " dead_letter_id FROM event_deliveries WHERE event_id = $1",
            event_id,
        )
        return [
            Delivery(
                subscriber=sub,
                state=DeliveryState(state),
                attempts=attempts,
                last_error=last_error,
                next_attempt_at=utc(next_at) if state == "pending" else None,
                updated_at=utc(updated_at),
                dead_letter_id=dlq,
            )
            for sub, state, attempts, last_error, next_at, updated_at, dlq in rows
        ]

    # --- dead letters ---------------------------------------------------------------------

    _LETTER_COLUMNS = (
        "id, event_id, subscriber, type, subject, trace_id, attempts, errors, event,"
        " created_at, status, reason, resolved_at"
    )

    @staticmethod
    def _letter(row: Sequence[Any]) -> DeadLetter:
        (
            id_,
            event_id,
            sub,
            type_,
            subject,
            trace_id,
            attempts,
            errors,
            event,
            created_at,
            status,
            reason,
            resolved_at,
        ) = row
        return DeadLetter(
            id=id_,
            event_id=event_id,
            subscriber=sub,
            type=type_,
            subject=subject,
            trace_id=trace_id,
            attempts=attempts,
            errors=[Attempt.model_validate(e) for e in orjson.loads(errors)],
            event=orjson.loads(event),
            created_at=at(created_at),
            status=DeadLetterStatus(status),
            reason=reason,
            resolved_at=utc(resolved_at),
        )

    async def dead_letters(self, query: DeadLetterQuery) -> list[DeadLetter]:
        async with connection(self._ready()) as conn:
            rows = await conn.fetch(
                f"SELECT {self._LETTER_COLUMNS} FROM event_dead_letters"  # noqa: S608
                " WHERE ($1::text IS NULL OR type = $1) AND ($2::text IS NULL OR subscriber = $2)"
                " AND ($3::float8 IS NULL OR created_at >= $3)"
                " AND ($4::float8 IS NULL OR created_at <= $4)"
                " AND ($5::text IS NULL OR status = $5) ORDER BY created_at DESC LIMIT $6",
                query.type,
                query.subscriber,
                query.since.timestamp() if query.since else None,
                query.until.timestamp() if query.until else None,
                query.status.value if query.status else None,
                query.limit,
            )
        return [self._letter(r) for r in rows]

    async def dead_letter(self, letter_id: str) -> DeadLetter | None:
        async with connection(self._ready()) as conn:
            row = await conn.fetchrow(
                f"SELECT {self._LETTER_COLUMNS} FROM event_dead_letters WHERE id = $1",  # noqa: S608
                letter_id,
            )
        return None if row is None else self._letter(row)

    async def replay(self, letter_ids: Sequence[str]) -> list[ReplayResult]:
        """Put dead letters back on the normal delivery path, unless already delivered."""
        async with transaction(self._ready()) as conn:
            now = time.time()
            out = []
            for letter_id in dict.fromkeys(letter_ids):
                row = await conn.fetchrow(
                    "SELECT event_id, subscriber, status, event FROM event_dead_letters"
                    " WHERE id = $1 FOR UPDATE",
                    letter_id,
                )
                if row is None:
                    out.append(ReplayResult(id=letter_id, outcome=ReplayOutcome.NOT_FOUND))
                    continue
                event_id, sub, status, raw = row
                if status != DeadLetterStatus.DEAD:
                    out.append(ReplayResult(id=letter_id, outcome=ReplayOutcome.NOT_DEAD))
                    continue
                done = await conn.fetchval(
                    "SELECT 1 FROM event_processed WHERE subscriber = $1 AND event_id = $2",
                    sub,
                    event_id,
                )
                if done:
                    await conn.execute(
                        "UPDATE event_dead_letters SET status = 'already_delivered',"
                        " resolved_at = $1 WHERE id = $2",
                        now,
                        letter_id,
                    )
                    out.append(ReplayResult(id=letter_id, outcome=ReplayOutcome.ALREADY_DELIVERED))
                    continue
                moved = await conn.execute(
                    "UPDATE event_deliveries SET state = 'pending', round = round + 1,"
                    " attempts = 0, next_at = $1, lease_owner = NULL, lease_until = NULL,"
                    " dead_letter_id = NULL, updated_at = $1 WHERE event_id = $2"
                    " AND subscriber = $3",
                    now,
                    event_id,
                    sub,
                )
                if moved.endswith(" 0"):  # the delivery row was pruned: rebuild it
                    await self._insert_events(conn, [DomainEvent.model_validate_json(raw)])
                    seq = await conn.fetchval("SELECT seq FROM outbox WHERE id = $1", event_id)
                    await conn.execute(
                        "INSERT INTO event_deliveries (event_id, subscriber, seq, state, round,"
                        " next_at, created_at, updated_at)"
                        " VALUES ($1, $2, $3, 'pending', 2, $4, $4, $4)",
                        event_id,
                        sub,
                        seq,
                        now,
                    )
                await conn.execute(
                    "UPDATE event_dead_letters SET status = 'replayed', resolved_at = $1"
                    " WHERE id = $2",
                    now,
                    letter_id,
                )
                out.append(ReplayResult(id=letter_id, outcome=ReplayOutcome.REPLAYED))
            return out

    async def discard(self, letter_id: str, reason: str) -> DeadLetter | None:
        async with transaction(self._ready()) as conn:
            now = time.time()
            row = await conn.fetchrow(
                "SELECT event_id, subscriber, status FROM event_dead_letters WHERE id = $1"
                " FOR UPDATE",
                letter_id,
            )
            if row is None:
                return None
            event_id, sub, status = row
            if status == DeadLetterStatus.DEAD:
                await conn.execute(
                    "UPDATE event_dead_letters SET status = 'discarded', reason = $1,"
                    " resolved_at = $2 WHERE id = $3",
                    reason,
                    now,
                    letter_id,
                )
                await conn.execute(
                    "UPDATE event_deliveries SET state = 'discarded', updated_at = $1"
                    " WHERE event_id = $2 AND subscriber = $3 AND state = 'dead_lettered'",
                    now,
                    event_id,
                    sub,
                )
            found = await conn.fetchrow(
                f"SELECT {self._LETTER_COLUMNS} FROM event_dead_letters WHERE id = $1",  # noqa: S608
                letter_id,
            )
            return None if found is None else self._letter(found)
