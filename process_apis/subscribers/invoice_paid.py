"""``invoice.paid``: the paying customer's CRM account becomes (or stays) active.

A webhook is the vendor's claim, not a fact: whoever holds (or guessed) the signing secret can
send one. So the invoice is read back from billing first, and the CRM is changed only when
billing itself says the invoice exists and is paid; the customer is the invoice's own, as
billing records it, never the one the event names. Otherwise the event is dead-lettered with
the reason. Setting a status is idempotent by nature, so redelivery needs no lookup first.
"""

from __future__ import annotations

import logging

from process_apis.ports import DomainEvent
from system_apis.errors import BackendNotFound
from system_apis.models import InvoiceStatus
from system_apis.roles import Systems

from .base import PermanentFailure, require
from .lookup import crm_contact

log = logging.getLogger("trellis.events.subscribers")

PAID_STATUS = "Active"


async def update_account_status(event: DomainEvent, systems: Systems) -> None:
    invoice_id = require(event.data, "invoice id", "invoice_id", "invoice.id")
    try:
        invoice = await systems.billing.get_invoice(invoice_id)
    except BackendNotFound:
        raise PermanentFailure(
            f"billing has no invoice {invoice_id}: the event's claim is not acted on"
        ) from None
    if invoice.status is not InvoiceStatus.PAID:
        raise PermanentFailure(
            f"billing says invoice {invoice_id} is {invoice.status.value}, not paid: "
            "the event's claim is not acted on"
        )
    customer = await systems.billing.get_customer(invoice.customer_id)
    payer = {"email": customer.email}
    if customer.crm_contact_id:
        payer["crm_contact_id"] = customer.crm_contact_id
    contact = await crm_contact(payer, systems)
    if contact.account_id is None:
        log.info("invoice.paid %s: CRM contact %s has no account", event.id, contact.id)
        return
    await systems.crm.set_account_status(contact.account_id, PAID_STATUS)
