"""The in-process sliding-window counters behind the default rate limit, on a fixed clock."""

from __future__ import annotations

from gateway.policies.ratelimit import _sliding_retry_after
from gateway.policies.sliding_window import SlidingWindowCounters

WINDOW = 10


def test_admits_exactly_the_quota_within_one_window() -> None:
    c = SlidingWindowCounters()
    seen = [c.hit("k", 3, WINDOW, now=1000.0 + i * 0.1) for i in range(5)]
    assert [s.admitted for s in seen] == [True, True, True, False, False]
    assert [s.current for s in seen] == [1, 2, 3, 3, 3]
    assert c.remaining("k", 3, WINDOW, now=1000.5) == 0


def test_previous_window_weighs_what_is_left_of_the_current_one() -> None:
    c = SlidingWindowCounters()
    for i in range(4):
        assert c.hit("k", 4, WINDOW, now=1000.0 + i).admitted
    # 2.5 s into the next window the previous 4 weigh 4 * 0.75 = 3: admitted while
    # floor(4 * left + current) + 1 <= 4
    first = c.hit("k", 4, WINDOW, now=1012.5)
    assert first.admitted and (first.previous, first.current) == (4, 1)
    assert first.left_s == 7.5
    assert c.hit("k", 4, WINDOW, now=1012.6).admitted  # floor(2.96 + 1) + 1 = 4
    assert not c.hit("k", 4, WINDOW, now=1012.7).admitted  # floor(2.92 + 2) + 1 = 5
    # 7.5 s in, only 4 * 0.25 = 1 weighs: two more fit
    assert c.hit("k", 4, WINDOW, now=1017.5).admitted
    assert c.hit("k", 4, WINDOW, now=1017.6).admitted
    assert not c.hit("k", 4, WINDOW, now=1017.7).admitted


def test_a_gap_of_two_windows_forgets_everything() -> None:
    c = SlidingWindowCounters()
    for _ in range(3):
        c.hit("k", 3, WINDOW, now=1000.0)
    assert c.remaining("k", 3, WINDOW, now=1025.0) == 3
    seen = c.hit("k", 3, WINDOW, now=1025.0)
    assert (seen.previous, seen.current) == (0, 1)


def test_keys_are_independent_and_stale_ones_are_swept() -> None:
    c = SlidingWindowCounters(sweep_interval_s=1.0)
    for n in range(100):
        c.hit(f"caller-{n}", 5, WINDOW, now=1000.0)
    assert len(c) == 100
    assert c.hit("other", 1, WINDOW, now=1000.5).admitted  # not swept yet: still fresh
    c.hit("other", 1, WINDOW, now=1030.0)  # two windows later: the old keys weigh nothing
    assert len(c) == 1


def test_refusal_wait_admits_again_and_never_earlier() -> None:
    """Retry-After from the counts a refusal saw: at that instant one request fits again."""
    quota = 5
    for start in (1000.0, 1003.3, 1007.9):
        c = SlidingWindowCounters()
        for i in range(7):
            c.hit("k", quota, WINDOW, now=start - 10 + i)  # some history in the previous window
        t = start
        while (seen := c.hit("k", quota, WINDOW, now=t)).admitted:
            t += 0.01
        prev_ttl = seen.left_s if seen.previous else 0.0
        wait = _sliding_retry_after(
            quota, WINDOW, seen.previous, prev_ttl, seen.current, seen.left_s + WINDOW
        )
        if wait > 0.02:
            assert not c.hit("k", quota, WINDOW, now=t + wait - 0.02).admitted
        assert c.hit("k", quota, WINDOW, now=t + wait + 0.01).admitted
