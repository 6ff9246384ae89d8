"""Stopping the gateway lets webhook deliveries in flight finish (``events.bus.drain_s``):
each is recorded delivered, and the restarted dispatcher does not deliver it again."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from gateway.events.records import DeliveryState
from tests.events.conftest import BusFactory, make_bus  # noqa: F401  (the fixture)
from tests.events.helpers import FAST, event, hook, write_outbox
from tests.eventually import eventually
from tests.servers import free_port

pytestmark = pytest.mark.slow


class SlowPartner:
    """Takes each webhook, holds the answer ``hold_s``, then answers 204."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.arrived = asyncio.Event()
        self.delivered: Counter[str] = Counter()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.arrived.set()
        await asyncio.sleep(self.hold_s)
        self.delivered[body["id"]] += 1
        return web.Response(status=204)


@asynccontextmanager
async def slow_partner(hold_s: float) -> AsyncIterator[SlowPartner]:
    partner = SlowPartner(hold_s)
    app = web.Application()
    app.router.add_post("/{tail:.*}", partner.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    partner.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield partner
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("store", ["sqlite", "redis"])
async def test_a_delivery_in_flight_at_shutdown_finishes_once(
    store: str,
    make_bus: BusFactory,  # noqa: F811
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    shared: dict[str, str] = {}
    if store == "redis":
        shared = {
            "redis_url": request.getfixturevalue("redis_url"),
            "redis_prefix": request.getfixturevalue("redis_prefix"),
        }
    async with slow_partner(hold_s=1.0) as partner:
        cfg = {
            "outbound_webhooks": {"p": hook(partner.url, **FAST)},
            "bus": {"drain_s": 10, "lease_s": 60, "claim_min_idle_s": 1},
        }
        first = event(subject="in-flight")
        async with make_bus(cfg, **shared) as bus:
            if store == "redis":
                await bus.publish([first])
            else:
                write_outbox(tmp_path / "data", [first])
                bus.wake()
            await asyncio.wait_for(partner.arrived.wait(), 15)
            # leaving the block closes the bus (as the gateway's lifespan does on SIGTERM)
            # while the partner still holds its answer
        assert partner.delivered[first.id] == 1

        second = event(subject="after-restart")
        async with make_bus(cfg, **shared) as bus:
            [summary] = await bus.store.recent_events(None, "in-flight", 10, bus.wants)
            assert [d.state for d in summary.deliveries] == [DeliveryState.DELIVERED]
            partner.hold_s = 0
            if store == "redis":
                await bus.publish([second])
            else:
                write_outbox(tmp_path / "data", [second])
                bus.wake()

            await eventually(lambda: partner.delivered[second.id] == 1, timeout=15)
            await asyncio.sleep(1.5)  # past claim_min_idle_s: a pending first would be reclaimed
        assert partner.delivered[first.id] == 1  # never delivered twice
