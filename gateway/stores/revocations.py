"""Revoked access-token ids, shared by every gateway process.

With Redis, a revocation is refused by every process within ``oauth.revocation_staleness_s``
(1 s by default): a revocation sets the token's key and increments the **revocation version**
(``<prefix>revoked-version``) in one transaction; each process remembers the tokens it found
not revoked, and reads the version at most once per staleness interval, forgetting what it
remembered when the version moved. A request then costs no round trip, and a process makes one
``GET`` per interval plus one ``EXISTS`` per token new to it. The process that revokes refuses
the token from its next request on. With SQLite (the processes of one host), a negative
answer is remembered in-process until the file's **revocation version** changes: an 8-byte
counter in ``revocations.version``, memory-mapped by every process and bumped, under a file
lock, after each committed revocation. A check then costs one read of shared memory instead
of a SQLite query (~12 µs, docs/performance.md); a process sees a revocation made anywhere on
the host from its next check on. Entries live only as long as the token they revoke would
have, so the store stays as small as the set of live revoked tokens.
"""

from __future__ import annotations

import asyncio
import fcntl
import math
import mmap
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import redis.asyncio as aioredis

from gateway.stores.inline_read import InlineReader
from gateway.stores.private_files import private_file
from gateway.stores.redis_options import DEFAULT_PREFIX, REDIS_TIMEOUTS

_IS_REVOKED = "SELECT 1 FROM revoked_tokens WHERE jti = ?"


class RevocationStore(Protocol):
    """Where revoked token ids (``jti``) are kept until the token would have expired anyway."""

    async def revoke(self, jti: str, expires_at: float) -> None: ...

    async def is_revoked(self, jti: str) -> bool: ...

    def known_not_revoked(self, jti: str) -> bool:
        """True when this process already knows ``jti`` is not revoked (no I/O, no await);
        False means "ask ``is_revoked``", not "revoked"."""
        ...

    async def close(self) -> None: ...


class SqliteRevocationStore:
    """Revocations in one SQLite file (WAL), shared by the processes of one host.

    sqlite3 is blocking, so every call runs in a worker thread; one connection guarded by a
    lock is enough because each statement is a single indexed row operation.
    """

    def __init__(self, path: Path, *, cache_size: int = 10_000) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._reader = InlineReader(path)  # on the event loop's thread only
        self._version_path = path.with_suffix(".version")
        self._version_fd: int | None = None
        self._version: mmap.mmap | None = None
        self._seen_version = -1
        self._not_revoked: set[str] = set()  # checked at ``_seen_version``: not revoked
        self._cache_size = cache_size

    def _open_version(self) -> None:
        """Map the shared revocation counter (created as 0 by the first process)."""
        if self._version is not None:
            return
        fd = os.open(self._version_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_size < 8:
                    os.pwrite(fd, bytes(8), 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            self._version = mmap.mmap(fd, 8)
        except BaseException:
            os.close(fd)
            raise
        self._version_fd = fd

    def _bump_version(self) -> None:
        """After a committed revocation: every process's remembered answers become stale."""
        assert self._version is not None and self._version_fd is not None
        fcntl.flock(self._version_fd, fcntl.LOCK_EX)  # no lost increment between processes
        try:
            (value,) = struct.unpack_from("<Q", self._version, 0)
            struct.pack_into("<Q", self._version, 0, value + 1)
        finally:
            fcntl.flock(self._version_fd, fcntl.LOCK_UN)

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            private_file(self.path)  # before SQLite creates it (and its -wal, -shm)
            conn = sqlite3.connect(
                self.path, timeout=5.0, check_same_thread=False, isolation_level=None
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS revoked_tokens ("
                " jti TEXT PRIMARY KEY, expires_at REAL NOT NULL) WITHOUT ROWID"
            )
            self._conn = conn
        return self._conn

    def _revoke(self, jti: str, expires_at: float) -> None:
        with self._lock:
            conn = self._connect()
            self._open_version()
            try:
                conn.execute(  # autocommit: committed when it returns
                    "INSERT INTO revoked_tokens (jti, expires_at) VALUES (?, ?)"
                    " ON CONFLICT(jti) DO UPDATE SET"
                    " expires_at = max(expires_at, excluded.expires_at)",
                    (jti, expires_at),
                )
            finally:
                # after the commit (a reader that sees the new version sees the row), and even
                # if the insert failed after committing: a bump too many only empties caches
                self._bump_version()
            # Forgetting tokens that expired anyway keeps the table as small as its live set.
            conn.execute("DELETE FROM revoked_tokens WHERE expires_at < ?", (time.time() - 3600,))

    def _is_revoked(self, jti: str) -> bool:
        with self._lock:
            row = self._connect().execute(_IS_REVOKED, (jti,)).fetchone()
        return row is not None

    def _close(self) -> None:
        with self._lock:  # no revocation is bumping the counter while it is unmapped
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            version, self._version = self._version, None
            if version is not None:
                version.close()
            if self._version_fd is not None:
                os.close(self._version_fd)
                self._version_fd = None

    async def open(self) -> None:
        """Create the file and table now, so a bad path fails at startup, not on a request."""
        await asyncio.to_thread(self._connect_locked)

    def _connect_locked(self) -> None:
        with self._lock:
            self._connect()
            self._open_version()

    async def revoke(self, jti: str, expires_at: float) -> None:
        await asyncio.to_thread(self._revoke, jti, expires_at)

    def known_not_revoked(self, jti: str) -> bool:
        """Checked since the last revocation on this host, and not revoked then."""
        version = self._version
        if version is None:
            return False
        (current,) = struct.unpack_from("<Q", version, 0)
        return current == self._seen_version and jti in self._not_revoked

    async def is_revoked(self, jti: str) -> bool:
        # On every authenticated request. A token checked since the last revocation on this
        # host is answered from memory; otherwise one point read on the loop (inline_read.py),
        # in a worker thread only when the file is busy.
        version = self._version
        if version is not None:
            (current,) = struct.unpack_from("<Q", version, 0)
            if current != self._seen_version:
                self._not_revoked.clear()
                self._seen_version = current
            elif jti in self._not_revoked:
                return False
        else:
            current = -1
        try:
            revoked = bool(self._reader.fetchall(_IS_REVOKED, (jti,)))
        except sqlite3.OperationalError:
            revoked = await asyncio.to_thread(self._is_revoked, jti)
        if not revoked and version is not None and current == self._seen_version:
            if len(self._not_revoked) >= self._cache_size:
                self._not_revoked.clear()
            self._not_revoked.add(jti)
        return revoked

    async def close(self) -> None:
        self._reader.close()
        await asyncio.to_thread(self._close)
        self._not_revoked.clear()
        self._seen_version = -1


class RedisRevocationStore:
    """Revocations as Redis keys (``<prefix>revoked:<jti>``) that expire with the token, and
    the revocation version (``<prefix>revoked-version``) read at most every ``staleness_s``.

    ``staleness_s`` 0: one ``EXISTS`` per check, nothing remembered. ``clock`` (monotonic
    seconds) measures the staleness.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        staleness_s: float = 1.0,
        cache_size: int = 10_000,
        max_connections: int = 16,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.key_prefix = f"{prefix}revoked:"
        self.version_key = f"{prefix}revoked-version"
        self.staleness_s = staleness_s
        self._clock = clock
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, **REDIS_TIMEOUTS
        )
        self._redis: aioredis.Redis = aioredis.Redis(connection_pool=pool)
        self._cache_size = cache_size
        self._not_revoked: set[str] = set()  # checked since the version was ``_seen_version``
        self._seen_version: bytes | str | None = None
        self._checked_at = -math.inf  # monotonic time the version read was sent
        self._refresh: asyncio.Future[None] | None = None
        self.version_reads = 0
        """Round trips spent on the version (for tests and metrics)."""

    async def open(self) -> None:
        """Fail at startup, not on the first request, when Redis is unreachable."""
        await self._redis.ping()

    async def revoke(self, jti: str, expires_at: float) -> None:
        # Keep the key a minute past expiry so clock skew between processes never reopens it.
        expire_at = max(int(expires_at) + 60, int(time.time()) + 1)
        pipe = self._redis.pipeline(transaction=True)  # no version without its key
        pipe.set(self.key_prefix + jti, b"1", exat=expire_at)
        pipe.incr(self.version_key)
        await pipe.execute()
        self._not_revoked.discard(jti)  # this process refuses it from its next request

    def known_not_revoked(self, jti: str) -> bool:
        """Found not revoked, and the version read less than ``staleness_s`` ago."""
        return jti in self._not_revoked and self._clock() - self._checked_at < self.staleness_s

    async def is_revoked(self, jti: str) -> bool:
        if self.staleness_s <= 0:
            return bool(await self._redis.exists(self.key_prefix + jti))
        if self._clock() - self._checked_at >= self.staleness_s:
            await self._read_version()
        if jti in self._not_revoked:
            return False
        version = self._seen_version
        revoked = bool(await self._redis.exists(self.key_prefix + jti))
        # remembered under the version read before the EXISTS: a revocation in between moves
        # the version, and the next read forgets this answer
        if not revoked and version == self._seen_version:
            if len(self._not_revoked) >= self._cache_size:
                self._not_revoked.clear()
            self._not_revoked.add(jti)
        return revoked

    async def _read_version(self) -> None:
        """One read of the version for every request that needs it at the same time."""
        refresh = self._refresh
        if refresh is None or refresh.done():
            refresh = self._refresh = asyncio.ensure_future(self._fetch_version())
        # shielded: a caller that goes away does not cancel the read the others wait for
        await asyncio.shield(refresh)

    async def _fetch_version(self) -> None:
        sent = self._clock()
        version = await self._redis.get(self.version_key)
        self.version_reads += 1
        if version != self._seen_version:
            self._not_revoked.clear()
            self._seen_version = version
        self._checked_at = max(self._checked_at, sent)

    async def close(self) -> None:
        if self._refresh is not None and not self._refresh.done():
            self._refresh.cancel()
        await self._redis.aclose()
        await self._redis.connection_pool.disconnect()


async def open_revocation_store(
    redis_url: str | None,
    data_dir: Path,
    *,
    redis_prefix: str = DEFAULT_PREFIX,
    staleness_s: float = 1.0,
) -> SqliteRevocationStore | RedisRevocationStore:
    """Redis when configured (several processes or hosts), else ``data_dir/revocations.db``."""
    store: SqliteRevocationStore | RedisRevocationStore
    if redis_url:
        store = RedisRevocationStore(redis_url, prefix=redis_prefix, staleness_s=staleness_s)
    else:
        store = SqliteRevocationStore(data_dir / "revocations.db")
    await store.open()
    return store
