"""Tickets: open one for a customer; a ticket with what an agent needs about its customer.

Opening a ticket announces ``ticket.created`` in the same store commit as the request's
idempotency record, so the history subscriber always hears of it and a retry never opens a
second ticket (the helpdesk dedupes on a reference derived from the Idempotency-Key).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from system_apis.errors import BackendError, BackendNotFound

from .customer360 import payment_status
from .deadline import view_deadline
from .durable import RECOVERY, Recovery
from .errors import NotFound
from .idempotency import reference_of
from .models import (
    Contact,
    CreateTicketRequest,
    Invoice,
    Order,
    SupportUser,
    Ticket,
    TicketContext,
    dump,
)
from .orders import get_contact_or_422
from .ports import DomainEvent, Outcome, StoredResponse
from .saga import Saga
from .service import ProcessApis
from .tracing import step
from .xrefs import billing_customer, known_ids, support_user

T = TypeVar("T")

TICKET_TAG = "trellis"
"""Tag on tickets opened through Trellis, so agents can tell where they came from."""
KEPT = "the helpdesk cannot delete it; repeat the same request to reuse it"

__all__ = ["create_ticket", "ticket_context"]


async def _requester(apis: ProcessApis, contact: Contact) -> SupportUser:
    """The customer's helpdesk user: known or found by email (and remembered), else created."""
    user = await support_user(apis, contact, await known_ids(apis, contact))
    if user is not None:
        return user
    return await apis.systems.support.create_user(
        contact.email,
        f"{contact.first_name} {contact.last_name}".strip(),
        crm_contact_id=contact.id,
        idempotency_key=f"support-user:{contact.id}",
    )


async def create_ticket(apis: ProcessApis, req: CreateTicketRequest, key: str) -> StoredResponse:
    """Open the ticket for an already-claimed Idempotency-Key and commit its answer under it."""
    contact = await get_contact_or_422(apis, req.customer_id)
    saga = Saga("ticket")
    user = await saga.run(
        "support.find_or_create_user",
        lambda: _requester(apis, contact),
        keep_reason=KEPT,
        resumable=True,
    )
    ticket: Ticket = await saga.run(
        "support.create_ticket",
        lambda: apis.systems.support.create_ticket(
            user.id,
            req.subject,
            req.body,
            req.priority,
            tags=(TICKET_TAG,),
            idempotency_key=reference_of(key, "TK"),
        ),
        keep_reason=KEPT,
        resumable=True,
    )
    body = dump(ticket)
    response = StoredResponse(201, body)
    event = DomainEvent(
        type="ticket.created",
        subject=ticket.id,
        data={
            "ticket_id": ticket.id,
            "requester_id": user.id,
            "customer_id": contact.id,
            "crm_contact_id": contact.id,
            "email": contact.email,
            "subject": ticket.subject,
            "priority": ticket.priority.value if ticket.priority else None,
        },
    )
    await saga.run(
        "publish",
        lambda: apis.store.commit(
            Outcome(
                idempotency_key=key,
                response=response,
                xrefs={contact.id: {"support": user.id}},
                events=[event],
            )
        ),
        resumable=True,
    )
    return response


async def ticket_context(apis: ProcessApis, ticket_id: str) -> TicketContext:
    """The ticket is the record here (support is critical); everything else is best effort;
    the whole view within ``view_deadline_s``."""
    async with view_deadline(apis.view_deadline_s, "support"):
        return await _ticket_context(apis, ticket_id)


async def _ticket_context(apis: ProcessApis, ticket_id: str) -> TicketContext:
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


RECOVERY["ticket"] = Recovery(undo={}, lookup={}, resumable=True)
"""Interrupted, it is finished by the same request: each step reuses what its reference made."""
