"""Can the stores serve? What ``/readyz`` asks of them.

Every authenticated request reads the revocation store and every write the operation store, so
a gateway whose stores cannot answer cannot serve, however healthy its backends: with Redis
configured it must answer a PING; the embedded SQLite files must be readable in the data dir.
Each check has the probe's timeout and never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import redis.asyncio as aioredis

from gateway.stores.errors import STORE_ERRORS
from gateway.stores.redis_options import REDIS_TIMEOUTS

EMBEDDED_FILES = ("trellis.db", "revocations.db")


class StoreProbe:
    """Checks the stores the gateway needs; ``close`` with the app."""

    def __init__(self, redis_url: str | None, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._redis: aioredis.Redis | None = (
            aioredis.Redis.from_url(redis_url, **REDIS_TIMEOUTS) if redis_url else None
        )

    async def problems(self, timeout_s: float) -> list[str]:
        """Why the stores cannot serve, one line each (no addresses); empty when they can."""
        if self._redis is not None:
            try:
                await asyncio.wait_for(self._redis.ping(), timeout_s)
            except TimeoutError:
                return ["redis: no answer in time"]
            except STORE_ERRORS as exc:
                return [f"redis: unavailable ({type(exc).__name__})"]
            return []
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
