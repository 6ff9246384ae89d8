"""The saga log in its own SQLite file (``<data_dir>/sagas.db``, WAL): the embedded default.

A file of its own, not ``trellis.db``: when the operation store is locked or failing, the log
still records what the saga made and undid, so nothing is handed back to a retry by mistake.
sqlite3 blocks, so every call runs in a worker thread on one connection behind a lock; each
call is one short transaction. Rows are bounded: finished operations are forgotten after
``retain_s``; running and stuck ones are kept until they finish or an operator acts.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from gateway.stores.private_files import private_file
from process_apis.ports import OperationRecord, OpState, StepRecord, StepState, StoredResponse

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS operations ("
    " id TEXT PRIMARY KEY, kind TEXT NOT NULL, key TEXT NOT NULL UNIQUE,"
    " fingerprint TEXT NOT NULL, state TEXT NOT NULL, reference TEXT NOT NULL,"
    " owner TEXT, lease_until REAL NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,"
    " status INTEGER, body TEXT, detail TEXT, attempts INTEGER NOT NULL DEFAULT 0)"
    " WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS operations_by_state ON operations (state, lease_until)",
    "CREATE TABLE IF NOT EXISTS operation_steps ("
    " op_id TEXT NOT NULL, seq INTEGER NOT NULL, name TEXT NOT NULL, state TEXT NOT NULL,"
    " intent TEXT NOT NULL, result TEXT, error TEXT, attempts INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY (op_id, name)) WITHOUT ROWID",
)

_OP_COLUMNS = (
    "id, kind, key, fingerprint, state, reference, owner, lease_until, created_at, updated_at,"
    " status, body, detail, attempts"
)


def _json(value: dict[str, Any] | None) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


class SqliteSagaLog:
    def __init__(self, path: Path, *, retain_s: float = 86_400.0) -> None:
        self.path = path
        self.retain_s = retain_s
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    # --- plumbing -----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            private_file(self.path)
            conn = sqlite3.connect(
                self.path, timeout=5.0, check_same_thread=False, isolation_level=None
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                conn.execute(statement)
            self._conn = conn
        return self._conn

    def _tx(self, fn: Any, *args: Any) -> Any:
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

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(self._tx, fn, *args)

    @staticmethod
    def _steps(conn: sqlite3.Connection, op_id: str) -> tuple[StepRecord, ...]:
        rows = conn.execute(
            "SELECT name, state, intent, result, error, attempts FROM operation_steps"
            " WHERE op_id = ? ORDER BY seq",
            (op_id,),
        ).fetchall()
        return tuple(
            StepRecord(
                name=r[0],
                state=StepState(r[1]),
                intent=orjson.loads(r[2]),
                result=None if r[3] is None else orjson.loads(r[3]),
                error=r[4],
                attempts=int(r[5]),
            )
            for r in rows
        )

    @classmethod
    def _record(
        cls, conn: sqlite3.Connection, row: tuple[Any, ...] | None
    ) -> OperationRecord | None:
        if row is None:
            return None
        status, body = row[10], row[11]
        return OperationRecord(
            id=row[0],
            kind=row[1],
            key=row[2],
            fingerprint=row[3],
            state=OpState(row[4]),
            reference=row[5],
            owner=row[6],
            lease_until=float(row[7]),
            created_at=float(row[8]),
            updated_at=float(row[9]),
            response=None if status is None else StoredResponse(int(status), orjson.loads(body)),
            detail=row[12],
            attempts=int(row[13]),
            next_attempt_at=float(row[7]),
            steps=cls._steps(conn, row[0]),
        )

    @classmethod
    def _where(cls, conn: sqlite3.Connection, clause: str, args: tuple[Any, ...]) -> Any:
        # ``clause`` is one of this module's literals; values are always bound parameters
        sql = f"SELECT {_OP_COLUMNS} FROM operations WHERE {clause}"  # noqa: S608
        row = conn.execute(sql, args).fetchone()
        return cls._record(conn, row)

    # --- transactions -------------------------------------------------------------------------

    def _start(
        self,
        conn: sqlite3.Connection,
        kind: str,
        key: str,
        fingerprint: str,
        reference: str,
        owner: str,
        lease_s: float,
    ) -> tuple[OperationRecord, bool]:
        existing = self._where(conn, "key = ?", (key,))
        if existing is not None:
            return existing, False
        now = time.time()
        conn.execute(
            "DELETE FROM operation_steps WHERE op_id IN (SELECT id FROM operations"
            " WHERE state IN ('done', 'failed') AND updated_at < ?)",
            (now - self.retain_s,),
        )
        conn.execute(
            "DELETE FROM operations WHERE state IN ('done', 'failed') AND updated_at < ?",
            (now - self.retain_s,),
        )
        op_id = f"op_{uuid.uuid4().hex}"
        conn.execute(
            f"INSERT INTO operations ({_OP_COLUMNS}) VALUES"  # noqa: S608 (constant columns)
            " (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, NULL, NULL, NULL, 0)",
            (op_id, kind, key, fingerprint, reference, owner, now + lease_s, now, now),
        )
        created = self._where(conn, "id = ?", (op_id,))
        assert created is not None
        return created, True

    def _restart(
        self,
        conn: sqlite3.Connection,
        op_id: str,
        owner: str,
        lease_s: float,
        reference: str | None,
    ) -> OperationRecord | None:
        now = time.time()
        changed = conn.execute(
            "UPDATE operations SET state = 'running', owner = ?, lease_until = ?,"
            " updated_at = ?, status = NULL, body = NULL, detail = NULL,"
            " reference = COALESCE(?, reference)"
            " WHERE id = ? AND state NOT IN ('running', 'stuck')",
            (owner, now + lease_s, now, reference, op_id),
        ).rowcount
        if not changed:  # running (perhaps restarted by another request) or stuck: untouched
            return None
        if reference is not None:  # a new run: the old run's steps are history, not progress
            conn.execute("DELETE FROM operation_steps WHERE op_id = ?", (op_id,))
        restarted: OperationRecord | None = self._where(conn, "id = ?", (op_id,))
        return restarted

    @staticmethod
    def _step(
        conn: sqlite3.Connection,
        op_id: str,
        name: str,
        state: StepState,
        intent: dict[str, Any] | None,
        result: dict[str, Any] | None,
        error: str | None,
    ) -> None:
        bump = 1 if state is StepState.INTENT else 0
        conn.execute(
            "INSERT INTO operation_steps (op_id, seq, name, state, intent, result, error, attempts)"
            " VALUES (?, (SELECT COUNT(*) FROM operation_steps WHERE op_id = ?), ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(op_id, name) DO UPDATE SET state = excluded.state,"
            " intent = CASE WHEN ? IS NULL THEN intent ELSE excluded.intent END,"
            " result = COALESCE(excluded.result, result), error = excluded.error,"
            " attempts = attempts + ?",
            (
                op_id,
                op_id,
                name,
                state.value,
                _json(intent) or "{}",
                _json(result),
                error,
                bump,
                _json(intent),
                bump,
            ),
        )
        conn.execute("UPDATE operations SET updated_at = ? WHERE id = ?", (time.time(), op_id))

    @staticmethod
    def _renew(conn: sqlite3.Connection, op_id: str, owner: str, lease_s: float) -> bool:
        return bool(
            conn.execute(
                "UPDATE operations SET lease_until = ? WHERE id = ? AND owner = ?"
                " AND state = 'running'",
                (time.time() + lease_s, op_id, owner),
            ).rowcount
        )

    @staticmethod
    def _finish(
        conn: sqlite3.Connection,
        op_id: str,
        state: OpState,
        response: StoredResponse | None,
        detail: str | None,
        retry_at: float,
    ) -> None:
        status, body = (
            (None, None)
            if response is None
            else (response.status, orjson.dumps(response.body).decode())
        )
        conn.execute(
            "UPDATE operations SET state = ?, owner = NULL, lease_until = ?, updated_at = ?,"
            " status = ?, body = ?, detail = ?,"
            " attempts = CASE WHEN ? = 'running' THEN attempts + 1 ELSE attempts END"
            " WHERE id = ?",
            (state.value, retry_at, time.time(), status, body, detail, state.value, op_id),
        )

    def _claim(
        self, conn: sqlite3.Connection, owner: str, lease_s: float, limit: int
    ) -> list[OperationRecord]:
        now = time.time()
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM operations WHERE state = 'running' AND lease_until <= ?"
                " ORDER BY lease_until LIMIT ?",
                (now, limit),
            ).fetchall()
        ]
        claimed = []
        for op_id in ids:
            conn.execute(
                "UPDATE operations SET owner = ?, lease_until = ? WHERE id = ?",
                (owner, now + lease_s, op_id),
            )
            record = self._where(conn, "id = ?", (op_id,))
            if record is not None:
                claimed.append(record)
        return claimed

    def _listing(
        self, conn: sqlite3.Connection, state: OpState | None, limit: int
    ) -> list[OperationRecord]:
        sql = f"SELECT {_OP_COLUMNS} FROM operations"  # noqa: S608 (constant columns)
        args: tuple[Any, ...] = (limit,)
        if state is not None:
            sql += " WHERE state = ?"
            args = (state.value, limit)
        rows = conn.execute(sql + " ORDER BY created_at DESC LIMIT ?", args).fetchall()
        return [r for r in (self._record(conn, row) for row in rows) if r is not None]

    # --- the SagaLog protocol -----------------------------------------------------------------

    async def open(self) -> None:
        """Create the file and tables now, so a bad data_dir fails at startup."""
        await self._run(lambda conn: None)

    async def start(
        self, kind: str, key: str, fingerprint: str, reference: str, owner: str, lease_s: float
    ) -> tuple[OperationRecord, bool]:
        result: tuple[OperationRecord, bool] = await self._run(
            self._start, kind, key, fingerprint, reference, owner, lease_s
        )
        return result

    async def restart(
        self, op_id: str, owner: str, lease_s: float, reference: str | None = None
    ) -> OperationRecord | None:
        result: OperationRecord | None = await self._run(
            self._restart, op_id, owner, lease_s, reference
        )
        return result

    async def get(self, op_id: str) -> OperationRecord | None:
        result: OperationRecord | None = await self._run(self._where, "id = ?", (op_id,))
        return result

    async def by_key(self, key: str) -> OperationRecord | None:
        result: OperationRecord | None = await self._run(self._where, "key = ?", (key,))
        return result

    async def step(
        self,
        op_id: str,
        name: str,
        state: StepState,
        *,
        intent: dict[str, Any] | None = None,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        await self._run(self._step, op_id, name, state, intent, result, error)

    async def renew(self, op_id: str, owner: str, lease_s: float) -> bool:
        result: bool = await self._run(self._renew, op_id, owner, lease_s)
        return result

    async def finish(
        self,
        op_id: str,
        state: OpState,
        response: StoredResponse | None,
        detail: str | None = None,
        *,
        retry_at: float = 0.0,
    ) -> None:
        await self._run(self._finish, op_id, state, response, detail, retry_at)

    async def claim_expired(self, owner: str, lease_s: float, limit: int) -> list[OperationRecord]:
        result: list[OperationRecord] = await self._run(self._claim, owner, lease_s, limit)
        return result

    async def listing(self, state: OpState | None, limit: int) -> list[OperationRecord]:
        result: list[OperationRecord] = await self._run(self._listing, state, limit)
        return result

    def _close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def close(self) -> None:
        await asyncio.to_thread(self._close)
