"""``eventually``: returns the first truthy value, retries what raises, fails naming what it saw."""

from __future__ import annotations

import itertools

import pytest

from tests.eventually import eventually, eventually_sync


async def test_returns_the_first_truthy_value_of_a_sync_condition() -> None:
    calls = itertools.count(1)
    assert await eventually(lambda: next(calls) >= 3 and "third", interval=0) == "third"


async def test_awaits_an_async_condition_and_retries_what_raises() -> None:
    calls = itertools.count(1)

    async def third_call() -> list[int]:
        n = next(calls)
        assert n >= 3, f"call {n}"
        return [n]

    assert await eventually(third_call, interval=0) == [3]


async def test_timeout_names_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"queue empty not met .* last returned \[\]"):
        await eventually(list, timeout=0.05, interval=0.01, message="queue empty")


async def test_timeout_chains_the_last_exception() -> None:
    def refused() -> bool:
        raise ConnectionRefusedError("port closed")

    with pytest.raises(AssertionError, match="last raised ConnectionRefusedError") as failure:
        await eventually(refused, timeout=0.05, interval=0.01)
    assert isinstance(failure.value.__cause__, ConnectionRefusedError)


def test_the_sync_variant_polls_the_same_way() -> None:
    calls = itertools.count(1)
    assert eventually_sync(lambda: next(calls) == 2, interval=0) is True
    with pytest.raises(AssertionError, match="last returned 0"):
        eventually_sync(lambda: 0, timeout=0.05, interval=0.01)
