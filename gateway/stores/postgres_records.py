"""The process APIs' durable record and the OAuth revocations, in PostgreSQL.

Same contracts as the SQLite and Redis stores (``process_apis/ports.py``,
``gateway/stores/revocations.py``): ``commit`` writes the idempotency result, the
cross-references and the outbox rows in one transaction, so "did the work", "remember the
answer" and "announce it" agree after a crash of any host. Tables and pool: ``postgres.py``.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import orjson

from gateway.stores.operations import IN_PROGRESS_LEASE_S, event_json
from gateway.stores.postgres import close_pool, connection, open_pool, transaction
from process_apis.ports import Begin, BeginState, Outcome, StoredResponse

_CLAIM = (
    "INSERT INTO idempotency (key, fingerprint, state, status, body, ttl_s, expires_at)"
    " VALUES ($1, $2, 'in_progress', NULL, NULL, $3, $4) ON CONFLICT (key) DO UPDATE SET"
    " fingerprint = excluded.fingerprint, state = 'in_progress', status = NULL, body = NULL,"
    " ttl_s = excluded.ttl_s, expires_at = excluded.expires_at"
    " WHERE idempotency.expires_at <= $5 RETURNING key"
)
"""Claim a new or expired key in one statement: a concurrent claim of the same key waits on
the row lock and then finds it live, so exactly one of them gets it."""


class PostgresOperationStore:
    """Idempotency keys, cross-references and the outbox, shared by every host."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: asyncpg.Pool | None = None

    def _ready(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the operation store is not open")
        return self._pool

    async def open(self) -> None:
        """Connect and migrate now, so an unreachable database fails at startup."""
        self._pool = await open_pool(self.url)

    async def begin(self, key: str, fingerprint: str, ttl_s: float = 86_400) -> Begin:
        pool = self._ready()
        async with connection(pool) as conn:
            for _ in range(3):  # the live row may expire between the claim and the read
                now = time.time()
                claimed = await conn.fetchval(
                    _CLAIM, key, fingerprint, ttl_s, now + min(ttl_s, IN_PROGRESS_LEASE_S), now
                )
                if claimed is not None:
                    return Begin(BeginState.NEW)
                row = await conn.fetchrow(
                    "SELECT fingerprint, state, status, body FROM idempotency"
                    " WHERE key = $1 AND expires_at > $2",
                    key,
                    now,
                )
                if row is None:
                    continue
                if row["fingerprint"] != fingerprint:
                    return Begin(BeginState.MISMATCH)
                if row["state"] == "done":
                    body = orjson.loads(row["body"]) if row["body"] is not None else {}
                    return Begin(BeginState.DONE, StoredResponse(int(row["status"]), body))
                return Begin(BeginState.IN_PROGRESS)
        return Begin(BeginState.IN_PROGRESS)

    async def release(self, key: str) -> None:
        async with connection(self._ready()) as conn:
            await conn.execute(
                "DELETE FROM idempotency WHERE key = $1 AND state = 'in_progress'", key
            )

    async def commit(self, outcome: Outcome) -> None:
        now = time.time()
        async with transaction(self._ready()) as conn:
            if outcome.idempotency_key is not None:
                response = outcome.response
                await conn.execute(
                    "UPDATE idempotency SET state = 'done', status = $1, body = $2,"
                    " expires_at = $3 + ttl_s WHERE key = $4",
                    response.status if response else None,
                    orjson.dumps(response.body).decode() if response else None,
                    now,
                    outcome.idempotency_key,
                )
            rows = [
                (customer_id, system, system_id)
                for customer_id, ids in outcome.xrefs.items()
                for system, system_id in ids.items()
            ]
            if rows:
                await conn.executemany(
                    "INSERT INTO xrefs (customer_id, system, system_id) VALUES ($1, $2, $3)"
                    " ON CONFLICT (customer_id, system) DO UPDATE SET"
                    " system_id = excluded.system_id",
                    rows,
                )
            if outcome.events:
                await conn.executemany(
                    "INSERT INTO outbox (id, type, subject, time, event)"
                    " VALUES ($1, $2, $3, $4, $5)",
                    [
                        (e.id, e.type, e.subject, e.time.isoformat(), event_json(e))
                        for e in outcome.events
                    ],
                )
            # Expired keys are forgotten as operations finish, so the table holds live keys.
            await conn.execute("DELETE FROM idempotency WHERE expires_at < $1", now - 60)

    async def xrefs(self, customer_id: str) -> dict[str, str]:
        async with connection(self._ready()) as conn:
            rows = await conn.fetch(
                "SELECT system, system_id FROM xrefs WHERE customer_id = $1", customer_id
            )
        return {str(r["system"]): str(r["system_id"]) for r in rows}

    async def customer_for(self, system: str, system_id: str) -> str | None:
        async with connection(self._ready()) as conn:
            found: Any = await conn.fetchval(
                "SELECT customer_id FROM xrefs WHERE system = $1 AND system_id = $2 LIMIT 1",
                system,
                system_id,
            )
        return None if found is None else str(found)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await close_pool(pool)


class PostgresRevocationStore:
    """Revoked token ids in PostgreSQL: one indexed read per check, so a revocation made on
    any host is refused from the next request everywhere (no staleness)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: asyncpg.Pool | None = None

    def _ready(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the revocation store is not open")
        return self._pool

    async def open(self) -> None:
        self._pool = await open_pool(self.url)

    async def revoke(self, jti: str, expires_at: float) -> None:
        async with transaction(self._ready()) as conn:
            await conn.execute(
                "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2)"
                " ON CONFLICT (jti) DO UPDATE SET"
                " expires_at = greatest(revoked_tokens.expires_at, excluded.expires_at)",
                jti,
                expires_at,
            )
            # Forgetting tokens that expired anyway keeps the table as small as its live set.
            await conn.execute(
                "DELETE FROM revoked_tokens WHERE expires_at < $1", time.time() - 3600
            )

    async def is_revoked(self, jti: str) -> bool:
        async with connection(self._ready()) as conn:
            found = await conn.fetchval("SELECT 1 FROM revoked_tokens WHERE jti = $1", jti)
        return found is not None

    def known_not_revoked(self, jti: str) -> bool:
        return False  # another host may revoke at any time: always ask

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await close_pool(pool)
