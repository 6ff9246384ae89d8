"""The system-of-record contact, shared by every operation that starts from a customer id.

Its own module so the 360 view and the operations (customers, orders, deals, tickets) can all
use it without importing each other.
"""

from __future__ import annotations

from system_apis.errors import BackendNotFound

from .errors import NotFound
from .models import Contact
from .service import ProcessApis
from .tracing import step

__all__ = ["get_contact"]


async def get_contact(apis: ProcessApis, customer_id: str) -> Contact:
    """The CRM contact; an unknown id is 404, a CRM outage stays 503."""
    with step("crm.get_contact"):
        try:
            return await apis.systems.crm.get_contact(customer_id)
        except BackendNotFound:
            raise NotFound("customer", customer_id) from None
