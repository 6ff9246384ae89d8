"""The in-process rate-limit counters stay bounded in memory and in time under hostile load.

An unauthenticated client with many source addresses (IPv6) makes a new counter key per
address: the table has a size cap with eviction of the oldest windows, and the sweep of stale
keys looks at a bounded number of keys per tick. The arithmetic is checked against the
``limits`` library's own sliding-window counter strategy.
"""

from __future__ import annotations

import time
from unittest import mock

import limits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from gateway.policies.ratelimit import RateLimitConfig, RateLimitPolicy
from gateway.policies.sliding_window import SlidingWindowCounters


def test_table_never_exceeds_its_cap_under_a_million_distinct_keys() -> None:
    cap = 1000
    c = SlidingWindowCounters(max_keys=cap, sweep_batch=100)
    now = 1_000_000.0
    largest = 0
    for n in range(1_000_000):
        if n % 1000 == 0:
            now += 0.001  # all within one window: nothing is stale, only the cap bounds it
            largest = max(largest, len(c))
        c.hit(f"addr:2001:db8::{n:x}", 5, 60, now=now)
    assert max(largest, len(c)) == cap
    assert c.evicted == 1_000_000 - cap
    # the newest callers are the ones kept, and each is still counted
    assert c.remaining("addr:2001:db8::f423f", 5, 60, now=now) == 4


def test_the_cap_evicts_the_key_whose_window_ended_first() -> None:
    c = SlidingWindowCounters(max_keys=3)
    c.hit("sustained", 5, 60, now=1000.0)  # window [960, 1020)
    c.hit("burst-a", 5, 1, now=1010.0)  # window [1010, 1011): ends first, came first
    c.hit("burst-b", 5, 1, now=1010.2)
    c.hit("newcomer", 5, 1, now=1010.5)  # at the cap: burst-a goes
    assert c.evicted == 1 and len(c) == 3
    assert c.remaining("burst-a", 5, 1, now=1010.5) == 5  # forgotten
    assert c.remaining("burst-b", 5, 1, now=1010.5) == 4
    assert c.remaining("sustained", 5, 60, now=1010.5) == 4

    # across window lengths: the minute key whose window ends first goes before a newer one
    c = SlidingWindowCounters(max_keys=2)
    c.hit("minute", 5, 60, now=1019.0)  # window [960, 1020)
    c.hit("ten-a", 5, 10, now=1020.5)  # window [1020, 1030)
    c.hit("ten-b", 5, 10, now=1020.6)
    assert c.evicted == 1
    assert c.remaining("minute", 5, 60, now=1020.6) == 5
    assert c.remaining("ten-a", 5, 10, now=1020.6) == 4


def test_a_sweep_tick_looks_at_no_more_than_its_batch() -> None:
    batch = 100
    c = SlidingWindowCounters(sweep_interval_s=1.0, max_keys=100_000, sweep_batch=batch)
    for n in range(10_000):
        c.hit(f"caller-{n}", 5, 1, now=1000.0)
    later = 1010.0  # every key is stale now
    c.hit("fresh", 5, 1, now=later)
    assert c.last_sweep_visited <= batch
    assert len(c) >= 10_000 + 1 - batch  # one tick did not walk the whole table
    ticks = 1
    while len(c) > 1:  # each following request sweeps one more batch, none more
        c.hit("fresh", 5, 1, now=later)
        assert c.last_sweep_visited <= batch
        ticks += 1
        assert ticks <= 10_000 // batch + 2
    assert c.swept == 10_000


def test_the_sweep_passes_fresh_keys_of_another_window_length() -> None:
    c = SlidingWindowCounters(sweep_interval_s=1.0, sweep_batch=10)
    c.hit("sustained", 5, 60, now=1000.0)  # fresh for two minutes
    for n in range(5):
        c.hit(f"burst-{n}", 5, 1, now=1000.0)
    c.hit("other", 5, 60, now=1005.0)
    assert len(c) == 2  # the burst keys went, the sustained ones stayed


def test_the_policy_takes_the_cap_from_its_config() -> None:
    config = RateLimitConfig.model_validate({"memory": {"max_keys": 1000, "sweep_batch": 50}})
    policy = RateLimitPolicy(config)
    assert policy.counters is not None
    assert (policy.counters.max_keys, policy.counters.sweep_batch) == (1000, 50)
    for n in range(5000):
        scope = {"type": "http", "path": "/x", "method": "GET", "client": (f"10.0.{n}", 1)}
        policy.check_in_memory(scope)
    # two limits (burst, sustained) per address: never more keys than the cap
    assert len(policy.counters) <= 1000
    assert policy.stats()["counter_keys"] == len(policy.counters)


# --- differential: the same decisions as limits' sliding-window counter ---------------------

STEPS_PER_WINDOW = 16
"""Times are multiples of window / 16 (exact in binary floating point): both implementations
then compute the same weights exactly, and any difference is one of logic, not rounding."""


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    window=st.sampled_from([1, 2, 10, 60]),
    quota=st.integers(min_value=1, max_value=8),
    steps=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=3 * STEPS_PER_WINDOW),  # clock step
            st.sampled_from(["a", "b", "c"]),  # which caller
            st.integers(min_value=1, max_value=4),  # hits at that instant
        ),
        min_size=1,
        max_size=40,
    ),
)
def test_decisions_match_limits_sliding_window_counter(
    window: int, quota: int, steps: list[tuple[int, str, int]]
) -> None:
    item = limits.parse(f"{quota}/{window} second")
    ticks = 1_000_000 * STEPS_PER_WINDOW  # a window boundary
    clock = Clock(window * ticks / STEPS_PER_WINDOW)
    ours = SlidingWindowCounters(sweep_interval_s=1.0)
    # limits' memory storage reads the wall clock (time.time) itself: it runs on this test's
    # clock for the example (its expiry thread included)
    with mock.patch.object(time, "time", clock):
        theirs = SlidingWindowCounterRateLimiter(MemoryStorage())
        for step, key, hits in steps:
            ticks += step
            clock.now = window * ticks / STEPS_PER_WINDOW
            for _ in range(hits):
                expected = theirs.hit(item, key)
                got = ours.hit(key, quota, window, now=clock.now)
                assert got.admitted == expected, (clock.now, key)
            stats = theirs.get_window_stats(item, key)
            assert ours.remaining(key, quota, window, now=clock.now) == stats.remaining
