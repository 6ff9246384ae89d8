"""In-process sliding-window counters: the rate limit's default storage in one worker.

Why not ``limits``' ``MemoryStorage`` (used before): every admitted request went through three
awaited storage calls (two reads, one increment), and each increment started an expiry task
that walks **every** key, so its cost grew with the number of distinct callers. Here a key is
one small list ``[window index, current count, previous count]``: a check is a dict lookup and
a few float operations, with no await and no task; expired keys are swept at most once per
``sweep_interval_s``. Redis (shared by several workers) still goes through ``limits``.

The arithmetic is the sliding-window counter's, as ``limits`` computes it: the previous
window's count weighs ``1 - elapsed / window`` of itself; a request is admitted while
``floor(weighted previous + current) + 1 <= quota``.
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
    """Counters by key; each key keeps its window index and two counts."""

    def __init__(self, sweep_interval_s: float = 1.0) -> None:
        self._entries: dict[str, list[int]] = {}
        self._windows: dict[str, int] = {}
        self._sweep_interval_s = sweep_interval_s
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._entries)

    def _counts(self, key: str, window: int, index: int) -> list[int]:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = [index, 0, 0]
            self._windows[key] = window
        elif entry[0] != index:
            # the window moved on: the current count becomes the previous one if adjacent
            entry[2] = entry[1] if entry[0] == index - 1 else 0
            entry[1] = 0
            entry[0] = index
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

    def _sweep(self, now: float) -> None:
        """Drop keys whose counts can no longer weigh anything (two windows old)."""
        self._next_sweep = now + self._sweep_interval_s
        stale = [
            key
            for key, entry in self._entries.items()
            if entry[0] < int(now / self._windows[key]) - 1
        ]
        for key in stale:
            del self._entries[key]
            del self._windows[key]
