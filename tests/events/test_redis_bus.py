"""The shared bus on a real Redis: retries, dead letters, replay, and the admin views' data."""

from __future__ import annotations

import asyncio

import pytest

from gateway.events.records import DeadLetterQuery, DeliveryState, ReplayOutcome
from tests.events.conftest import BusFactory
from tests.events.helpers import (
    FAST,
    dead_letters,
    event,
    hook,
    receiver,
    xadd_events,
)

pytestmark = pytest.mark.slow  # deliveries retried after real backoff delays


def cfg(url: str, **extra: object) -> dict[str, object]:
    return {
        "outbound_webhooks": {"t": hook(url, **FAST)},
        "bus": {"claim_min_idle_s": 1.0, "poll_interval_s": 0.05},
        **extra,
    }


async def test_redis_fails_twice_then_succeeds_once(
    make_bus: BusFactory, redis_url: str, redis_prefix: str
) -> None:
    async with receiver(fail_first=2) as rec:
        async with make_bus(cfg(rec.url), redis_url=redis_url, redis_prefix=redis_prefix) as bus:
            ev = event(subject="r-1")
            await xadd_events(redis_url, redis_prefix, [ev])
            await rec.wait_for(lambda r: r.event_ids()[ev.id] == 1)
            await asyncio.sleep(0.5)  # the window a duplicate delivery would arrive in
            assert len(rec.requests) == 3 and rec.event_ids() == {ev.id: 1}
            gaps = [b - a for a, b in zip(rec.times, rec.times[1:])]
            assert all(g >= FAST["base_delay_s"] - 0.01 for g in gaps), gaps
            [summary] = await bus.store.recent_events(None, "r-1", 10, bus.wants)
            [delivery] = summary.deliveries
            assert delivery.state is DeliveryState.DELIVERED and delivery.attempts == 3


async def test_redis_dead_letter_alert_and_replay(
    make_bus: BusFactory, redis_url: str, redis_prefix: str
) -> None:
    async with receiver(always_fail=True) as rec, receiver() as alerts:
        config = cfg(rec.url, alerts={"webhook_url": alerts.url})
        async with make_bus(config, redis_url=redis_url, redis_prefix=redis_prefix) as bus:
            ev = event()
            await xadd_events(redis_url, redis_prefix, [ev])
            [letter] = await dead_letters(bus)
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
            await asyncio.sleep(0.5)  # the window a duplicate delivery would arrive in
            assert len(rec.requests) == 4
            [again] = await bus.store.replay([letter.id])
            assert again.outcome is ReplayOutcome.NOT_DEAD
            shown = await bus.store.dead_letter(letter.id)
            assert shown is not None and shown.status.value == "replayed"
            [summary] = await bus.store.recent_events(None, None, 10, bus.wants)
            assert summary.deliveries[0].state is DeliveryState.DELIVERED


async def test_redis_replay_of_event_handled_elsewhere(
    make_bus: BusFactory, redis_url: str, redis_prefix: str
) -> None:
    async with receiver(always_fail=True) as rec:
        async with make_bus(cfg(rec.url), redis_url=redis_url, redis_prefix=redis_prefix) as bus:
            ev = event()
            await xadd_events(redis_url, redis_prefix, [ev])
            [letter] = await dead_letters(bus)
            await bus.store.redis.set(bus.store.keys.done("webhook:t", ev.id), "1")
            rec.always_fail = False
            [result] = await bus.store.replay([letter.id])
            assert result.outcome is ReplayOutcome.ALREADY_DELIVERED
            await asyncio.sleep(1.0)  # the window a wrongly replayed delivery would arrive in
            assert len(rec.requests) == 3


async def test_redis_discard(make_bus: BusFactory, redis_url: str, redis_prefix: str) -> None:
    async with receiver(always_fail=True) as rec:
        config = cfg(rec.url)
        config["outbound_webhooks"] = {"t": hook(rec.url, **{**FAST, "max_attempts": 1})}
        async with make_bus(config, redis_url=redis_url, redis_prefix=redis_prefix) as bus:
            await xadd_events(redis_url, redis_prefix, [event()])
            [letter] = await dead_letters(bus)
            done = await bus.store.discard(letter.id, "obsolete")
            assert (
                done is not None and done.status.value == "discarded" and done.reason == "obsolete"
            )
            assert await bus.store.dead_letters(DeadLetterQuery()) == []
            assert len(await bus.store.dead_letters(DeadLetterQuery(status=None))) == 1
