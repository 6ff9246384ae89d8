"""Reactions to domain events, one module per reaction, registered by subscriber name.

The gateway's event bus delivers each event to every subscriber whose types match, with
retries, backoff and a dead-letter queue; ``config/events.yaml`` can disable a subscriber
or give it its own delivery policy.
"""

from __future__ import annotations

from collections.abc import Mapping

from . import (
    customer_created,
    deal_won,
    invoice_paid,
    order_cancelled,
    order_placed,
    ticket_created,
)
from .base import Handler, PermanentFailure, Subscriber

SUBSCRIBERS: Mapping[str, Subscriber] = {
    "order-crm-activity": Subscriber(
        frozenset({"order.placed"}),
        order_placed.log_crm_activity,
        "CRM activity on the customer's contact",
    ),
    "order-confirmation-email": Subscriber(
        frozenset({"order.placed"}),
        order_placed.send_confirmation,
        "order confirmation email through marketing",
    ),
    "order-cancelled-refund-ticket": Subscriber(
        frozenset({"order.cancelled"}),
        order_cancelled.open_refund_ticket,
        "helpdesk ticket to refund a paid invoice of a cancelled order",
    ),
    "invoice-paid-crm-status": Subscriber(
        frozenset({"invoice.paid"}),
        invoice_paid.update_account_status,
        "CRM account status set to active",
    ),
    "deal-won-stop-nurture": Subscriber(
        frozenset({"deal.won"}), deal_won.stop_nurture, "contact removed from the nurture list"
    ),
    "ticket-customer-history": Subscriber(
        frozenset({"ticket.created"}),
        ticket_created.attach_history,
        "internal comment with the customer's orders and invoices",
    ),
    "customer-welcome-email": Subscriber(
        frozenset({"customer.created"}), customer_created.send_welcome, "welcome email"
    ),
}

__all__ = ["SUBSCRIBERS", "Handler", "PermanentFailure", "Subscriber"]
