"""The saga log in PostgreSQL (``gateway.database_url``): the operations of every host sharing
the database, so any of them takes over an operation whose owner died.

Same contract as the SQLite log (``process_apis/ports.py:SagaLog``, ``saga_sqlite.py``). What
differs is only what several hosts need:

- Leases are measured on the database's clock (``clock_timestamp()``), never a host's: an
  expiry is decided by one clock, so a host whose clock runs ahead does not take over a live
  operation. ``retry_at`` (a moment on the caller's clock) becomes the same delay on the
  database's clock.
- ``claim_expired`` takes due operations with ``FOR UPDATE SKIP LOCKED`` in one statement:
  two sweepers claiming at once get disjoint sets, and neither waits for the other.
- Each call is one statement (``start`` of a key that exists: two; ``restart``: one
  transaction), and an operation is read with its steps in one statement, so a record is never
  half of one write and half of the next.

Rows are bounded like the SQLite log's: each ``start`` forgets up to ``PURGE_BATCH`` finished
operations older than ``retain_s`` (more than one per start, so the table holds what the
replay window holds); running and stuck ones are kept until they finish or an operator acts.
Tables: migration 2 in ``postgres.py``; pool and timeouts: ``postgres.py``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from gateway.stores.postgres import close_pool, connection, open_pool, transaction
from process_apis.ports import OperationRecord, OpState, StepRecord, StepState, StoredResponse

PURGE_BATCH = 200
"""Finished operations past ``retain_s`` forgotten per ``start``."""

_OP_COLUMNS = (
    "o.id, o.kind, o.key, o.fingerprint, o.state, o.reference, o.owner, o.lease_until,"
    " o.created_at, o.updated_at, o.status, o.body, o.detail, o.attempts,"
    " (SELECT coalesce(json_agg(json_build_array(s.name, s.state, s.intent, s.result, s.error,"
    " s.attempts) ORDER BY s.seq), '[]') FROM operation_steps s WHERE s.op_id = o.id)::text"
    " AS steps"
)
"""An operation with its steps in the order they were first recorded, read in one statement."""

_INSERT = (
    "WITH gone AS (DELETE FROM operations WHERE id IN (SELECT id FROM operations"
    " WHERE state IN ('done', 'failed')"
    " AND updated_at < extract(epoch FROM clock_timestamp()) - $7 AND key <> $2"
    " ORDER BY updated_at LIMIT $9 FOR UPDATE SKIP LOCKED) RETURNING id),"
    " gone_steps AS (DELETE FROM operation_steps WHERE op_id IN (SELECT id FROM gone)),"
    " clock AS (SELECT extract(epoch FROM clock_timestamp()) AS now)"
    " INSERT INTO operations AS o (id, kind, key, fingerprint, state, reference, owner,"
    " lease_until, created_at, updated_at, status, body, detail, attempts)"
    " SELECT $1, $3, $2, $4, 'running', $5, $6, now + $8, now, now, NULL, NULL, NULL, 0"
    " FROM clock ON CONFLICT (key) DO NOTHING"
)
_START = f"{_INSERT} RETURNING {_OP_COLUMNS}"
"""Create the operation for a key unless one exists (a concurrent start of the same key waits
for the row and then finds it), forgetting a batch of old finished ones on the way. Times are
seconds on the database's clock."""

_STEP = (
    "WITH touched AS (UPDATE operations"
    " SET updated_at = extract(epoch FROM clock_timestamp()) WHERE id = $1)"
    " INSERT INTO operation_steps (op_id, name, state, intent, result, error, attempts)"
    " VALUES ($1, $2, $3, coalesce($4::text, '{}'), $5, $6, $7)"
    " ON CONFLICT (op_id, name) DO UPDATE SET state = excluded.state,"
    " intent = CASE WHEN $4::text IS NULL THEN operation_steps.intent ELSE excluded.intent END,"
    " result = coalesce(excluded.result, operation_steps.result), error = excluded.error,"
    " attempts = operation_steps.attempts + $7"
)
"""Record a step: its intent never erased by an outcome, nor its result by a later state."""

_RENEW = (
    "UPDATE operations SET lease_until = extract(epoch FROM clock_timestamp()) + $3"
    " WHERE id = $1 AND owner = $2 AND state = 'running' RETURNING id"
)

_FINISH = (
    "UPDATE operations SET state = $2, owner = NULL, lease_until = CASE WHEN $3::float8 > 0"
    " THEN extract(epoch FROM clock_timestamp()) + ($3 - $4) ELSE $3 END,"
    " updated_at = extract(epoch FROM clock_timestamp()),"
    " status = $5, body = $6, detail = $7,"
    " attempts = CASE WHEN $2 = 'running' THEN attempts + 1 ELSE attempts END"
    " WHERE id = $1"
)
"""``retry_at`` ($3) is on the caller's clock ($4 is its now): the same delay on the
database's; 0 (or any past moment) is due at once."""

_LEASE_DUE = (
    "WITH due AS (SELECT id, lease_until AS was FROM operations"
    " WHERE state = 'running' AND lease_until <= extract(epoch FROM clock_timestamp())"
    " ORDER BY lease_until LIMIT $3 FOR UPDATE SKIP LOCKED)"
    " UPDATE operations AS o"
    " SET owner = $1, lease_until = extract(epoch FROM clock_timestamp()) + $2"
    " FROM due WHERE o.id = due.id"
)
_CLAIM = f"{_LEASE_DUE} RETURNING due.was, {_OP_COLUMNS}"
"""Lease the due operations (expired leases, failed undos past their backoff) to one owner,
skipping rows another sweeper is claiming right now."""

_RESTART = (
    "UPDATE operations SET state = 'running', owner = $2,"
    " lease_until = extract(epoch FROM clock_timestamp()) + $3,"
    " updated_at = extract(epoch FROM clock_timestamp()),"
    " status = NULL, body = NULL, detail = NULL, reference = coalesce($4, reference)"
    " WHERE id = $1 AND state NOT IN ('running', 'stuck') RETURNING id"
)

_SELECT = f"SELECT {_OP_COLUMNS} FROM operations o"  # noqa: S608 (constant columns)


def _json(value: dict[str, Any] | None) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _steps(text: str) -> tuple[StepRecord, ...]:
    return tuple(
        StepRecord(
            name=name,
            state=StepState(state),
            intent=orjson.loads(intent),
            result=None if result is None else orjson.loads(result),
            error=error,
            attempts=int(attempts),
        )
        for name, state, intent, result, error, attempts in orjson.loads(text)
    )


def _record(row: asyncpg.Record | None) -> OperationRecord | None:
    if row is None:
        return None
    status, body = row["status"], row["body"]
    return OperationRecord(
        id=row["id"],
        kind=row["kind"],
        key=row["key"],
        fingerprint=row["fingerprint"],
        state=OpState(row["state"]),
        reference=row["reference"],
        owner=row["owner"],
        lease_until=float(row["lease_until"]),
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
        response=None if status is None else StoredResponse(int(status), orjson.loads(body)),
        detail=row["detail"],
        attempts=int(row["attempts"]),
        next_attempt_at=float(row["lease_until"]),
        steps=_steps(row["steps"]),
    )


def _records(rows: Sequence[asyncpg.Record]) -> list[OperationRecord]:
    return [r for r in (_record(row) for row in rows) if r is not None]


class PostgresSagaLog:
    """Durable operations shared by every gateway process on one PostgreSQL database."""

    def __init__(self, url: str, *, retain_s: float = 86_400.0) -> None:
        self.url = url
        self.retain_s = retain_s
        self._pool: asyncpg.Pool | None = None

    def _ready(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the saga log is not open")
        return self._pool

    async def _one(self, where: str, value: str) -> OperationRecord | None:
        # ``where`` is one of this module's literals; the value is always a bound parameter
        async with connection(self._ready()) as conn:
            return _record(await conn.fetchrow(f"{_SELECT} WHERE {where}", value))

    # --- the SagaLog protocol -----------------------------------------------------------------

    async def open(self) -> None:
        """Connect and migrate now, so an unreachable database fails at startup."""
        if self._pool is None:
            self._pool = await open_pool(self.url)

    async def start(
        self, kind: str, key: str, fingerprint: str, reference: str, owner: str, lease_s: float
    ) -> tuple[OperationRecord, bool]:
        op_id = f"op_{uuid.uuid4().hex}"
        async with connection(self._ready()) as conn:
            for _ in range(3):  # the existing one may be forgotten between the two reads
                row = await conn.fetchrow(
                    _START,
                    op_id,
                    key,
                    kind,
                    fingerprint,
                    reference,
                    owner,
                    self.retain_s,
                    lease_s,
                    PURGE_BATCH,
                )
                created = _record(row)
                if created is not None:
                    return created, True
                existing = _record(await conn.fetchrow(f"{_SELECT} WHERE o.key = $1", key))
                if existing is not None:
                    return existing, False
        raise RuntimeError(f"the operation for key {key!r} could be neither created nor read")

    async def restart(
        self, op_id: str, owner: str, lease_s: float, reference: str | None = None
    ) -> OperationRecord | None:
        async with transaction(self._ready()) as conn:
            changed = await conn.fetchval(_RESTART, op_id, owner, lease_s, reference)
            if changed is None:
                return None
            if reference is not None:  # a new run: the old run's steps are history, not progress
                await conn.execute("DELETE FROM operation_steps WHERE op_id = $1", op_id)
            return _record(await conn.fetchrow(f"{_SELECT} WHERE o.id = $1", op_id))

    async def get(self, op_id: str) -> OperationRecord | None:
        return await self._one("o.id = $1", op_id)

    async def by_key(self, key: str) -> OperationRecord | None:
        return await self._one("o.key = $1", key)

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
        bump = 1 if state is StepState.INTENT else 0
        async with connection(self._ready()) as conn:
            await conn.execute(
                _STEP, op_id, name, state.value, _json(intent), _json(result), error, bump
            )

    async def renew(self, op_id: str, owner: str, lease_s: float) -> bool:
        async with connection(self._ready()) as conn:
            return await conn.fetchval(_RENEW, op_id, owner, lease_s) is not None

    async def finish(
        self,
        op_id: str,
        state: OpState,
        response: StoredResponse | None,
        detail: str | None = None,
        *,
        retry_at: float = 0.0,
    ) -> None:
        status, body = (
            (None, None)
            if response is None
            else (response.status, orjson.dumps(response.body).decode())
        )
        async with connection(self._ready()) as conn:
            await conn.execute(
                _FINISH,
                op_id,
                state.value,
                float(retry_at),
                time.time(),
                status,
                body,
                detail,
            )

    async def claim_expired(self, owner: str, lease_s: float, limit: int) -> list[OperationRecord]:
        async with connection(self._ready()) as conn:
            rows = await conn.fetch(_CLAIM, owner, lease_s, limit)
        return _records(sorted(rows, key=lambda r: float(r["was"])))

    async def listing(self, state: OpState | None, limit: int) -> list[OperationRecord]:
        async with connection(self._ready()) as conn:
            if state is None:
                rows = await conn.fetch(f"{_SELECT} ORDER BY o.created_at DESC LIMIT $1", limit)
            else:
                rows = await conn.fetch(
                    f"{_SELECT} WHERE o.state = $1 ORDER BY o.created_at DESC LIMIT $2",
                    state.value,
                    limit,
                )
        return _records(rows)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await close_pool(pool)
