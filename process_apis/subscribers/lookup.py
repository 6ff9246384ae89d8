"""Finding the customer an event is about in each system, from whatever ids the event carries.

Events name the customer by the ids the publishing operation had at hand (the CRM contact id,
the email, the billing customer id); every lookup here falls back to the email, which every
system indexes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from system_apis.errors import BackendNotFound
from system_apis.models import Contact
from system_apis.roles import Crm, Systems

from .base import PermanentFailure, field

MARKER = "trellis-event"


def marker(event_id: str) -> str:
    """The tag written into a created record so a redelivery can see the work is done."""
    return f"[{MARKER}:{event_id}]"


def email_of(data: Mapping[str, Any]) -> str | None:
    return field(data, "email", "customer.email", "contact.email")


def crm_contact_id_of(data: Mapping[str, Any], crm: Crm) -> tuple[str | None, bool]:
    """The CRM contact id the event names, and whether it is only the canonical customer id
    (which a source other than the process APIs may use for an id of its own)."""
    named = field(
        data,
        "crm_contact_id",
        "contact_id",
        "system_ids.crm",
        "customer.system_ids.crm",
        "customer.crm_contact_id",
    )
    if named is not None:
        return named, False
    # process APIs name the customer by its canonical id, which is its CRM contact id; other
    # sources (the billing webhook) use customer_id for their own ids: only an id in the
    # configured CRM's syntax can be a contact id
    canonical = field(data, "customer_id", "customer.id")
    if canonical and crm.id_syntax.matches(canonical):
        return canonical, True
    return None, False


async def crm_contact(data: Mapping[str, Any], systems: Systems) -> Contact:
    """The CRM contact the event is about: by id when given, else by email."""
    contact_id, only_canonical = crm_contact_id_of(data, systems.crm)
    if contact_id is not None:
        try:
            return await systems.crm.get_contact(contact_id)
        except BackendNotFound:
            if not only_canonical:  # another system's id in the CRM's syntax: try the email
                raise
    email = email_of(data)
    if email is None:
        raise PermanentFailure("event data names no CRM contact id and no email")
    contact = await systems.crm.find_contact_by_email(email)
    if contact is None:
        raise PermanentFailure("no CRM contact with the event's email")
    return contact


async def customer_email(data: Mapping[str, Any], systems: Systems) -> str:
    """The customer's email: from the event, else from the CRM contact."""
    return email_of(data) or (await crm_contact(data, systems)).email
