"""``Slots``: the bulkhead and the transport's connection cap (first come, first served)."""

from __future__ import annotations

import asyncio

import pytest

from system_apis.resilience import Slots


async def test_free_slots_are_taken_without_waiting_and_the_rest_wait_in_order() -> None:
    slots = Slots(2)
    assert slots.try_take() and slots.try_take()
    assert not slots.try_take()
    loop = asyncio.get_running_loop()
    order: list[int] = []

    async def waiter(n: int) -> None:
        await slots.take(loop.time() + 5)
        order.append(n)

    tasks = [asyncio.create_task(waiter(n)) for n in range(3)]
    await asyncio.sleep(0)
    slots.give_back()  # straight to the first waiter: a newcomer cannot jump the queue
    assert not slots.try_take()
    slots.give_back()
    await asyncio.sleep(0)
    assert order == [0, 1] and slots.held == 2
    slots.give_back()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2] and slots.held == 2
    slots.give_back()
    slots.give_back()
    assert slots.held == 0


async def test_a_wait_ends_at_its_deadline_and_leaves_the_queue() -> None:
    slots = Slots(1)
    assert slots.try_take()
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        await slots.take(loop.time() + 0.05)
    slots.give_back()  # nobody waits any more: the slot is free again
    assert slots.held == 0 and slots.try_take()


async def test_a_cancelled_waiter_handed_a_slot_passes_it_on() -> None:
    slots = Slots(1)
    assert slots.try_take()
    loop = asyncio.get_running_loop()
    first = asyncio.create_task(slots.take(loop.time() + 5))
    second = asyncio.create_task(slots.take(loop.time() + 5))
    await asyncio.sleep(0)
    slots.give_back()  # handed to the first...
    first.cancel()  # ...which gives up before it runs: the slot goes to the second
    await asyncio.sleep(0)
    await second
    assert first.cancelled() and slots.held == 1
