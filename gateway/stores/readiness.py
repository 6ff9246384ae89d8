"""Can the stores serve? What ``/readyz`` asks of them.

Every authenticated request reads the revocation store and every write the operation store and
the saga log, so a gateway whose stores cannot answer cannot serve, however healthy its
backends: with ``database_url`` PostgreSQL must accept a connection and answer a query; with
Redis configured it must answer a PING; the embedded SQLite files (those in use: with
``database_url`` none are) must be readable in the data dir. Each check has the probe's timeout
and never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

from gateway.stores.errors import STORE_ERRORS
from gateway.stores.postgres import POSTGRES_ERRORS
from gateway.stores.redis_options import REDIS_TIMEOUTS

EMBEDDED_FILES = ("trellis.db", "revocations.db", "sagas.db")


class StoreProbe:
    """Checks the stores the gateway needs; ``close`` with the app."""

    def __init__(
        self, redis_url: str | None, data_dir: Path, *, database_url: str | None = None
    ) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self._redis: aioredis.Redis | None = (
            aioredis.Redis.from_url(redis_url, **REDIS_TIMEOUTS) if redis_url else None
        )

    async def problems(self, timeout_s: float) -> list[str]:
        """Why the stores cannot serve, one line each (no addresses); empty when they can."""
        checks = []
        if self.database_url is not None:
            checks.append(self._postgres(self.database_url, timeout_s))
        if self._redis is not None:
            checks.append(self._redis_check(self._redis, timeout_s))
        if self.database_url is None:
            checks.append(self._embedded_check(timeout_s))
        found = await asyncio.gather(*checks)
        return [line for lines in found for line in lines]

    @staticmethod
    async def _postgres(url: str, timeout_s: float) -> list[str]:
        """A connection of its own (not a store's pool): can a request's store connect now?"""
        try:
            async with asyncio.timeout(timeout_s):
                conn = await asyncpg.connect(url, timeout=timeout_s)
                try:
                    await conn.fetchval("SELECT 1")
                finally:
                    await conn.close(timeout=timeout_s)
        except TimeoutError:
            return ["postgresql: no answer in time"]
        except (*POSTGRES_ERRORS, asyncpg.PostgresError) as exc:
            return [f"postgresql: unavailable ({type(exc).__name__})"]
        return []

    @staticmethod
    async def _redis_check(redis: aioredis.Redis, timeout_s: float) -> list[str]:
        try:
            await asyncio.wait_for(redis.ping(), timeout_s)
        except TimeoutError:
            return ["redis: no answer in time"]
        except STORE_ERRORS as exc:
            return [f"redis: unavailable ({type(exc).__name__})"]
        return []

    async def _embedded_check(self, timeout_s: float) -> list[str]:
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._embedded), timeout_s)
        except TimeoutError:
            return ["data dir: no answer in time"]

    def _embedded(self) -> list[str]:
        out: list[str] = []
        for name in EMBEDDED_FILES:
            path = self.data_dir / name
            if not path.exists():
                continue  # created on first use
            try:
                conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.5)
                try:
                    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                finally:
                    conn.close()
            except sqlite3.DatabaseError as exc:
                out.append(f"{name}: unreadable ({type(exc).__name__})")
        return out

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
