"""In-process sliding-window counters: the rate limit's default storage in one worker.

Why not ``limits``' ``MemoryStorage`` (used before): every admitted request went through three
awaited storage calls (two reads, one increment), and each increment started an expiry task
that walks **every** key, so its cost grew with the number of distinct callers. Here a key is
one small list ``[window index, current count, previous count, window]``: a check is a dict
lookup and a few float operations, with no await and no task. A shared limit
in exact mode goes through ``limits`` on Redis; in synced mode these counters decide and
``synced_window.py`` keeps them in step with Redis.

The arithmetic is the sliding-window counter's, as ``limits`` computes it: the previous
window's count weighs ``1 - elapsed / window`` of itself; a request is admitted while
``floor(weighted previous + current) + 1 <= quota``.

Bounded in memory and in time, whatever the number of callers (every source address of an
unauthenticated client is a key): the table holds at most ``max_keys`` keys, and a new key at
the cap evicts the key whose window ended longest ago. Keys are kept in one insertion-ordered
table per window length, each moved to the end when its window moves on, so the oldest window
of each length is at its front: eviction looks at a handful of fronts, and the sweep of keys
too old to weigh anything pops them from the fronts, at most ``sweep_batch`` keys a tick. A
tick that stops at its batch runs again on the next request, so a backlog is cleared a batch
per request instead of in one pause of the event loop.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple


class WindowCheck(NamedTuple):
    """One check of one limit: the counts it saw (after the hit when admitted)."""

    admitted: bool
    previous: int  # the previous window's count (unweighted)
    current: int  # this window's count, including this request when admitted
    left_s: float  # seconds until this window ends


class SlidingWindowCounters:
    """Counters by key; each key keeps its window index, two counts and its window length.

    ``max_keys``: keys held at most (a new key at the cap evicts the oldest window's key).
    ``sweep_batch``: keys a sweep tick may look at; ``sweep_interval_s``: seconds between
    ticks while nothing is left over.
    """

    def __init__(
        self, sweep_interval_s: float = 1.0, *, max_keys: int = 100_000, sweep_batch: int = 1000
    ) -> None:
        if max_keys < 1 or sweep_batch < 1:
            raise ValueError("max_keys and sweep_batch must be at least 1")
        self._entries: dict[str, list[int]] = {}
        # per window length: its keys, oldest window first (moved to the end as it moves on)
        self._order: dict[int, dict[str, None]] = {}
        self._sweep_interval_s = sweep_interval_s
        self._next_sweep = 0.0
        self.max_keys = max_keys
        self.sweep_batch = sweep_batch
        self.evicted = 0
        """Keys dropped at the cap while their counts could still weigh (for metrics)."""
        self.swept = 0
        """Keys dropped by the sweep (two windows old: their counts weigh nothing)."""
        self.last_sweep_visited = 0
        """Keys the last sweep tick looked at (at most ``sweep_batch``)."""

    def __len__(self) -> int:
        return len(self._entries)

    def _counts(self, key: str, window: int, index: int) -> list[int]:
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self.max_keys:
                self._evict_oldest()
            entry = self._entries[key] = [index, 0, 0, window]
            order = self._order.get(window)
            if order is None:
                order = self._order[window] = {}
            order[key] = None
        elif entry[0] != index:
            # the window moved on: the current count becomes the previous one if adjacent
            entry[2] = entry[1] if entry[0] == index - 1 else 0
            entry[1] = 0
            entry[0] = index
            order = self._order[entry[3]]
            del order[key]
            order[key] = None  # now the newest window of its length: to the end
        return entry

    def hit(self, key: str, quota: int, window: int, now: float | None = None) -> WindowCheck:
        """Spend one request of ``quota`` per ``window`` seconds under ``key`` if it fits."""
        if now is None:
            now = time.time()
        if now >= self._next_sweep:
            self._sweep(now)
        position = now / window
        index = int(position)
        entry = self._entries.get(key)
        if entry is None or entry[0] != index:  # new, or the window moved on
            entry = self._counts(key, window, index)
        left = 1.0 - (position - index)  # share of the window still to run
        prev, cur = entry[2], entry[1]
        if math.floor(prev * left + cur) + 1 > quota:
            return WindowCheck(False, prev, cur, left * window)
        entry[1] = cur + 1
        return WindowCheck(True, prev, cur + 1, left * window)

    def remaining(self, key: str, quota: int, window: int, now: float | None = None) -> int:
        """Requests left under ``key`` now, without spending one (for views and tests)."""
        if now is None:
            now = time.time()
        position = now / window
        index = int(position)
        entry = self._entries.get(key)
        if entry is None:
            return quota
        if entry[0] == index:
            prev, cur = entry[2], entry[1]
        elif entry[0] == index - 1:
            prev, cur = entry[1], 0
        else:
            prev, cur = 0, 0
        return max(0, quota - math.floor(prev * (1.0 - (position - index)) + cur))

    def absorb(self, key: str, index: int, window: int, current: int, previous: int) -> None:
        """Take the counts another source knows better (the global ones of a shared limit):
        ``current`` for window ``index`` of ``key``, ``previous`` for the one before it."""
        entry = self._entries.get(key)
        if entry is None or entry[3] != window:
            return  # evicted or swept meanwhile: the next decision starts it afresh
        if entry[0] == index:
            entry[1] = current
            entry[2] = max(entry[2], previous)
        elif entry[0] == index + 1:  # the window moved on while the counts were fetched
            entry[2] = max(entry[2], current)

    def _evict_oldest(self) -> None:
        """Drop the key whose window ended first: the front of one of the per-length tables."""
        oldest_key: str | None = None
        oldest_end = math.inf
        for window, order in self._order.items():
            for key in order:  # the front only
                end = (self._entries[key][0] + 1) * window
                if end < oldest_end:
                    oldest_key, oldest_end = key, end
                break
        if oldest_key is not None:
            self._drop(oldest_key)
            self.evicted += 1

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key)
        order = self._order[entry[3]]
        del order[key]
        if not order:
            del self._order[entry[3]]

    def _sweep(self, now: float) -> None:
        """Drop keys whose counts can no longer weigh anything (two windows old), oldest
        first, looking at no more than ``sweep_batch`` keys; with some left, tick again on
        the next request."""
        budget = self.sweep_batch
        visited = 0
        more = False  # keys left unvisited when the budget ran out
        entries = self._entries
        for window, order in list(self._order.items()):
            stale_below = int(now / window) - 1
            stale: list[str] = []
            for key in order:
                if visited >= budget:
                    more = True
                    break
                visited += 1
                if entries[key][0] >= stale_below:
                    break  # the rest of this length's keys are newer
                stale.append(key)
            for key in stale:
                self._drop(key)
            self.swept += len(stale)
            if more:
                break
        self.last_sweep_visited = visited
        self._next_sweep = now if more else now + self._sweep_interval_s
