"""``order.placed``: log the order on the customer's CRM record; email the confirmation.

Two subscribers, so a failing mail service never makes the CRM activity be written again and
each effect is retried (and dead-lettered) on its own.
"""

from __future__ import annotations

from process_apis.ports import DomainEvent
from system_apis.models import Activity
from system_apis.roles import Systems

from .base import require
from .lookup import crm_contact, customer_email, marker

CONFIRMATION_TEMPLATE = "order-confirmation"


def order_id_of(event: DomainEvent) -> str:
    """The order's id: from the data, else the CloudEvent's subject."""
    return require(
        {**event.data, "subject": event.subject}, "order id", "order_id", "order.id", "subject"
    )


async def log_crm_activity(event: DomainEvent, systems: Systems) -> None:
    """A completed CRM task on the contact, unless the order already has one.

    The order saga logs "Order X placed" itself (process_apis/orders.py) when it places the
    order; this subscriber makes sure every ``order.placed`` (also one published by another
    path, or whose saga kept going without the CRM) ends with exactly one such activity.
    """
    order_id = order_id_of(event)
    contact = await crm_contact(event.data, systems)
    tag = marker(event.id)
    subject = f"Order {order_id} placed"
    async for task in systems.crm.iter_tasks(contact.id):
        if task.subject == subject or (task.description and tag in task.description):
            return
    total = event.data.get("total")
    currency = event.data.get("currency", "")
    amount = f" ({total} {currency})".rstrip() if total is not None else ""
    await systems.crm.create_task(
        Activity(
            subject=subject,
            contact_id=contact.id,
            related_to_id=contact.account_id,
            status="completed",
            description=f"Order {order_id} was placed{amount}. {tag}",
        )
    )


async def send_confirmation(event: DomainEvent, systems: Systems) -> None:
    """The order-confirmation email through marketing (the bus dedupes redeliveries)."""
    order_id_of(event)  # an event without an order is not confirmable: dead-letter it
    await systems.marketing.send_email(
        await customer_email(event.data, systems), CONFIRMATION_TEMPLATE
    )
