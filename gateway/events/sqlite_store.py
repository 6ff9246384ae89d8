"""The embedded event store: the outbox, deliveries, attempts and dead letters in SQLite (WAL).

Every state change of a delivery happens inside one transaction, so a crash leaves each
delivery either before or after a step, never half-way: the relay advances its outbox cursor in
the same transaction that creates the delivery rows, a claim takes a lease, and the result of an
attempt (delivered, retry later, dead-lettered) is written together with its attempt row.
Several such steps may share a transaction (``dispatch``: the outcomes of a batch of attempts,
the relay and the next claim; ``publish``: the events of concurrent publishers), which commits
them all or none; each stays whole.
sqlite3 blocks, so the async methods run each transaction in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from gateway.stores.private_files import private_file
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

T = TypeVar("T")

DB_FILE = "trellis.db"

OUTBOX_DDL = (
    "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " id TEXT UNIQUE NOT NULL, type TEXT NOT NULL, subject TEXT, time TEXT NOT NULL,"
    " event TEXT NOT NULL)"
)
"""The contract with the process APIs (see ``process_apis/ports.py``): never changed here."""

SCHEMA: tuple[str, ...] = (
    OUTBOX_DDL,
    "CREATE TABLE IF NOT EXISTS event_relay (name TEXT PRIMARY KEY, seq INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS event_deliveries ("
    " event_id TEXT NOT NULL, subscriber TEXT NOT NULL, seq INTEGER NOT NULL,"
    " state TEXT NOT NULL, round INTEGER NOT NULL DEFAULT 1, attempts INTEGER NOT NULL DEFAULT 0,"
    " next_at REAL NOT NULL, lease_owner TEXT, lease_until REAL, last_error TEXT,"
    " dead_letter_id TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL,"
    " PRIMARY KEY (event_id, subscriber)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS event_deliveries_due ON event_deliveries (state, next_at)",
    "CREATE TABLE IF NOT EXISTS event_attempts ("
    " id INTEGER PRIMARY KEY, event_id TEXT NOT NULL, subscriber TEXT NOT NULL,"
    " round INTEGER NOT NULL, n INTEGER NOT NULL, started_at REAL NOT NULL, finished_at REAL,"
    " ok INTEGER, error TEXT, retry_after REAL)",
    "CREATE INDEX IF NOT EXISTS event_attempts_of ON event_attempts (event_id, subscriber, round)",
    "CREATE TABLE IF NOT EXISTS event_processed ("
    " subscriber TEXT NOT NULL, event_id TEXT NOT NULL, at REAL NOT NULL,"
    " PRIMARY KEY (subscriber, event_id)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS event_dead_letters ("
    " id TEXT PRIMARY KEY, event_id TEXT NOT NULL, subscriber TEXT NOT NULL, type TEXT NOT NULL,"
    " subject TEXT, trace_id TEXT, attempts INTEGER NOT NULL, errors TEXT NOT NULL,"
    " event TEXT NOT NULL, created_at REAL NOT NULL, status TEXT NOT NULL, reason TEXT,"
    " resolved_at REAL)",
    "CREATE INDEX IF NOT EXISTS event_dead_letters_at ON event_dead_letters (created_at)",
    "CREATE TABLE IF NOT EXISTS inbound_webhook_ids ("
    " source TEXT NOT NULL, event_id TEXT NOT NULL, received_at REAL NOT NULL,"
    " PRIMARY KEY (source, event_id)) WITHOUT ROWID",
)

INTERRUPTED = "Interrupted: the process ended during the attempt"


def owner_id() -> str:
    """Who holds a lease: host, pid and a per-start nonce (a reused pid is not the same owner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _owner_alive(owner: str, me: str) -> bool:
    host, _, rest = owner.partition(":")
    pid_text, _, _nonce = rest.partition(":")
    if owner == me:
        return True
    if host != socket.gethostname() or not pid_text.isdigit():
        return True  # another host's lease: let it expire rather than guess
    pid = int(pid_text)
    if pid == os.getpid():
        return False  # an earlier start of this very process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery this process holds the lease of, about to be attempted."""

    event: DomainEvent
    subscriber: str
    round: int
    n: int
    attempt_id: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt of a claimed delivery ended, to be recorded.

    ``ok``: delivered. Otherwise it failed with ``error`` and is retried in ``retry_in`` seconds
    or, when that is None, dead-lettered. ``interrupted``: the last allowed attempt was cut short
    by a crash, so it is dead-lettered without being tried again.
    """

    claimed: Claimed
    finished_at: float
    ok: bool
    error: str | None = None
    retry_after: float | None = None
    retry_in: float | None = None
    interrupted: bool = False


@dataclass(frozen=True, slots=True)
class Step:
    """What one ``dispatch`` transaction did."""

    recorded: list[DeadLetter | Exception | None]
    """Per outcome, in order: its dead letter, None, or why it could not be recorded."""
    relayed: int
    claimed: list[Claimed]
    next_due: float | None
    """When the earliest pending delivery nobody holds becomes due (None: there is none)."""
    claim_full: bool = False
    """The claim stopped at its limit: more deliveries may be due now."""
    error: Exception | None = None
    """The relay or claim failed (the outcomes were still recorded, each on its own)."""


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class SqliteEventStore:
    """One connection to ``<data_dir>/trellis.db``, guarded by a lock, used from worker threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.owner = owner_id()
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._publishes: GroupCommit[Sequence[DomainEvent], None] = GroupCommit(self._publish_batch)

    @classmethod
    def in_data_dir(cls, data_dir: Path | str) -> SqliteEventStore:
        return cls(Path(data_dir) / DB_FILE)

    # --- plumbing -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            private_file(self.path)  # before SQLite creates it (and its -wal, -shm)
            conn = sqlite3.connect(
                self.path, timeout=10.0, check_same_thread=False, isolation_level=None
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=10000")
            for ddl in SCHEMA:
                conn.execute(ddl)
            self._conn = conn
        return self._conn

    def _tx(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one IMMEDIATE transaction (write lock up front: no upgrade deadlock)."""
        with self._lock:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            return work(self._connect())

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    async def open(self) -> None:
        """Create the file and tables now, so a bad data dir fails at startup."""
        await self._run(self._read, lambda conn: None)

    async def close(self) -> None:
        await self._publishes.drain()

        def close() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await self._run(close)

    # --- publishing -----------------------------------------------------------------------

    @staticmethod
    def _insert_events(conn: sqlite3.Connection, events: Iterable[DomainEvent]) -> None:
        conn.executemany(
            "INSERT INTO outbox (id, type, subject, time, event) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT(id) DO NOTHING",
            [(e.id, e.type, e.subject, e.time.isoformat(), e.model_dump_json()) for e in events],
        )

    async def publish(self, events: Sequence[DomainEvent]) -> None:
        """Append events to the outbox (inbound webhooks, tools); an existing id is kept.

        Concurrent publishes share one transaction (group commit); each returns once its
        events are committed.
        """
        await self._publishes.submit(list(events))

    async def _publish_batch(
        self, batches: Sequence[Sequence[DomainEvent]]
    ) -> list[Exception | None]:
        def work(conn: sqlite3.Connection) -> None:
            self._insert_events(conn, [e for events in batches for e in events])

        try:
            await self._run(self._tx, work)
            return [None] * len(batches)
        except Exception as exc:
            if len(batches) == 1:
                return [exc]
        return [await self._publish_one(events) for events in batches]  # find the bad one

    async def _publish_one(self, events: Sequence[DomainEvent]) -> Exception | None:
        try:
            await self._run(self._tx, lambda conn: self._insert_events(conn, events))
        except Exception as exc:
            return exc
        return None

    async def accept_inbound(
        self, source: str, vendor_event_id: str, remember_s: int, event: DomainEvent | None
    ) -> bool:
        """Remember a webhook's id and enqueue its domain event atomically; False if seen."""

        def work(conn: sqlite3.Connection) -> bool:
            now = time.time()
            conn.execute(
                "DELETE FROM inbound_webhook_ids WHERE source = ? AND received_at < ?",
                (source, now - remember_s),
            )
            cur = conn.execute(
                "INSERT OR IGNORE INTO inbound_webhook_ids (source, event_id, received_at)"
                " VALUES (?, ?, ?)",
                (source, vendor_event_id, now),
            )
            if cur.rowcount == 0:
                return False
            if event is not None:
                self._insert_events(conn, [event])
            return True

        return await self._run(self._tx, work)

    # --- dispatching ----------------------------------------------------------------------

    def release_dead_leases(self) -> int:
        """Free leases held by processes that no longer run (after a crash): retry at once."""

        def work(conn: sqlite3.Connection) -> int:
            owners = [
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT lease_owner FROM event_deliveries"
                    " WHERE lease_owner IS NOT NULL AND state = 'pending'"
                )
            ]
            freed = 0
            for owner in owners:
                if not _owner_alive(owner, self.owner):
                    freed += conn.execute(
                        "UPDATE event_deliveries SET lease_owner = NULL, lease_until = NULL"
                        " WHERE lease_owner = ?",
                        (owner,),
                    ).rowcount
            return freed

        return self._tx(work)

    def relay(self, wants: Callable[[str], list[str]], batch: int) -> int:
        """Turn new outbox rows into delivery rows, one per interested subscriber."""
        return self._tx(lambda conn: self._relay(conn, wants, batch))

    @staticmethod
    def _relay(conn: sqlite3.Connection, wants: Callable[[str], list[str]], batch: int) -> int:
        row = conn.execute("SELECT seq FROM event_relay WHERE name = 'outbox'").fetchone()
        cursor = row[0] if row else 0
        rows = conn.execute(
            "SELECT seq, id, type FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
            (cursor, batch),
        ).fetchall()
        if not rows:
            return 0
        now = time.time()
        conn.executemany(
            "INSERT OR IGNORE INTO event_deliveries (event_id, subscriber, seq, state,"
            " next_at, created_at, updated_at) VALUES (?, ?, ?, 'pending', ?, ?, ?)",
            [
                (event_id, sub, seq, now, now, now)
                for seq, event_id, type_ in rows
                for sub in wants(type_)
            ],
        )
        conn.execute(
            "INSERT INTO event_relay (name, seq) VALUES ('outbox', ?)"
            " ON CONFLICT(name) DO UPDATE SET seq = excluded.seq",
            (rows[-1][0],),
        )
        return len(rows)

    def next_due(self, subscribers: Sequence[str]) -> float | None:
        """When the earliest pending delivery becomes due (None when there is none)."""
        marks = ",".join("?" * len(subscribers))
        row = self._read(
            lambda conn: conn.execute(
                f"SELECT min(next_at) FROM event_deliveries WHERE state = 'pending'"  # noqa: S608
                f" AND subscriber IN ({marks})",
                tuple(subscribers),
            ).fetchone()
        )
        return None if row is None or row[0] is None else float(row[0])

    @staticmethod
    def _next_free_due(
        conn: sqlite3.Connection, subscribers: Sequence[str], now: float
    ) -> float | None:
        """The earliest ``next_at`` of a pending delivery no live lease holds.

        Walks the (state, next_at) index and skips the few leased rows (deliveries in flight),
        so a dispatcher with attempts running does not spin on deliveries it holds itself.
        """
        if not subscribers:
            return None
        marks = ",".join("?" * len(subscribers))
        row = conn.execute(
            "SELECT next_at FROM event_deliveries WHERE state = 'pending'"  # noqa: S608
            " AND (lease_until IS NULL OR lease_until < ?)"
            f" AND subscriber IN ({marks}) ORDER BY next_at LIMIT 1",
            (now, *subscribers),
        ).fetchone()
        return None if row is None else float(row[0])

    def claim(self, subscribers: Sequence[str], limit: int, lease_s: float) -> list[Claimed]:
        """Lease up to ``limit`` due deliveries and open an attempt row for each."""
        if not subscribers or limit <= 0:
            return []
        return self._tx(lambda conn: self._claim(conn, subscribers, limit, lease_s)[0])

    def _claim(
        self, conn: sqlite3.Connection, subscribers: Sequence[str], limit: int, lease_s: float
    ) -> tuple[list[Claimed], bool]:
        """The leased deliveries, and whether ``limit`` stopped the claim (more may be due)."""
        if not subscribers or limit <= 0:
            return [], False
        marks = ",".join("?" * len(subscribers))
        now = time.time()
        rows = conn.execute(  # only "?" placeholders are formatted in
            "SELECT d.event_id, d.subscriber, d.round, d.attempts, o.event,"  # noqa: S608
            " EXISTS (SELECT 1 FROM event_processed p"
            "  WHERE p.subscriber = d.subscriber AND p.event_id = d.event_id)"
            " FROM event_deliveries d JOIN outbox o ON o.seq = d.seq"
            " WHERE d.state = 'pending' AND d.next_at <= ?"
            " AND (d.lease_until IS NULL OR d.lease_until < ?)"
            f" AND d.subscriber IN ({marks}) ORDER BY d.next_at LIMIT ?",
            (now, now, *subscribers, limit),
        ).fetchall()
        if not rows:
            return [], False
        # an attempt left open by a crash counts, and says so (a round without attempts has none)
        conn.executemany(
            "UPDATE event_attempts SET ok = 0, finished_at = ?, error = ?"
            " WHERE event_id = ? AND subscriber = ? AND round = ? AND ok IS NULL",
            [(now, INTERRUPTED, ev, sub, round_) for ev, sub, round_, n, _, _ in rows if n > 0],
        )
        conn.executemany(  # handled already (by another worker, or before a crash)
            "UPDATE event_deliveries SET state = 'delivered', lease_owner = NULL,"
            " lease_until = NULL, updated_at = ? WHERE event_id = ? AND subscriber = ?",
            [(now, ev, sub) for ev, sub, _, _, _, done in rows if done],
        )
        todo = [r for r in rows if not r[5]]
        conn.executemany(
            "UPDATE event_deliveries SET attempts = ?, lease_owner = ?, lease_until = ?,"
            " updated_at = ? WHERE event_id = ? AND subscriber = ?",
            [(n + 1, self.owner, now + lease_s, now, ev, sub) for ev, sub, _, n, _, _ in todo],
        )
        out = []
        for event_id, sub, round_, attempts, raw, _ in todo:
            n = attempts + 1
            cur = conn.execute(
                "INSERT INTO event_attempts (event_id, subscriber, round, n, started_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (event_id, sub, round_, n, now),
            )
            event = DomainEvent.model_validate_json(raw)
            out.append(Claimed(event, sub, round_, n, int(cur.lastrowid or 0)))
        return out, len(rows) >= limit

    def _errors(
        self, conn: sqlite3.Connection, event_id: str, sub: str, round_: int
    ) -> list[Attempt]:
        return [
            Attempt(
                n=n,
                started_at=at(started),
                finished_at=utc(finished),
                ok=None if ok is None else bool(ok),
                error=error,
                retry_after_s=retry_after,
            )
            for n, started, finished, ok, error, retry_after in conn.execute(
                "SELECT n, started_at, finished_at, ok, error, retry_after FROM event_attempts"
                " WHERE event_id = ? AND subscriber = ? AND round = ? ORDER BY n, id",
                (event_id, sub, round_),
            )
        ]

    @staticmethod
    def _succeed(conn: sqlite3.Connection, done: Sequence[tuple[Claimed, float]]) -> None:
        """Delivered: close the attempts, settle the deliveries, remember the processed ids."""
        if not done:
            return
        conn.executemany(
            "UPDATE event_attempts SET ok = 1, finished_at = ? WHERE id = ?",
            [(finished_at, c.attempt_id) for c, finished_at in done],
        )
        conn.executemany(
            "UPDATE event_deliveries SET state = 'delivered', lease_owner = NULL,"
            " lease_until = NULL, last_error = NULL, updated_at = ?"
            " WHERE event_id = ? AND subscriber = ?",
            [(finished_at, c.event.id, c.subscriber) for c, finished_at in done],
        )
        conn.executemany(
            "INSERT OR IGNORE INTO event_processed (subscriber, event_id, at) VALUES (?, ?, ?)",
            [(c.subscriber, c.event.id, finished_at) for c, finished_at in done],
        )

    def _fail(
        self,
        conn: sqlite3.Connection,
        claimed: Claimed,
        finished_at: float,
        error: str,
        retry_after: float | None,
        retry_in: float | None,
    ) -> DeadLetter | None:
        ev, sub = claimed.event.id, claimed.subscriber
        conn.execute(
            "UPDATE event_attempts SET ok = 0, finished_at = ?, error = ?, retry_after = ?"
            " WHERE id = ?",
            (finished_at, error, retry_after, claimed.attempt_id),
        )
        if retry_in is not None:
            conn.execute(
                "UPDATE event_deliveries SET next_at = ?, lease_owner = NULL,"
                " lease_until = NULL, last_error = ?, updated_at = ?"
                " WHERE event_id = ? AND subscriber = ?",
                (finished_at + retry_in, error, finished_at, ev, sub),
            )
            return None
        return self._dead_letter(conn, claimed.event, sub, claimed.round, finished_at, error)

    def _interrupted(self, conn: sqlite3.Connection, claimed: Claimed) -> DeadLetter:
        now = time.time()
        conn.execute("DELETE FROM event_attempts WHERE id = ?", (claimed.attempt_id,))
        conn.execute(
            "UPDATE event_deliveries SET attempts = attempts - 1"
            " WHERE event_id = ? AND subscriber = ?",
            (claimed.event.id, claimed.subscriber),
        )
        return self._dead_letter(
            conn, claimed.event, claimed.subscriber, claimed.round, now, INTERRUPTED
        )

    def _record_one(self, conn: sqlite3.Connection, outcome: Outcome) -> DeadLetter | None:
        if outcome.interrupted:
            return self._interrupted(conn, outcome.claimed)
        if outcome.ok:
            self._succeed(conn, [(outcome.claimed, outcome.finished_at)])
            return None
        return self._fail(
            conn,
            outcome.claimed,
            outcome.finished_at,
            outcome.error or "failed",
            outcome.retry_after,
            outcome.retry_in,
        )

    def _record(
        self, conn: sqlite3.Connection, outcomes: Sequence[Outcome]
    ) -> list[DeadLetter | Exception | None]:
        """Record outcomes in order; consecutive successes share their statements."""
        out: list[DeadLetter | Exception | None] = []
        delivered: list[tuple[Claimed, float]] = []
        for outcome in outcomes:
            if outcome.ok and not outcome.interrupted:
                delivered.append((outcome.claimed, outcome.finished_at))
                out.append(None)
                continue
            self._succeed(conn, delivered)
            delivered = []
            out.append(self._record_one(conn, outcome))
        self._succeed(conn, delivered)
        return out

    def _record_each(self, outcomes: Sequence[Outcome]) -> list[DeadLetter | Exception | None]:
        """One transaction per outcome: a batch failed, so find the outcome at fault."""
        out: list[DeadLetter | Exception | None] = []
        for outcome in outcomes:

            def one(conn: sqlite3.Connection, o: Outcome = outcome) -> DeadLetter | None:
                return self._record_one(conn, o)

            try:
                out.append(self._tx(one))
            except Exception as exc:
                out.append(exc)
        return out

    def record(self, outcomes: Sequence[Outcome]) -> list[DeadLetter | Exception | None]:
        """Record the outcomes of attempts in one transaction (each on its own if that fails)."""
        if not outcomes:
            return []
        try:
            return self._tx(lambda conn: self._record(conn, outcomes))
        except Exception:
            if len(outcomes) == 1:
                raise
            return self._record_each(outcomes)

    def dispatch(
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

        If that transaction fails, the outcomes are recorded each on its own, then the relay
        and claim are tried once more; their error is returned, not raised.
        """

        def rest(conn: sqlite3.Connection, recorded: list[DeadLetter | Exception | None]) -> Step:
            relayed = self._relay(conn, wants, batch)
            claimed, full = self._claim(conn, subscribers, limit, lease_s)
            due = self._next_free_due(conn, subscribers, time.time())
            return Step(recorded, relayed, claimed, due, full)

        try:
            return self._tx(lambda conn: rest(conn, self._record(conn, outcomes)))
        except Exception as exc:
            if not outcomes:
                return Step([], 0, [], None, error=exc)
        recorded = self._record_each(outcomes)
        try:
            return self._tx(lambda conn: rest(conn, recorded))
        except Exception as exc:
            return Step(recorded, 0, [], None, error=exc)

    def succeed(self, claimed: Claimed, finished_at: float) -> None:
        self._tx(lambda conn: self._succeed(conn, [(claimed, finished_at)]))

    def fail(
        self,
        claimed: Claimed,
        finished_at: float,
        error: str,
        retry_after: float | None,
        retry_in: float | None,
    ) -> DeadLetter | None:
        """Record a failed attempt: retry in ``retry_in`` seconds, or (None) dead-letter it."""
        return self._tx(
            lambda conn: self._fail(conn, claimed, finished_at, error, retry_after, retry_in)
        )

    def dead_letter_interrupted(self, claimed: Claimed) -> DeadLetter:
        """The last allowed attempt was cut short by a crash: dead-letter without trying again."""
        return self._tx(lambda conn: self._interrupted(conn, claimed))

    def _dead_letter(
        self,
        conn: sqlite3.Connection,
        event: DomainEvent,
        sub: str,
        round_: int,
        now: float,
        error: str,
    ) -> DeadLetter:
        errors = self._errors(conn, event.id, sub, round_)
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
        conn.execute(
            "INSERT INTO event_dead_letters (id, event_id, subscriber, type, subject, trace_id,"
            " attempts, errors, event, created_at, status) VALUES (?,?,?,?,?,?,?,?,?,?,'dead')",
            (
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
            ),
        )
        conn.execute(
            "UPDATE event_deliveries SET state = 'dead_lettered', dead_letter_id = ?,"
            " lease_owner = NULL, lease_until = NULL, last_error = ?, updated_at = ?"
            " WHERE event_id = ? AND subscriber = ?",
            (letter.id, error, now, event.id, sub),
        )
        return letter

    def prune(self, retention_s: float) -> None:
        """Forget finished deliveries older than the retention (the outbox is not ours to trim)."""

        def work(conn: sqlite3.Connection) -> None:
            cutoff = time.time() - retention_s
            conn.execute("DELETE FROM event_attempts WHERE finished_at < ? AND ok = 1", (cutoff,))
            conn.execute("DELETE FROM event_processed WHERE at < ?", (cutoff,))

        self._tx(work)

    # --- seeing what happened -------------------------------------------------------------

    async def recent_events(
        self,
        type_: str | None,
        subject: str | None,
        limit: int,
        wants: Callable[[str], list[str]],
    ) -> list[EventSummary]:
        def work(conn: sqlite3.Connection) -> list[EventSummary]:
            rows = conn.execute(
                "SELECT id, type, subject, event FROM outbox"
                " WHERE (?1 IS NULL OR type = ?1) AND (?2 IS NULL OR subject = ?2)"
                " ORDER BY seq DESC LIMIT ?3",
                (type_, subject, limit),
            ).fetchall()
            out = []
            for event_id, etype, esubject, raw in rows:
                event = DomainEvent.model_validate_json(raw)
                found = {d.subscriber: d for d in self._deliveries(conn, event_id)}
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

        return await self._run(self._read, work)

    @staticmethod
    def _deliveries(conn: sqlite3.Connection, event_id: str) -> list[Delivery]:
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
            for sub, state, attempts, last_error, next_at, updated_at, dlq in conn.execute(
                "SELECT subscriber, state, attempts, last_error, next_at, updated_at,"
                " dead_letter_id FROM event_deliveries WHERE event_id = ?",
                (event_id,),
            )
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
        def work(conn: sqlite3.Connection) -> list[DeadLetter]:
            rows = conn.execute(
                f"SELECT {self._LETTER_COLUMNS} FROM event_dead_letters"  # noqa: S608
                " WHERE (?1 IS NULL OR type = ?1) AND (?2 IS NULL OR subscriber = ?2)"
                " AND (?3 IS NULL OR created_at >= ?3) AND (?4 IS NULL OR created_at <= ?4)"
                " AND (?5 IS NULL OR status = ?5) ORDER BY created_at DESC LIMIT ?6",
                (
                    query.type,
                    query.subscriber,
                    query.since.timestamp() if query.since else None,
                    query.until.timestamp() if query.until else None,
                    query.status.value if query.status else None,
                    query.limit,
                ),
            ).fetchall()
            return [self._letter(r) for r in rows]

        return await self._run(self._read, work)

    async def dead_letter(self, letter_id: str) -> DeadLetter | None:
        def work(conn: sqlite3.Connection) -> DeadLetter | None:
            row = conn.execute(
                f"SELECT {self._LETTER_COLUMNS} FROM event_dead_letters WHERE id = ?",  # noqa: S608
                (letter_id,),
            ).fetchone()
            return None if row is None else self._letter(row)

        return await self._run(self._read, work)

    async def replay(self, letter_ids: Sequence[str]) -> list[ReplayResult]:
        """Put dead letters back on the normal delivery path, unless already delivered."""

        def work(conn: sqlite3.Connection) -> list[ReplayResult]:
            now = time.time()
            out = []
            for letter_id in dict.fromkeys(letter_ids):
                row = conn.execute(
                    "SELECT event_id, subscriber, status, event FROM event_dead_letters"
                    " WHERE id = ?",
                    (letter_id,),
                ).fetchone()
                if row is None:
                    out.append(ReplayResult(id=letter_id, outcome=ReplayOutcome.NOT_FOUND))
                    continue
                event_id, sub, status, raw = row
                if status != DeadLetterStatus.DEAD:
                    out.append(ReplayResult(id=letter_id, outcome=ReplayOutcome.NOT_DEAD))
                    continue
                done = conn.execute(
                    "SELECT 1 FROM event_processed WHERE subscriber = ? AND event_id = ?",
                    (sub, event_id),
                ).fetchone()
                if done:
                    conn.execute(
                        "UPDATE event_dead_letters SET status = 'already_delivered',"
                        " resolved_at = ? WHERE id = ?",
                        (now, letter_id),
                    )
                    out.append(ReplayResult(id=letter_id, outcome=ReplayOutcome.ALREADY_DELIVERED))
                    continue
                moved = conn.execute(
                    "UPDATE event_deliveries SET state = 'pending', round = round + 1,"
                    " attempts = 0, next_at = ?, lease_owner = NULL, lease_until = NULL,"
                    " dead_letter_id = NULL, updated_at = ? WHERE event_id = ? AND subscriber = ?",
                    (now, now, event_id, sub),
                ).rowcount
                if not moved:  # the delivery row was pruned: rebuild it from the outbox
                    event = DomainEvent.model_validate_json(raw if isinstance(raw, str) else "{}")
                    self._insert_events(conn, [event])
                    seq = conn.execute(
                        "SELECT seq FROM outbox WHERE id = ?", (event_id,)
                    ).fetchone()[0]
                    conn.execute(
                        "INSERT INTO event_deliveries (event_id, subscriber, seq, state, round,"
                        " next_at, created_at, updated_at) VALUES (?, ?, ?, 'pending', 2, ?, ?, ?)",
                        (event_id, sub, seq, now, now, now),
                    )
                conn.execute(
                    "UPDATE event_dead_letters SET status = 'replayed', resolved_at = ?"
                    " WHERE id = ?",
                    (now, letter_id),
                )
                out.append(ReplayResult(id=letter_id, outcome=ReplayOutcome.REPLAYED))
            return out

        return await self._run(self._tx, work)

    async def discard(self, letter_id: str, reason: str) -> DeadLetter | None:
        def work(conn: sqlite3.Connection) -> DeadLetter | None:
            now = time.time()
            row = conn.execute(
                "SELECT event_id, subscriber, status FROM event_dead_letters WHERE id = ?",
                (letter_id,),
            ).fetchone()
            if row is None:
                return None
            event_id, sub, status = row
            if status == DeadLetterStatus.DEAD:
                conn.execute(
                    "UPDATE event_dead_letters SET status = 'discarded', reason = ?,"
                    " resolved_at = ? WHERE id = ?",
                    (reason, now, letter_id),
                )
                conn.execute(
                    "UPDATE event_deliveries SET state = 'discarded', updated_at = ?"
                    " WHERE event_id = ? AND subscriber = ? AND state = 'dead_lettered'",
                    (now, event_id, sub),
                )
            found = conn.execute(
                f"SELECT {self._LETTER_COLUMNS} FROM event_dead_letters WHERE id = ?",  # noqa: S608
                (letter_id,),
            ).fetchone()
            return self._letter(found)

        return await self._run(self._tx, work)
