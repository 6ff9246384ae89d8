"""``invoice.paid``: the paying customer's CRM account becomes (or stays) active.

Setting a status is idempotent by nature, so redelivery needs no lookup first.
"""

from __future__ import annotations

import logging

from process_apis.ports import DomainEvent
from system_apis.crm import API
from system_apis.registry import SystemApis

from .base import field, require
from .lookup import crm_contact

log = logging.getLogger("trellis.events.subscribers")

PAID_STATUS = "Active"


async def update_account_status(event: DomainEvent, systems: SystemApis) -> None:
    data = dict(event.data)
    if field(data, "crm_contact_id", "email", "system_ids.crm") is None:
        # The billing webhook names only the billing customer: its record links to the CRM.
        customer_id = require(data, "billing customer id", "customer_id", "invoice.customer_id")
        customer = await systems.billing.get_customer(customer_id)
        data.update(email=customer.email)
        if customer.crm_contact_id:
            data.update(crm_contact_id=customer.crm_contact_id)
    contact = await crm_contact(data, systems)
    if contact.account_id is None:
        log.info("invoice.paid %s: CRM contact %s has no account", event.id, contact.id)
        return
    await systems.crm.request(
        "PATCH",
        f"{API}/sobjects/Account/{contact.account_id}",
        json={"Customer_Status__c": PAID_STATUS},
    )
