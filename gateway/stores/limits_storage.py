"""The ``limits.aio`` storage behind every rate limit: memory in one process, Redis when shared.

``limits[redis]`` pins redis<8, so the redis-py 8 client is used through limits'
``implementation="redispy"`` bridge with a ``BlockingConnectionPool`` (a burst waits for a
connection instead of opening hundreds). Counters are the keys ``<prefix>limits:...``; the
synced counters (``policies/synced_window.py``) use the same pool through ``redis``.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from limits.aio.storage import MemoryStorage, RedisStorage, Storage

from gateway.stores.redis_options import DEFAULT_PREFIX, REDIS_TIMEOUTS


@dataclass(slots=True)
class LimitsStorage:
    """A storage plus what must be closed with it; with Redis, a client on the same pool."""

    storage: Storage
    pool: aioredis.BlockingConnectionPool | None = None
    redis: aioredis.Redis | None = None
    prefix: str = DEFAULT_PREFIX

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.disconnect()


def open_limits_storage(
    redis_url: str | None, *, prefix: str = DEFAULT_PREFIX, max_connections: int = 32
) -> LimitsStorage:
    """Redis storage when ``redis_url`` is set, else process memory."""
    if not redis_url:
        return LimitsStorage(MemoryStorage(), prefix=prefix)
    pool = aioredis.BlockingConnectionPool.from_url(
        redis_url, max_connections=max_connections, **REDIS_TIMEOUTS
    )
    storage = RedisStorage(
        "async+" + redis_url,
        implementation="redispy",
        key_prefix=f"{prefix}limits",  # limits adds the ":" itself
        connection_pool=pool,  # type: ignore[arg-type]
    )
    return LimitsStorage(storage, pool, aioredis.Redis(connection_pool=pool), prefix)
