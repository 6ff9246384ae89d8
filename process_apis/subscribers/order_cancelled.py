"""``order.cancelled``: a customer who had already paid gets a refund ticket in the helpdesk.

Billing offers Trellis no refund API, so a person must refund; the ticket puts the job in the
agents' queue and tells the customer (its requester) that the refund is on its way. A
cancellation without a payment needs nothing here. The ticket is created with a key derived
from the event id, which the helpdesk dedupes on, so a redelivery never opens a second one.
"""

from __future__ import annotations

from process_apis.ports import DomainEvent
from system_apis.models import SupportUser, TicketPriority
from system_apis.roles import Systems

from .base import field, require
from .lookup import crm_contact, email_of, marker
from .order_placed import order_id_of

REFUND_TAGS = ("trellis", "refund")


async def _requester(event: DomainEvent, systems: Systems) -> SupportUser:
    """The customer's helpdesk user, created (once: keyed by CRM contact) if they have none."""
    email = email_of(event.data)
    if email is not None:
        found = await systems.support.find_user_by_email(email)
        if found is not None:
            return found
    contact = await crm_contact(event.data, systems)
    found = await systems.support.find_user_by_email(contact.email)
    if found is not None:
        return found
    return await systems.support.create_user(
        contact.email,
        f"{contact.first_name} {contact.last_name}".strip(),
        crm_contact_id=contact.id,
        idempotency_key=f"support-user:{contact.id}",
    )


async def open_refund_ticket(event: DomainEvent, systems: Systems) -> None:
    if event.data.get("refund_needed") is not True:
        return
    order_id = order_id_of(event)
    invoice_id = require(event.data, "invoice id", "invoice_id")
    amount = field(event.data, "refund_amount") or "the amount paid"
    currency = field(event.data, "currency") or ""
    user = await _requester(event, systems)
    body = (
        f"Order {order_id} was cancelled after invoice {invoice_id} had been paid. "
        f"We will refund {amount} {currency}".rstrip()
        + ". Agents: issue the refund in billing, then solve this ticket. "
        + marker(event.id)
    )
    await systems.support.create_ticket(
        user.id,
        f"Refund for cancelled order {order_id}",
        body,
        TicketPriority.HIGH,
        tags=REFUND_TAGS,
        idempotency_key=f"refund:{event.id}",
    )
