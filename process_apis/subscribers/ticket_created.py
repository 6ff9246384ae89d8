"""``ticket.created``: an internal comment on the ticket summarising the customer's history.

The agent sees recent orders and unpaid invoices without opening two other systems. The
comment carries the event's marker, so a redelivery finds it and writes nothing.
"""

from __future__ import annotations

import asyncio

from process_apis.ports import DomainEvent
from system_apis.errors import BackendError
from system_apis.roles import Billing, Erp, Systems

from .base import field, require
from .lookup import email_of, marker

MAX_ITEMS = 5


async def _orders(erp: Erp, email: str) -> list[str]:
    customer = await erp.find_customer_by_email(email)
    if customer is None:
        return []
    page = await erp.orders_page(None, MAX_ITEMS, customer_number=customer.customer_number)
    return [f"order {o.id}: {o.status.value}, {o.total} {o.currency}" for o in page.items]


async def _invoices(billing: Billing, email: str) -> list[str]:
    customer = await billing.find_customer_by_email(email)
    if customer is None:
        return []
    page = await billing.invoices_page(limit=MAX_ITEMS, customer_id=customer.id)
    return [
        f"invoice {i.id}: {i.status.value}, due {i.amount_due} {i.currency}" for i in page.items
    ]


async def attach_history(event: DomainEvent, systems: Systems) -> None:
    ticket_id = require(event.data, "ticket id", "ticket_id", "ticket.id", "id")
    tag = marker(event.id)
    async for comment in systems.support.iter_comments(ticket_id):
        if tag in comment.body:
            return
    email = email_of(event.data)
    if email is None:
        requester = field(event.data, "requester_id", "ticket.requester_id")
        if requester is None:
            requester = (await systems.support.get_ticket(ticket_id)).requester_id
        email = (await systems.support.get_user(requester)).email
    lines: list[str] = []
    # both sections at once; every coroutine is awaited even if the other one fails
    sections = await asyncio.gather(
        _orders(systems.erp, email), _invoices(systems.billing, email), return_exceptions=True
    )
    for title, found in zip(("Orders", "Invoices"), sections, strict=True):
        if isinstance(found, BackendError):  # history is a courtesy: say what is missing
            items = [f"(unavailable: {found.backend})"]
        elif isinstance(found, BaseException):
            raise found
        else:
            items = found
        lines.append(f"{title}:")
        lines.extend(f"- {item}" for item in items or ["none"])
    body = "Customer history (added by Trellis)\n" + "\n".join(lines) + f"\n{tag}"
    await systems.support.add_comment(ticket_id, body, public=False)
