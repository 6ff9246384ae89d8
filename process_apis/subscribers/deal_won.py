"""``deal.won``: a customer who bought is taken off the marketing nurture list.

Removing a contact that is not on the list changes nothing, so redelivery is harmless.
"""

from __future__ import annotations

import logging

from process_apis.ports import DomainEvent
from system_apis.roles import Systems

from .lookup import customer_email

log = logging.getLogger("trellis.events.subscribers")

NURTURE_LIST = "Nurture"


async def stop_nurture(event: DomainEvent, systems: Systems) -> None:
    email = await customer_email(event.data, systems)
    contact = await systems.marketing.find_contact_by_email(email)
    if contact is None:
        log.info("deal.won %s: no marketing contact, nothing to stop", event.id)
        return
    nurture = await systems.marketing.find_list(NURTURE_LIST)
    if nurture is None:
        log.warning("deal.won %s: marketing has no %r list", event.id, NURTURE_LIST)
        return
    await systems.marketing.remove_from_list(nurture.id, [contact.id])
