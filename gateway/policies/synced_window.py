"""Shared rate-limit counters at local cost: decided in process, synced to Redis in batches.

Every gateway process decides on its own sliding-window counters (``sliding_window.py``: a
dict lookup, no await), whose counts are its last view of the **global** counts plus its own
hits since. Every ``sync_interval_s`` one pipelined round trip pushes the hits of each key
touched since the last sync (``INCRBY`` on the key's window in Redis, with an expiry) and
reads back the global counts of its current and previous windows, which replace the local
view. The cost of sharing is then one round trip per interval and per process, whatever the
request rate, instead of one or more per request.

Accuracy (docs/decisions.md): a process does not see the other processes' hits of the last
interval. With N processes a caller can exceed a limit by what the other N - 1 processes admit
it between two syncs: at most ``(N - 1) * min(quota, r * (interval + round trip))`` per window,
where ``r`` is the rate one process admits the caller at. While Redis cannot be reached each
process limits alone (at most N times the limit), the hits it could not push kept for the
next sync (bounded by ``max_keys``), and failures are logged and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import redis.asyncio as aioredis

from gateway.policies.sliding_window import SlidingWindowCounters

Pending = dict[tuple[str, int, int], int]
"""(counter key, window index, window seconds) -> hits not yet pushed to Redis."""


class SyncedCounters:
    """Local sliding-window counters kept in step with every other process through Redis.

    ``note`` records a decision (called right after ``counters.hit``); a background task, started
    on the first note, pushes and pulls every ``interval_s``. ``on_error`` is told of a failed
    sync (the policy counts and logs it).
    """

    def __init__(
        self,
        counters: SlidingWindowCounters,
        redis: aioredis.Redis,
        *,
        key_prefix: str,
        interval_s: float,
        timeout_s: float,
        on_error: Callable[[BaseException], None],
    ) -> None:
        self.counters = counters
        self._redis = redis
        self._key_prefix = key_prefix
        self.interval_s = interval_s
        self._timeout_s = timeout_s
        self._on_error = on_error
        self._pending: Pending = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.syncs = 0
        """Round trips made (for tests and metrics)."""
        self.failures = 0
        """Syncs that failed (Redis down or slower than the timeout)."""

    @property
    def pending_hits(self) -> int:
        """Hits decided here and not yet in Redis."""
        return sum(self._pending.values())

    def note(self, key: str, window: int, now: float, admitted: bool) -> None:
        """A decision on ``key``: an admission is a hit to push; a refusal asks for the
        global counts all the same (the caller is active)."""
        slot = (key, int(now / window), window)
        pending = self._pending
        count = pending.get(slot)
        if count is None:
            if len(pending) >= self.counters.max_keys:
                return  # Redis unreachable long enough to fill the table: decide locally
            pending[slot] = 1 if admitted else 0
        elif admitted:
            pending[slot] = count + 1
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _redis_key(self, key: str, index: int) -> str:
        return f"{self._key_prefix}{key.replace(chr(0x1F), ':')}:{index}"

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if self._pending:
                try:
                    await self.sync()
                except Exception as exc:  # never end the task: the next tick tries again
                    self.failures += 1
                    self._on_error(exc)

    async def sync(self) -> None:
        """Push the pending hits and pull the global counts: one pipelined round trip."""
        batch, self._pending = self._pending, {}
        if not batch:
            return
        pipe = self._redis.pipeline(transaction=False)
        for (key, index, window), hits in batch.items():
            current = self._redis_key(key, index)
            pipe.incrby(current, hits)
            pipe.expire(current, 2 * window + 1)  # counted while it can weigh: two windows
            pipe.get(self._redis_key(key, index - 1))
        try:
            async with asyncio.timeout(self._timeout_s):
                replies = await pipe.execute()
        except Exception as exc:  # Redis down or slow: keep the hits for the next sync
            self.failures += 1
            for slot, hits in batch.items():
                if slot in self._pending or len(self._pending) < self.counters.max_keys:
                    self._pending[slot] = self._pending.get(slot, 0) + hits
            self._on_error(exc)
            return
        self.syncs += 1
        for n, (key, index, window) in enumerate(batch):
            total, previous = int(replies[3 * n]), int(replies[3 * n + 2] or 0)
            # hits this process made while the round trip was in flight are not in ``total``
            since = self._pending.get((key, index, window), 0)
            self.counters.absorb(key, index, window, total + since, previous)

    async def close(self) -> None:
        """Stop the task and push what is pending (best effort, within the timeout)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self.sync()


def sync_timeout_s(storage_timeout_s: float, interval_s: float) -> float:
    """A sync's budget: the request budget, but never less than the interval (a sync carries
    many keys) nor more than a second (the sockets' own timeout)."""
    return min(1.0, max(storage_timeout_s, interval_s, 0.05))
