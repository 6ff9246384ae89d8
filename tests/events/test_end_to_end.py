"""End to end through the gateway: placing an order publishes order.placed through the
process APIs' outbox, and the subscribers' effects appear in the CRM and marketing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.app import Gateway, create_app
from gateway.events.records import DeliveryState, EventSummary
from process_apis.subscribers.lookup import marker
from system_apis.sandbox import seed
from tests.conftest import SandboxThread
from tests.eventually import eventually
from tests.gateway.helpers import test_settings, token
from tests.servers import serve

pytestmark = pytest.mark.slow  # a whole gateway, its bus delivering in real time

PERSON = seed.people()[333]
SKU = next(s.sku for s in seed.skus() if s.on_hand >= 150)


@pytest.fixture(scope="module")
async def gateway(
    sandbox: SandboxThread, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, Gateway]]:
    app = create_app(test_settings(sandbox.base_port, tmp_path_factory.mktemp("e2e")))
    async with serve(app) as url:
        yield url, app


async def test_order_placed_reaches_crm_and_marketing(gateway: tuple[str, Gateway]) -> None:
    url, app = gateway
    systems = app.systems
    emails_before = (await systems.marketing.engagement(PERSON.email)).emails_sent
    bearer = await token(url, "orders-service")
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{url}/process/v1/orders",
            json={"customer_id": PERSON.crm_contact_id, "lines": [{"sku": SKU, "quantity": 1}]},
            headers={"Authorization": f"Bearer {bearer}", "Idempotency-Key": uuid.uuid4().hex},
        ) as r,
    ):
        order = await r.json()
        assert r.status == 201, order

    async def delivered() -> list[EventSummary]:
        found = await app.events.store.recent_events(
            "order.placed", order["id"], 5, app.events.wants
        )
        if found and all(d.state is DeliveryState.DELIVERED for d in found[0].deliveries):
            return found
        return []

    [summary] = await eventually(delivered, timeout=20, interval=0.1, message="order.placed")
    assert {d.subscriber for d in summary.deliveries} == {
        "order-crm-activity",
        "order-confirmation-email",
    }
    tasks = [t async for t in systems.crm.iter_tasks(PERSON.crm_contact_id)]
    # exactly one activity for the order: the saga's; the subscriber saw it and wrote none
    placed = [t for t in tasks if t.subject == f"Order {order['id']} placed"]
    assert len(placed) == 1
    assert marker(summary.id) not in (placed[0].description or "")
    assert (await systems.marketing.engagement(PERSON.email)).emails_sent == emails_before + 1
