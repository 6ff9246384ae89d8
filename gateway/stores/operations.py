"""The process APIs' durable record: idempotency keys, cross-reference ids and the outbox.

One store, one transaction per operation (``commit``), so "did the work", "remember the answer"
and "announce it" can never disagree after a crash. SQLite (WAL, ``<data_dir>/trellis.db``) when
one process runs; Redis (one MULTI/EXEC) when several share the work; PostgreSQL
(``postgres_records.py``) when ``TRELLIS_DATABASE_URL`` is set, for several hosts. The outbox
format is the contract of ``process_apis/ports.py`` with the event bus.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import redis.asyncio as aioredis

from gateway.stores.inline_read import InlineReader
from gateway.stores.private_files import private_file
from gateway.stores.redis_options import DEFAULT_PREFIX, REDIS_TIMEOUTS
from process_apis.ports import Begin, BeginState, DomainEvent, Outcome, StoredResponse

if TYPE_CHECKING:
    from gateway.stores.postgres_records import PostgresOperationStore

IN_PROGRESS_LEASE_S = 120.0
"""A claimed key whose request died is claimable again after this long (a saga never runs this
long: every backend call has its own timeout)."""

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS idempotency ("
    " key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, state TEXT NOT NULL,"
    " status INTEGER, body TEXT, ttl_s REAL NOT NULL, expires_at REAL NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS xrefs ("
    " customer_id TEXT NOT NULL, system TEXT NOT NULL, system_id TEXT NOT NULL,"
    " PRIMARY KEY (customer_id, system)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS xrefs_by_system ON xrefs (system, system_id)",
    "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " id TEXT UNIQUE NOT NULL, type TEXT NOT NULL, subject TEXT, time TEXT NOT NULL,"
    " event TEXT NOT NULL)",
)


def event_json(event: DomainEvent) -> str:
    """The CloudEvent as the outbox stores it (JSON text, UTC ISO times)."""
    return event.model_dump_json()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _response_json(response: StoredResponse | None) -> tuple[int | None, str | None]:
    if response is None:
        return None, None
    return response.status, orjson.dumps(response.body).decode()


class SqliteOperationStore:
    """The store in one SQLite file (WAL). sqlite3 blocks, so every call runs in a thread;
    one connection behind a lock suffices because each call is a short transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._reader = InlineReader(path)  # point reads, on the loop's thread only

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            private_file(self.path)  # before SQLite creates it (and its -wal, -shm)
            conn = sqlite3.connect(
                self.path, timeout=5.0, check_same_thread=False, isolation_level=None
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                conn.execute(statement)
            self._conn = conn
        return self._conn

    def _run(self, fn: Any, *args: Any) -> Any:
        with self._lock:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn, *args)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    # --- transactions (run in a worker thread) ----------------------------------------------

    @staticmethod
    def _begin(conn: sqlite3.Connection, key: str, fingerprint: str, ttl_s: float) -> Begin:
        now = time.time()
        row = conn.execute(
            "SELECT fingerprint, state, status, body, expires_at FROM idempotency WHERE key = ?",
            (key,),
        ).fetchone()
        if row is not None and row[4] > now:
            fp, state, status, body, _ = row
            if fp != fingerprint:
                return Begin(BeginState.MISMATCH)
            if state == "done":
                return Begin(BeginState.DONE, StoredResponse(int(status), orjson.loads(body)))
            return Begin(BeginState.IN_PROGRESS)
        conn.execute(
            "INSERT INTO idempotency (key, fingerprint, state, status, body, ttl_s, expires_at)"
            " VALUES (?, ?, 'in_progress', NULL, NULL, ?, ?) ON CONFLICT(key) DO UPDATE SET"
            " fingerprint = excluded.fingerprint, state = 'in_progress', status = NULL,"
            " body = NULL, ttl_s = excluded.ttl_s, expires_at = excluded.expires_at",
            (key, fingerprint, ttl_s, now + min(ttl_s, IN_PROGRESS_LEASE_S)),
        )
        # Expired keys are forgotten as new ones arrive, so the table holds only live keys.
        conn.execute("DELETE FROM idempotency WHERE expires_at < ?", (now - 60,))
        return Begin(BeginState.NEW)

    @staticmethod
    def _commit(conn: sqlite3.Connection, outcome: Outcome) -> None:
        if outcome.idempotency_key is not None:
            status, body = _response_json(outcome.response)
            conn.execute(
                "UPDATE idempotency SET state = 'done', status = ?, body = ?,"
                " expires_at = ? + ttl_s WHERE key = ?",
                (status, body, time.time(), outcome.idempotency_key),
            )
        for customer_id, ids in outcome.xrefs.items():
            conn.executemany(
                "INSERT INTO xrefs (customer_id, system, system_id) VALUES (?, ?, ?)"
                " ON CONFLICT(customer_id, system) DO UPDATE SET system_id = excluded.system_id",
                [(customer_id, system, system_id) for system, system_id in ids.items()],
            )
        conn.executemany(
            "INSERT INTO outbox (id, type, subject, time, event) VALUES (?, ?, ?, ?, ?)",
            [(e.id, e.type, e.subject, e.time.isoformat(), event_json(e)) for e in outcome.events],
        )

    def _select(self, sql: str, args: tuple[str, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._connect().execute(sql, args).fetchall())

    async def _point_read(self, sql: str, args: tuple[str, ...]) -> list[tuple[Any, ...]]:
        """A cross-reference lookup, on the loop (a thread hop per lookup costs more than the
        indexed read itself); in a worker thread only when the file is busy (``inline_read.py``)."""
        try:
            return self._reader.fetchall(sql, args)
        except sqlite3.OperationalError:
            return await asyncio.to_thread(self._select, sql, args)

    def _close(self) -> None:
        with self._lock:
            self._reader.close()
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # --- the OperationStore protocol --------------------------------------------------------

    async def open(self) -> None:
        """Create the file and tables now, so a bad data_dir fails at startup."""
        await asyncio.to_thread(self._select, "SELECT 1", ())

    async def begin(self, key: str, fingerprint: str, ttl_s: float = 86_400) -> Begin:
        result: Begin = await asyncio.to_thread(self._run, self._begin, key, fingerprint, ttl_s)
        return result

    async def release(self, key: str) -> None:
        await asyncio.to_thread(
            self._run,
            lambda conn: conn.execute(
                "DELETE FROM idempotency WHERE key = ? AND state = 'in_progress'", (key,)
            ),
        )

    async def commit(self, outcome: Outcome) -> None:
        await asyncio.to_thread(self._run, self._commit, outcome)

    async def xrefs(self, customer_id: str) -> dict[str, str]:
        rows = await self._point_read(
            "SELECT system, system_id FROM xrefs WHERE customer_id = ?", (customer_id,)
        )
        return {str(s): str(i) for s, i in rows}

    async def customer_for(self, system: str, system_id: str) -> str | None:
        rows = await self._point_read(
            "SELECT customer_id FROM xrefs WHERE system = ? AND system_id = ? LIMIT 1",
            (system, system_id),
        )
        return str(rows[0][0]) if rows else None

    async def close(self) -> None:
        await asyncio.to_thread(self._close)


class RedisOperationStore:
    """The store in Redis, shared by every gateway process.

    Keys, after the prefix (``trellis:`` by default): ``idem:<key>`` (JSON, expiring),
    ``xref:<customer id>`` (hash system -> id), ``xref-of:<system>:<id>`` (-> customer id) and
    the ``events`` stream the event bus reads.
    """

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.url = url
        self.prefix = prefix
        self.stream = f"{prefix}events"
        self._redis: aioredis.Redis = aioredis.Redis.from_url(url, **REDIS_TIMEOUTS)

    def _idem(self, key: str) -> str:
        return f"{self.prefix}idem:{key}"

    async def open(self) -> None:
        """Fail at startup, not on the first order, when Redis is unreachable."""
        await self._redis.ping()

    async def begin(self, key: str, fingerprint: str, ttl_s: float = 86_400) -> Begin:
        claim = orjson.dumps({"fp": fingerprint, "state": "in_progress", "ttl": ttl_s})
        lease_ms = int(min(ttl_s, IN_PROGRESS_LEASE_S) * 1000)
        for _ in range(3):  # the key may expire between a failed claim and the read
            if await self._redis.set(self._idem(key), claim, nx=True, px=lease_ms):
                return Begin(BeginState.NEW)
            raw = await self._redis.get(self._idem(key))
            if raw is None:
                continue
            record = orjson.loads(raw)
            if record["fp"] != fingerprint:
                return Begin(BeginState.MISMATCH)
            if record["state"] == "done":
                return Begin(BeginState.DONE, StoredResponse(record["status"], record["body"]))
            return Begin(BeginState.IN_PROGRESS)
        return Begin(BeginState.IN_PROGRESS)

    async def release(self, key: str) -> None:
        raw = await self._redis.get(self._idem(key))
        if raw is not None and orjson.loads(raw)["state"] == "in_progress":
            await self._redis.delete(self._idem(key))

    async def commit(self, outcome: Outcome) -> None:
        async with self._redis.pipeline(transaction=True) as tx:  # MULTI ... EXEC
            if outcome.idempotency_key is not None:
                idem = self._idem(outcome.idempotency_key)
                raw = await self._redis.get(idem)
                claim: dict[str, Any] = (
                    orjson.loads(raw) if raw is not None else {"fp": "", "ttl": 86_400}
                )
                response = outcome.response
                done = {
                    "fp": claim["fp"],
                    "state": "done",
                    "status": response.status if response else None,
                    "body": response.body if response else None,
                }
                tx.set(idem, orjson.dumps(done), px=int(float(claim["ttl"]) * 1000))
            for customer_id, ids in outcome.xrefs.items():
                if ids:
                    tx.hset(f"{self.prefix}xref:{customer_id}", mapping=dict(ids))  # type: ignore[arg-type]
                for system, system_id in ids.items():
                    if system.startswith("_"):  # a state marker, not a system id
                        continue
                    tx.set(f"{self.prefix}xref-of:{system}:{system_id}", customer_id)
            for event in outcome.events:
                fields = {"id": event.id, "type": event.type, "event": event_json(event)}
                tx.xadd(self.stream, fields)  # type: ignore[arg-type]
            await tx.execute()

    async def xrefs(self, customer_id: str) -> dict[str, str]:
        raw = await self._redis.hgetall(f"{self.prefix}xref:{customer_id}")
        return {_text(k): _text(v) for k, v in raw.items()}

    async def customer_for(self, system: str, system_id: str) -> str | None:
        raw = await self._redis.get(f"{self.prefix}xref-of:{system}:{system_id}")
        return _text(raw) if raw is not None else None

    async def close(self) -> None:
        await self._redis.aclose()


async def open_operation_store(
    redis_url: str | None,
    data_dir: Path,
    *,
    redis_prefix: str = DEFAULT_PREFIX,
    database_url: str | None = None,
) -> SqliteOperationStore | RedisOperationStore | PostgresOperationStore:
    """PostgreSQL when configured (the durable record of several hosts), else Redis when
    configured (several processes share keys and events), else SQLite."""
    from gateway.stores.postgres_records import PostgresOperationStore

    store: SqliteOperationStore | RedisOperationStore | PostgresOperationStore
    if database_url:
        store = PostgresOperationStore(database_url)
    elif redis_url:
        store = RedisOperationStore(redis_url, prefix=redis_prefix)
    else:
        store = SqliteOperationStore(data_dir / "trellis.db")
    await store.open()
    return store
