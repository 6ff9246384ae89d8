"""The shared bus on a real Redis: retries, dead letters, replay, and the admin views' data."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from gateway.events.records import DeadLetterQuery, DeliveryState, ReplayOutcome
from tests.events.conftest import BusFactory
from tests.events.helpers import (
    FAST,
    drop_prefix,
    event,
    hook,
    receiver,
    unique_prefix,
    xadd_events,
)


@pytest.fixture
async def prefix(redis_url: str) -> AsyncIterator[str]:
    p = unique_prefix()
    yield p
    await drop_prefix(redis_url, p)


def cfg(prefix: str, url: str, **extra: object) -> dict[str, object]:
    return {
        "outbound_webhooks": {"t": hook(url, **FAST)},
        "bus": {"redis_prefix": prefix, "claim_min_idle_s": 1.0, "poll_interval_s": 0.05},
        **extra,
    }


async def wait_dead(bus, count: int = 1, within: float = 15.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while True:
        letters = await bus.store.dead_letters(DeadLetterQuery())
        if len(letters) >= count:
            return letters
        assert time.monotonic() < deadline, "no dead letter in time"
        await asyncio.sleep(0.05)


async def test_redis_fails_twice_then_succeeds_once(
    make_bus: BusFactory, redis_url: str, prefix: str
) -> None:
    async with receiver(fail_first=2) as rec:
        async with make_bus(cfg(prefix, rec.url), redis_url=redis_url) as bus:
            ev = event(subject="r-1")
            await xadd_events(redis_url, prefix, [ev])
            await rec.wait_for(lambda r: r.event_ids()[ev.id] == 1)
            await asyncio.sleep(0.5)
            assert len(rec.requests) == 3 and rec.event_ids() == {ev.id: 1}
            gaps = [b - a for a, b in zip(rec.times, rec.times[1:])]
            assert all(g >= FAST["base_delay_s"] - 0.01 for g in gaps), gaps
            [summary] = await bus.store.recent_events(None, "r-1", 10, bus.wants)
            [delivery] = summary.deliveries
            assert delivery.state is DeliveryState.DELIVERED and delivery.attempts == 3


async def test_redis_dead_letter_alert_and_replay(
    make_bus: BusFactory, redis_url: str, prefix: str
) -> None:
    async with receiver(always_fail=True) as rec, receiver() as alerts:
        config = cfg(prefix, rec.url, alerts={"webhook_url": alerts.url})
        async with make_bus(config, redis_url=redis_url) as bus:
            ev = event()
            await xadd_events(redis_url, prefix, [ev])
            [letter] = await wait_dead(bus)
            await alerts.wait_for(lambda r: len(r.requests) == 1)
            assert len(rec.requests) == 3
            assert letter.attempts == 3 and [e.n for e in letter.errors] == [1, 2, 3]
            assert letter.trace_id == ev.traceparent.split("-")[1]  # type: ignore[union-attr]
            [summary] = await bus.store.recent_events(None, None, 10, bus.wants)
            assert summary.deliveries[0].state is DeliveryState.DEAD_LETTERED

            rec.always_fail = False
            [result] = await bus.store.replay([letter.id])
            assert result.outcome is ReplayOutcome.REPLAYED
            await rec.wait_for(lambda r: r.event_ids()[ev.id] == 1)
            await asyncio.sleep(0.5)
            assert len(rec.requests) == 4
            [again] = await bus.store.replay([letter.id])
            assert again.outcome is ReplayOutcome.NOT_DEAD
            shown = await bus.store.dead_letter(letter.id)
            assert shown is not None and shown.status.value == "replayed"
            [summary] = await bus.store.recent_events(None, None, 10, bus.wants)
            assert summary.deliveries[0].state is DeliveryState.DELIVERED


async def test_redis_replay_of_event_handled_elsewhere(
    make_bus: BusFactory, redis_url: str, prefix: str
) -> None:
    async with receiver(always_fail=True) as rec:
        async with make_bus(cfg(prefix, rec.url), redis_url=redis_url) as bus:
            ev = event()
            await xadd_events(redis_url, prefix, [ev])
            [letter] = await wait_dead(bus)
            await bus.store.redis.set(bus.store.keys.done("webhook:t", ev.id), "1")
            rec.always_fail = False
            [result] = await bus.store.replay([letter.id])
            assert result.outcome is ReplayOutcome.ALREADY_DELIVERED
            await asyncio.sleep(1.0)
            assert len(rec.requests) == 3


async def test_redis_discard(make_bus: BusFactory, redis_url: str, prefix: str) -> None:
    async with receiver(always_fail=True) as rec:
        config = cfg(prefix, rec.url)
        config["outbound_webhooks"] = {"t": hook(rec.url, **{**FAST, "max_attempts": 1})}
        async with make_bus(config, redis_url=redis_url) as bus:
            await xadd_events(redis_url, prefix, [event()])
            [letter] = await wait_dead(bus)
            done = await bus.store.discard(letter.id, "obsolete")
            assert (
                done is not None and done.status.value == "discarded" and done.reason == "obsolete"
            )
            assert await bus.store.dead_letters(DeadLetterQuery()) == []
            assert len(await bus.store.dead_letters(DeadLetterQuery(status=None))) == 1
