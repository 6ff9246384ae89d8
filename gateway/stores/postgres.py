"""PostgreSQL for the durable records of several hosts: the pool, its timeouts and the schema.

``TRELLIS_DATABASE_URL`` (``gateway.database_url``, ``postgresql://...``) puts every durable
record (idempotency keys, cross-references, the outbox and event log, revocations, dead
letters, the saga log of multi-step operations) in one PostgreSQL database. Each store opens
its own small pool (asyncpg): bounded in connections, every connect, acquire and statement
under a timeout, so a stalled or absent database fails a request within seconds instead of
hanging it.

The schema is versioned in ``trellis_schema``; ``open_pool`` applies the missing migrations under
a transaction-scoped advisory lock, so several gateway processes starting together on one
database migrate it once. Tables live in the connection's ``search_path`` (the first schema of
it), so deployments or test runs that share a database keep apart by schema, e.g.
``postgresql://host/db?search_path=trellis``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import asyncpg

CONNECT_TIMEOUT_S = 2.0
"""Opening a connection (TCP, TLS, authentication)."""
COMMAND_TIMEOUT_S = 5.0
"""Any one statement: a held row lock or a stalled server fails the call, not the loop."""
ACQUIRE_TIMEOUT_S = 3.0
"""Waiting for a free pooled connection."""
POOL_MAX = 8
"""Connections per store and process: (stores x processes x POOL_MAX) must stay below the
server's ``max_connections``."""

POSTGRES_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,  # the connection failed or is gone
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up, cancelled
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.InterfaceError,  # the connection was closed under us
    OSError,  # connection refused or reset
    TimeoutError,  # connect, acquire or statement timeout
)
"""What asyncpg raises when the database cannot be reached or cannot serve: ``connection``
turns them into ``DatabaseUnavailable``. Any other error (a constraint, bad SQL) is a bug and
propagates as it is."""


class DatabaseUnavailable(ConnectionError):
    """The PostgreSQL store cannot be reached or cannot serve now: a store outage, answered
    with 503 and ``Retry-After`` (``gateway/errors.py``), never a 500."""


class SchemaMissing(RuntimeError):
    """The URL's ``search_path`` names no existing schema: a configuration error."""


def _where(url: str) -> str:
    """The URL without credentials or options, for messages and logs."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            # process APIs: idempotency keys, cross-references, the outbox (process_apis/ports.py)
            "CREATE TABLE idempotency (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL,"
            " state TEXT NOT NULL, status INTEGER, body TEXT, ttl_s DOUBLE PRECISION NOT NULL,"
            " expires_at DOUBLE PRECISION NOT NULL)",
            "CREATE INDEX idempotency_expiry ON idempotency (expires_at)",
            "CREATE TABLE xrefs (customer_id TEXT NOT NULL, system TEXT NOT NULL,"
            " system_id TEXT NOT NULL, PRIMARY KEY (customer_id, system))",
            "CREATE INDEX xrefs_by_system ON xrefs (system, system_id)",
            # ``relayed`` instead of a cursor: sequence values are taken before commit, so rows
            # commit out of ``seq`` order and a cursor would skip a late one.
            "CREATE TABLE outbox (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " id TEXT UNIQUE NOT NULL, type TEXT NOT NULL, subject TEXT, time TEXT NOT NULL,"
            " event TEXT NOT NULL, relayed BOOLEAN NOT NULL DEFAULT FALSE)",
            "CREATE INDEX outbox_unrelayed ON outbox (seq) WHERE NOT relayed",
            # the event bus (gateway/events/postgres_store.py)
            "CREATE TABLE event_deliveries (event_id TEXT NOT NULL, subscriber TEXT NOT NULL,"
            " seq BIGINT NOT NULL, state TEXT NOT NULL, round INTEGER NOT NULL DEFAULT 1,"
            " attempts INTEGER NOT NULL DEFAULT 0, next_at DOUBLE PRECISION NOT NULL,"
            " lease_owner TEXT, lease_until DOUBLE PRECISION, last_error TEXT,"
            " dead_letter_id TEXT, created_at DOUBLE PRECISION NOT NULL,"
            " updated_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (event_id, subscriber))",
            "CREATE INDEX event_deliveries_due ON event_deliveries (next_at)"
            " WHERE state = 'pending'",
            "CREATE TABLE event_attempts (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " event_id TEXT NOT NULL, subscriber TEXT NOT NULL, round INTEGER NOT NULL,"
            " n INTEGER NOT NULL, started_at DOUBLE PRECISION NOT NULL,"
            " finished_at DOUBLE PRECISION, ok BOOLEAN, error TEXT, retry_after DOUBLE PRECISION)",
            "CREATE INDEX event_attempts_of ON event_attempts (event_id, subscriber, round)",
            "CREATE TABLE event_processed (subscriber TEXT NOT NULL, event_id TEXT NOT NULL,"
            " at DOUBLE PRECISION NOT NULL, PRIMARY KEY (subscriber, event_id))",
            "CREATE TABLE event_dead_letters (id TEXT PRIMARY KEY, event_id TEXT NOT NULL,"
            " subscriber TEXT NOT NULL, type TEXT NOT NULL, subject TEXT, trace_id TEXT,"
            " attempts INTEGER NOT NULL, errors TEXT NOT NULL, event TEXT NOT NULL,"
            " created_at DOUBLE PRECISION NOT NULL, status TEXT NOT NULL, reason TEXT,"
            " resolved_at DOUBLE PRECISION)",
            "CREATE INDEX event_dead_letters_at ON event_dead_letters (created_at)",
            "CREATE TABLE inbound_webhook_ids (source TEXT NOT NULL, event_id TEXT NOT NULL,"
            " received_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (source, event_id))",
            # OAuth: revoked token ids, until the token would have expired anyway
            "CREATE TABLE revoked_tokens (jti TEXT PRIMARY KEY,"
            " expires_at DOUBLE PRECISION NOT NULL)",
            "CREATE INDEX revoked_tokens_expiry ON revoked_tokens (expires_at)",
        ),
    ),
    (
        2,
        (
            # the saga log of durable operations (gateway/stores/saga_postgres.py); times are
            # seconds on the database's clock
            "CREATE TABLE operations (id TEXT PRIMARY KEY, kind TEXT NOT NULL,"
            " key TEXT NOT NULL UNIQUE, fingerprint TEXT NOT NULL, state TEXT NOT NULL,"
            " reference TEXT NOT NULL, owner TEXT, lease_until DOUBLE PRECISION NOT NULL,"
            " created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL,"
            " status INTEGER, body TEXT, detail TEXT, attempts INTEGER NOT NULL DEFAULT 0)",
            "CREATE INDEX operations_due ON operations (lease_until) WHERE state = 'running'",
            "CREATE INDEX operations_finished ON operations (updated_at)"
            " WHERE state IN ('done', 'failed')",
            "CREATE INDEX operations_by_state ON operations (state, created_at)",
            "CREATE INDEX operations_recent ON operations (created_at)",
            # ``seq`` orders an operation's steps by their first record
            "CREATE TABLE operation_steps (op_id TEXT NOT NULL, name TEXT NOT NULL,"
            " seq BIGINT GENERATED ALWAYS AS IDENTITY, state TEXT NOT NULL, intent TEXT NOT NULL,"
            " result TEXT, error TEXT, attempts INTEGER NOT NULL DEFAULT 0,"
            " PRIMARY KEY (op_id, name))",
        ),
    ),
)
"""(version, statements), applied in order, each version once, in one transaction."""

_LOCK = "SELECT pg_advisory_xact_lock(hashtext('trellis.schema:' || current_schema()))"


async def migrate(conn: asyncpg.Connection) -> int:
    """Bring the schema up to the newest version; returns the version it is at.

    One transaction under an advisory lock keyed by the schema: a second process starting at
    the same time waits, then finds the work done.
    """
    if await conn.fetchval("SELECT current_schema()") is None:
        path = await conn.fetchval("SHOW search_path")
        raise SchemaMissing(
            f"no schema of the database URL's search_path ({path}) exists: create it, owned by "
            "the gateway's role, or name an existing one"
        )
    async with conn.transaction():
        await conn.execute(_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS trellis_schema (version INTEGER PRIMARY KEY,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM trellis_schema")
        for version, statements in MIGRATIONS:
            if version <= current:
                continue
            for statement in statements:
                await conn.execute(statement)
            await conn.execute("INSERT INTO trellis_schema (version) VALUES ($1)", version)
            current = version
        return int(current)


async def open_pool(url: str, *, max_size: int = POOL_MAX) -> asyncpg.Pool:
    """A bounded pool on ``url`` with the schema migrated; raises when the database is absent."""
    try:
        pool: asyncpg.Pool = await asyncpg.create_pool(
            url,
            min_size=1,
            max_size=max_size,
            timeout=CONNECT_TIMEOUT_S,
            command_timeout=COMMAND_TIMEOUT_S,
            max_inactive_connection_lifetime=60.0,
        )
    except POSTGRES_ERRORS as exc:
        raise DatabaseUnavailable(f"PostgreSQL at {_where(url)} is unavailable: {exc}") from exc
    try:
        async with connection(pool) as conn:
            await migrate(conn)
    except BaseException:
        pool.terminate()
        raise
    return pool


@asynccontextmanager
async def connection(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection, waited for at most ``ACQUIRE_TIMEOUT_S``; an outage on the way
    (acquiring, or in the block) is raised as ``DatabaseUnavailable``.

    A connection broken under a statement is discarded by the pool, and the next acquire opens
    a new one, so the first call after the database returns succeeds."""
    try:
        async with pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
            yield conn
    except POSTGRES_ERRORS as exc:
        raise DatabaseUnavailable(f"PostgreSQL is unavailable: {type(exc).__name__}") from exc


@asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection inside one transaction (READ COMMITTED), committed on exit."""
    async with connection(pool) as conn, conn.transaction():
        yield conn


async def close_pool(pool: asyncpg.Pool) -> None:
    """Close gracefully, but never wait more than a few seconds for busy connections."""
    try:
        await asyncio.wait_for(pool.close(), COMMAND_TIMEOUT_S)
    except TimeoutError:
        pool.terminate()
