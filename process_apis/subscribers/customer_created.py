"""``customer.created``: the welcome email through marketing (the bus dedupes redeliveries)."""

from __future__ import annotations

from process_apis.ports import DomainEvent
from system_apis.roles import Systems

from .lookup import customer_email

WELCOME_TEMPLATE = "welcome"


async def send_welcome(event: DomainEvent, systems: Systems) -> None:
    await systems.marketing.send_email(await customer_email(event.data, systems), WELCOME_TEMPLATE)
