"""The table bus over a real SQLite file and a real PostgreSQL: retries with backoff, dead
letters, replay."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.events.component import EventBus
from gateway.events.config import DeliveryPolicy
from gateway.events.records import DeadLetterQuery, DeliveryState, ReplayOutcome
from gateway.events.signing import verify
from gateway.events.subscriptions import Subscription
from process_apis.ports import DomainEvent
from process_apis.subscribers.base import PermanentFailure
from tests.events.conftest import BusFactory
from tests.events.helpers import (
    FAST,
    commit_events,
    dead_letters,
    event,
    hook,
    receiver,
    write_outbox,
)
from tests.eventually import eventually

pytestmark = pytest.mark.slow  # deliveries retried after real backoff delays


def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@dataclass
class Tables:
    """The bus on one store, and how a test writes to that store as the process APIs do."""

    make: BusFactory
    tmp_path: Path
    database_url: str | None

    def bus(self, events: dict[str, Any], **kw: Any) -> AbstractAsyncContextManager[EventBus]:
        return self.make(events, database_url=self.database_url, **kw)

    async def write(self, events: list[DomainEvent]) -> None:
        """Events into the outbox, in a transaction of the writer's own."""
        if self.database_url is None:
            write_outbox(data_dir(self.tmp_path), events)
            return
        await commit_events(self.database_url, events)

    async def mark_processed(self, subscriber: str, event_id: str) -> None:
        """As another worker that handled the event would have."""
        if self.database_url is None:
            conn = sqlite3.connect(data_dir(self.tmp_path) / "trellis.db")
            conn.execute(
                "INSERT INTO event_processed (subscriber, event_id, at) VALUES (?, ?, ?)",
                (subscriber, event_id, time.time()),
            )
            conn.commit()
            conn.close()
            return
        pg = await asyncpg.connect(self.database_url)
        await pg.execute(
            "INSERT INTO event_processed (subscriber, event_id, at) VALUES ($1, $2, $3)",
            subscriber,
            event_id,
            time.time(),
        )
        await pg.close()


@pytest.fixture(params=["sqlite", "postgres"])
def tables(request: pytest.FixtureRequest, make_bus: BusFactory, tmp_path: Path) -> Tables:
    url = request.getfixturevalue("database_url") if request.param == "postgres" else None
    return Tables(make_bus, tmp_path, url)


async def test_fails_twice_then_succeeds_once_with_backoff(tables: Tables) -> None:
    async with receiver(fail_first=2) as rec:
        async with tables.bus({"outbound_webhooks": {"t": hook(rec.url, **FAST)}}) as bus:
            ev = event(subject="s-1")
            await tables.write([ev])
            await rec.wait_for(lambda r: r.event_ids()[ev.id] == 1)
            await asyncio.sleep(0.5)  # nothing else may arrive
            assert len(rec.requests) == 3
            assert rec.event_ids() == {ev.id: 1}
            gaps = [b - a for a, b in zip(rec.times, rec.times[1:])]
            assert all(g >= FAST["base_delay_s"] - 0.01 for g in gaps), gaps
            [summary] = await bus.store.recent_events(None, "s-1", 10, bus.wants)
            [delivery] = summary.deliveries
            assert delivery.subscriber == "webhook:t"
            assert delivery.state is DeliveryState.DELIVERED and delivery.attempts == 3


async def test_always_failing_is_dead_lettered_alerted_and_replayed_once(
    tables: Tables, caplog: pytest.LogCaptureFixture
) -> None:
    async with receiver(always_fail=True) as rec, receiver() as alerts:
        cfg = {
            "outbound_webhooks": {"t": hook(rec.url, **FAST)},
            "alerts": {"webhook_url": alerts.url, "timeout_s": 2},
        }
        async with tables.bus(cfg) as bus:
            ev = event()
            with caplog.at_level(logging.ERROR, logger="trellis.events"):
                await tables.write([ev])
                [letter] = await dead_letters(bus)
                await alerts.wait_for(lambda r: len(r.requests) == 1)
            assert len(rec.requests) == 3  # exactly the configured attempts
            assert letter.attempts == 3 and len(letter.errors) == 3
            assert all("503" in (e.error or "") for e in letter.errors)
            assert letter.subscriber == "webhook:t" and letter.event_id == ev.id
            assert letter.trace_id == ev.traceparent.split("-")[1]  # type: ignore[union-attr]
            alert = alerts.bodies()[0]
            assert alert["dead_letter_id"] == letter.id and alert["event_id"] == ev.id
            assert any(
                r.levelno == logging.ERROR and letter.event_id in r.getMessage()
                for r in caplog.records
            )
            [summary] = await bus.store.recent_events(None, None, 10, bus.wants)
            assert summary.deliveries[0].state is DeliveryState.DEAD_LETTERED
            assert summary.deliveries[0].dead_letter_id == letter.id

            rec.always_fail = False  # the subscriber recovers
            [result] = await bus.store.replay([letter.id])
            assert result.outcome is ReplayOutcome.REPLAYED
            await rec.wait_for(lambda r: r.event_ids()[ev.id] == 1)
            await asyncio.sleep(0.5)  # the window a second, duplicate delivery would arrive in
            assert rec.event_ids() == {ev.id: 1} and len(rec.requests) == 4
            [again] = await bus.store.replay([letter.id])
            assert again.outcome is ReplayOutcome.NOT_DEAD
            [summary] = await bus.store.recent_events(None, None, 10, bus.wants)
            assert summary.deliveries[0].state is DeliveryState.DELIVERED


async def test_replay_of_an_event_handled_elsewhere_is_not_applied_twice(tables: Tables) -> None:
    async with receiver(always_fail=True) as rec:
        async with tables.bus({"outbound_webhooks": {"t": hook(rec.url, **FAST)}}) as bus:
            ev = event()
            await tables.write([ev])
            [letter] = await dead_letters(bus)
            # meanwhile another worker handled it (its processed marker is there)
            await tables.mark_processed("webhook:t", ev.id)
            rec.always_fail = False
            [result] = await bus.store.replay([letter.id, letter.id])
            assert result.outcome is ReplayOutcome.ALREADY_DELIVERED
            await asyncio.sleep(1.0)  # the window a wrongly replayed delivery would arrive in
            assert len(rec.requests) == 3  # no fourth call
            [missing] = await bus.store.replay(["dlq_nope"])
            assert missing.outcome is ReplayOutcome.NOT_FOUND


async def test_retry_after_is_honoured(tables: Tables) -> None:
    async with receiver(fail_first=1, status=429, retry_after="1") as rec:
        policy = {**FAST, "base_delay_s": 0.05}
        async with tables.bus({"outbound_webhooks": {"t": hook(rec.url, **policy)}}):
            await tables.write([event()])
            await rec.wait_for(lambda r: len(r.requests) == 2)
            assert rec.times[1] - rec.times[0] >= 0.99


async def test_permanent_failure_is_dead_lettered_at_once(tables: Tables) -> None:
    calls: list[str] = []

    async def bad(ev: DomainEvent) -> None:
        calls.append(ev.id)
        raise PermanentFailure("event data has no order id")

    sub = Subscription("bad", frozenset({"test.happened"}), bad, DeliveryPolicy(**FAST))
    async with tables.bus({}, extra=[sub]) as bus:
        await tables.write([event()])
        [letter] = await dead_letters(bus)
        assert letter.attempts == 1 and len(calls) == 1
        assert "PermanentFailure" in (letter.errors[0].error or "")


async def test_discard_with_reason(tables: Tables) -> None:
    async with receiver(always_fail=True) as rec:
        policy = {**FAST, "max_attempts": 1}
        async with tables.bus({"outbound_webhooks": {"t": hook(rec.url, **policy)}}) as bus:
            await tables.write([event()])
            [letter] = await dead_letters(bus)
            done = await bus.store.discard(letter.id, "partner retired the endpoint")
            assert done is not None and done.status.value == "discarded"
            assert done.reason == "partner retired the endpoint" and done.resolved_at
            assert await bus.store.dead_letters(DeadLetterQuery()) == []
            [result] = await bus.store.replay([letter.id])
            assert result.outcome is ReplayOutcome.NOT_DEAD


async def test_outbound_webhook_is_signed_and_masked(tables: Tables) -> None:
    async with receiver() as rec:
        async with tables.bus({"outbound_webhooks": {"t": hook(rec.url, ["order.placed"])}}):
            ev = event(
                "order.placed", order_id="o-1", email="alice@example.com", first_name="Alice"
            )
            await tables.write([ev, event("other.type")])
            await rec.wait_for(lambda r: len(r.requests) == 1)
            await asyncio.sleep(0.3)  # the unsubscribed type, were it sent, would have arrived
            [req] = rec.requests
            assert len(rec.requests) == 1  # only the subscribed type
            verify(req["raw"], req["headers"]["Trellis-Signature"], "whsec_partner_test_secret")
            assert req["headers"]["Trellis-Event-Id"] == ev.id
            assert req["headers"]["Content-Type"] == "application/cloudevents+json"
            assert req["headers"]["traceparent"] == ev.traceparent
            body = req["body"]
            assert body["data"]["email"] == "a***@example.com"
            assert body["data"]["first_name"] == "A."  # the partner channel policy
            assert body["data"]["order_id"] == "o-1" and body["partnerid"] == "partner-test"


async def test_partner_webhooks_carry_only_that_partners_orders(tables: Tables) -> None:
    async with receiver() as acme, receiver() as globex:
        hooks = {
            name: {**hook(rec.url, ["order.placed"]), "partner_id": name, "own_records_only": True}
            for name, rec in (("partner-acme", acme), ("partner-globex", globex))
        }
        async with tables.bus({"outbound_webhooks": hooks}):
            ev = event(
                "order.placed",
                order_id="o-9",
                channel="partner-globex",
                customer_id="003TR0000000000101",
                invoice_id="in_1",
                reservation_id="res_1",
                email="ada@example.com",
                phone=["+1-555-123-4567"],
            )
            await tables.write([ev])
            await globex.wait_for(lambda r: len(r.requests) == 1)
            await asyncio.sleep(0.5)  # acme's delivery, were it wrong, would have arrived
            assert acme.requests == []  # another partner's order never reaches acme
            data = globex.requests[0]["body"]["data"]
            assert data["order_id"] == "o-9"
            for internal in ("customer_id", "invoice_id", "reservation_id"):
                assert internal not in data
            assert data["email"] == "a***@example.com"
            assert data["phone"] == ["*********67"]  # PII inside lists is masked too


async def test_handling_joins_the_trace_of_the_cause(tables: Tables) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    seen: list[str] = []

    async def handle(ev: DomainEvent) -> None:
        seen.append(ev.id)

    sub = Subscription("rec", frozenset({"test.happened"}), handle, DeliveryPolicy(**FAST))
    async with tables.bus({}, extra=[sub], tracer_provider=provider):
        ev = event()
        await tables.write([ev])
        await eventually(lambda: seen, timeout=10, message="the event handled")
    _, trace_hex, parent_hex, _ = ev.traceparent.split("-")  # type: ignore[union-attr]
    [span] = [s for s in exporter.get_finished_spans() if s.name == "test.happened deliver rec"]
    assert span.context.trace_id == int(trace_hex, 16)
    assert span.parent is not None and span.parent.span_id == int(parent_hex, 16)
    assert span.attributes["messaging.message.id"] == ev.id
