"""Each process-API subscriber's effect, visible in the sandbox backends after its event is
put in the outbox (real SQLite outbox, real bus, real HTTP to the sandbox)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.events.component import EventBus
from gateway.events.records import Delivery, DeliveryState
from process_apis.ports import DomainEvent
from process_apis.subscribers import SUBSCRIBERS
from process_apis.subscribers.lookup import marker
from system_apis.models import AccountCreate, Contact, ContactCreate, Invoice
from system_apis.registry import SystemApis
from tests.events.conftest import BusFactory
from tests.events.helpers import write_outbox
from tests.eventually import eventually

pytestmark = pytest.mark.slow  # subscribers' effects in every sandbox backend


def unique_email() -> str:
    return f"evt-{uuid.uuid4().hex[:10]}@example.com"


async def new_contact(systems: SystemApis, status: str = "Prospect") -> Contact:
    account = await systems.crm.create_account(
        AccountCreate(name=f"Acct {uuid.uuid4().hex[:6]}", status=status)
    )
    return await systems.crm.create_contact(
        ContactCreate(
            email=unique_email(), first_name="Eve", last_name="Vent", account_id=account.id
        )
    )


async def delivered(bus: EventBus, events: list[DomainEvent], within: float = 20.0) -> None:
    """Wait until every subscriber of every event is delivered (fail on a dead letter)."""
    ids = {e.id for e in events}

    async def settled() -> list[Delivery]:
        """Every delivery's state, once all are delivered or one is dead (which ends it)."""
        summaries = [
            s for s in await bus.store.recent_events(None, None, 200, bus.wants) if s.id in ids
        ]
        states = [d for s in summaries for d in s.deliveries]
        if any(d.state is DeliveryState.DEAD_LETTERED for d in states):
            return states
        assert len(summaries) == len(ids), states
        assert all(d.state is DeliveryState.DELIVERED for d in states), states
        return states

    states = await eventually(settled, timeout=within, interval=0.1, message="events delivered")
    dead = [d for d in states if d.state is DeliveryState.DEAD_LETTERED]
    assert not dead, dead


async def test_every_subscriber_has_its_effect(make_bus: BusFactory, tmp_path: Path) -> None:
    async with make_bus({}, subscribers=SUBSCRIBERS, with_systems=True) as bus:
        systems = bus.systems
        # order.placed -> CRM activity + confirmation email
        buyer = await new_contact(systems)
        sent_before = (
            (await systems.marketing.engagement(buyer.email)).emails_sent
            if await systems.marketing.find_contact_by_email(buyer.email)
            else 0
        )
        order = DomainEvent(
            type="order.placed",
            subject="SO-TEST-1",
            data={
                "order_id": "SO-TEST-1",
                "crm_contact_id": buyer.id,
                "email": buyer.email,
                "total": "42.00",
                "currency": "USD",
            },
        )
        # invoice.paid -> CRM account status
        payer = await new_contact(systems, status="Prospect")
        paid_invoice = await paid_invoice_of(systems, payer)
        paid = DomainEvent(
            type="invoice.paid",
            subject=paid_invoice.id,
            data={"invoice_id": paid_invoice.id, "customer_id": paid_invoice.customer_id},
        )
        # deal.won -> off the nurture list
        nurtured = await systems.marketing.create_contact(
            unique_email(), "Nu", "Ture", None, "lead"
        )
        nurture = await systems.marketing.find_list("Nurture")
        assert nurture is not None
        await systems.marketing.add_to_list(nurture.id, [nurtured.id])
        won = DomainEvent(type="deal.won", data={"opportunity_id": "006x", "email": nurtured.email})
        # ticket.created -> history comment
        user = await systems.support.create_user(unique_email(), "Tick Et")
        ticket = await systems.support.create_ticket(user.id, "Where is my order?", "Hello")
        created = DomainEvent(
            type="ticket.created",
            subject=ticket.id,
            data={"ticket_id": ticket.id, "email": user.email},
        )
        # customer.created -> welcome email
        newcomer = await new_contact(systems)
        welcome = DomainEvent(
            type="customer.created", data={"crm_contact_id": newcomer.id, "email": newcomer.email}
        )

        events = [order, paid, won, created, welcome]
        write_outbox(tmp_path / "data", events)
        await delivered(bus, events)

        tasks = [t async for t in systems.crm.iter_tasks(buyer.id)]
        assert [t.subject for t in tasks] == ["Order SO-TEST-1 placed"]
        assert marker(order.id) in (tasks[0].description or "")
        assert (await systems.marketing.engagement(buyer.email)).emails_sent == sent_before + 1

        assert payer.account_id is not None
        assert (await systems.crm.get_account(payer.account_id)).status == "Active"

        members = {m.id async for m in systems.marketing.iter_list_members(nurture.id)}
        assert nurtured.id not in members

        comments = [c async for c in systems.support.iter_comments(ticket.id)]
        history = [c for c in comments if marker(created.id) in c.body]
        assert len(history) == 1 and not history[0].public
        assert "Orders:" in history[0].body and "Invoices:" in history[0].body

        assert (await systems.marketing.engagement(newcomer.email)).emails_sent == 1


async def test_handlers_are_idempotent_on_redelivery(make_bus: BusFactory, tmp_path: Path) -> None:
    """A redelivery (crash after the effect, before the bus recorded it) writes nothing new."""
    async with make_bus({}, with_systems=True) as bus:
        systems = bus.systems
        buyer = await new_contact(systems)
        order = DomainEvent(
            type="order.placed",
            subject="SO-TEST-2",
            data={"order_id": "SO-TEST-2", "email": buyer.email},
        )
        user = await systems.support.create_user(unique_email(), "Twice")
        ticket = await systems.support.create_ticket(user.id, "Twice", "Hello")
        created = DomainEvent(type="ticket.created", data={"ticket_id": ticket.id})
        for _ in range(2):
            await SUBSCRIBERS["order-crm-activity"].handle(order, systems)
            await SUBSCRIBERS["ticket-customer-history"].handle(created, systems)
        assert len([t async for t in systems.crm.iter_tasks(buyer.id)]) == 1
        comments = [c async for c in systems.support.iter_comments(ticket.id)]
        assert len([c for c in comments if marker(created.id) in c.body]) == 1


async def paid_invoice_of(systems: SystemApis, payer: Contact) -> Invoice:
    """An invoice of ``payer``'s billing customer (linked to the CRM contact), paid."""
    customer = await systems.billing.create_customer(payer.email, "Pay Er", payer.id)
    invoice = await systems.billing.create_invoice(customer.id, [Decimal("10.00")])
    return await systems.billing.pay_invoice(invoice.id)


async def test_invoice_paid_from_billing_ids_only(make_bus: BusFactory, tmp_path: Path) -> None:
    """The billing webhook names only the billing customer: its CRM link is followed."""
    async with make_bus({}, with_systems=True) as bus:
        systems = bus.systems
        payer = await new_contact(systems, status="Churned")
        invoice = await paid_invoice_of(systems, payer)
        ev = DomainEvent(
            type="invoice.paid",
            data={"invoice_id": invoice.id, "customer_id": invoice.customer_id},
        )
        await SUBSCRIBERS["invoice-paid-crm-status"].handle(ev, systems)
        assert payer.account_id is not None
        assert (await systems.crm.get_account(payer.account_id)).status == "Active"


async def test_an_invoice_paid_claim_billing_does_not_confirm_changes_nothing(
    make_bus: BusFactory, tmp_path: Path
) -> None:
    """A signed event is still only the vendor's claim: an invoice billing does not have, or
    does not call paid, dead-letters the event with the reason, and the CRM keeps its status.
    The event's own customer ids are not believed either: the invoice's customer is used."""
    async with make_bus({}, subscribers=SUBSCRIBERS, with_systems=True) as bus:
        systems = bus.systems
        churned = await new_contact(systems, status="Churned")
        customer = await systems.billing.create_customer(churned.email, "Chur Ned", churned.id)
        unpaid = await systems.billing.create_invoice(customer.id, [Decimal("10.00")])
        bystander = await new_contact(systems, status="Churned")
        someone_elses = await paid_invoice_of(systems, bystander)
        claims = [
            DomainEvent(
                type="invoice.paid",
                data={"invoice_id": "in_1NotThere00000000000000", "customer_id": customer.id},
            ),
            DomainEvent(
                type="invoice.paid",
                data={"invoice_id": unpaid.id, "customer_id": customer.id},
            ),
            DomainEvent(  # a real paid invoice, but the claim names the churned customer
                type="invoice.paid",
                data={"invoice_id": someone_elses.id, "crm_contact_id": churned.id},
            ),
        ]
        write_outbox(tmp_path / "data", claims)

        unconfirmed = {e.id for e in claims[:2]}

        async def dead_letters() -> list[Delivery]:
            summaries = await bus.store.recent_events(None, None, 200, bus.wants)
            found = [
                d
                for s in summaries
                if s.id in unconfirmed
                for d in s.deliveries
                if d.state is DeliveryState.DEAD_LETTERED
            ]
            assert len(found) == 2, found
            return found

        dead = await eventually(dead_letters, message="both unconfirmed claims dead-lettered")
        reasons = sorted(d.last_error or "" for d in dead)
        assert any("billing has no invoice in_1NotThere" in r for r in reasons), reasons
        assert any(f"invoice {unpaid.id} is open, not paid" in r for r in reasons), reasons
        await delivered(bus, claims[2:])
        assert churned.account_id is not None and bystander.account_id is not None
        assert (await systems.crm.get_account(churned.account_id)).status == "Churned"
        assert (await systems.crm.get_account(bystander.account_id)).status == "Active"
