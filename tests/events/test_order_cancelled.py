"""``order.cancelled``: a paid, cancelled order gets one refund ticket in the helpdesk (through
the real outbox and bus, and on redelivery); an unpaid one needs nothing."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from process_apis.ports import DomainEvent
from process_apis.subscribers import SUBSCRIBERS
from process_apis.subscribers.lookup import marker
from system_apis.models import ContactCreate
from tests.events.conftest import BusFactory
from tests.events.helpers import write_outbox
from tests.events.test_subscribers import delivered

pytestmark = pytest.mark.slow  # subscribers' effects in the sandbox backends

SUBSCRIBER = "order-cancelled-refund-ticket"


def cancelled(order_id: str, contact_id: str, refund: bool) -> DomainEvent:
    return DomainEvent(
        type="order.cancelled",
        subject=order_id,
        data={
            "order_id": order_id,
            "crm_contact_id": contact_id,
            "invoice_id": f"in_{order_id}",
            "refund_needed": refund,
            "refund_amount": "42.00" if refund else None,
            "currency": "USD",
        },
    )


async def test_refund_ticket_once_and_only_when_paid(make_bus: BusFactory, tmp_path: Path) -> None:
    async with make_bus({}, subscribers=SUBSCRIBERS, with_systems=True) as bus:
        systems = bus.systems
        email = f"cxl-{uuid.uuid4().hex[:10]}@example.com"
        contact = await systems.crm.create_contact(
            ContactCreate(email=email, first_name="Can", last_name="Celled")
        )
        paid = cancelled(f"45{uuid.uuid4().int % 10**8:08d}", contact.id, refund=True)
        unpaid = cancelled(f"45{uuid.uuid4().int % 10**8:08d}", contact.id, refund=False)
        write_outbox(tmp_path / "data", [paid, unpaid])
        await delivered(bus, [paid, unpaid])
        user = await systems.support.find_user_by_email(email)
        assert user is not None and user.crm_contact_id == contact.id  # created for the refund
        tickets = (await systems.support.user_tickets_page(user.id, limit=100)).items
        assert [t.subject for t in tickets] == [f"Refund for cancelled order {paid.subject}"]
        assert marker(paid.id) in (tickets[0].description or "")
        assert "42.00 USD" in (tickets[0].description or "")
        # a redelivery (crash after the effect, before the bus recorded it) opens no second one
        await SUBSCRIBERS[SUBSCRIBER].handle(paid, systems)
        again = (await systems.support.user_tickets_page(user.id, limit=100)).items
        assert [t.id for t in again] == [tickets[0].id]
