"""Tickets: a support ticket with what an agent needs about its customer (orders, money)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from system_apis.errors import BackendError, BackendNotFound

from .customers import payment_status
from .errors import NotFound
from .models import Contact, Invoice, Order, SupportUser, TicketContext
from .service import ProcessApis
from .tracing import step
from .xrefs import billing_customer, known_ids

T = TypeVar("T")

__all__ = ["ticket_context"]


async def ticket_context(apis: ProcessApis, ticket_id: str) -> TicketContext:
    """The ticket is the record here (support is critical); everything else is best effort."""
    support = apis.systems.support
    with step("support.get_ticket"):
        try:
            ticket = await support.get_ticket(ticket_id)
        except BackendNotFound:
            raise NotFound("ticket", ticket_id) from None
    unavailable: list[str] = []

    async def guarded(name: str, make: Callable[[], Awaitable[T]], default: T) -> T:
        with step(f"{name}.ticket_context"):
            try:
                return await asyncio.wait_for(make(), apis.section_timeout_s)
            except BackendNotFound:
                return default
            except (BackendError, TimeoutError):
                unavailable.append(name)
                return default

    requester: SupportUser | None = await guarded(
        "support", lambda: support.get_user(ticket.requester_id), None
    )
    contact: Contact | None = None
    if requester is not None:
        crm = apis.systems.crm
        if requester.crm_contact_id:
            cid = requester.crm_contact_id
            contact = await guarded("crm", lambda: crm.get_contact(cid), None)
        else:
            email = requester.email
            contact = await guarded("crm", lambda: crm.find_contact_by_email(email), None)
    orders: list[Order] = []
    invoices: list[Invoice] = []
    if contact is not None:
        known = await known_ids(apis, contact)
        found = contact

        async def erp_orders() -> list[Order]:
            if "erp" not in known:
                return []
            page = await apis.systems.erp.orders_page(None, 20, customer_number=known["erp"])
            return page.items

        async def bills() -> list[Invoice]:
            customer = await billing_customer(apis, found, known)
            if customer is None:
                return []
            page = await apis.systems.billing.invoices_page(limit=20, customer_id=customer.id)
            return page.items

        no_orders: list[Order] = []
        no_invoices: list[Invoice] = []
        orders, invoices = await asyncio.gather(
            guarded("erp", erp_orders, no_orders), guarded("billing", bills, no_invoices)
        )
    balance, status = payment_status(invoices)
    return TicketContext(
        ticket=ticket,
        requester=requester,
        customer_id=contact.id if contact else None,
        contact=contact,
        orders=orders,
        invoices=invoices,
        balance_due=balance,
        payment_status=status,
        partial=bool(unavailable),
        unavailable=sorted(set(unavailable)),
    )
