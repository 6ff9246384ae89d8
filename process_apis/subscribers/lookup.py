"""Finding the customer an event is about in each system, from whatever ids the event carries.

Events name the customer by the ids the publishing operation had at hand (the CRM contact id,
the email, the billing customer id); every lookup here falls back to the email, which every
system indexes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from system_apis.models import Contact
from system_apis.roles import Systems

from .base import PermanentFailure, field

MARKER = "trellis-event"


def marker(event_id: str) -> str:
    """The tag written into a created record so a redelivery can see the work is done."""
    return f"[{MARKER}:{event_id}]"


def email_of(data: Mapping[str, Any]) -> str | None:
    return field(data, "email", "customer.email", "contact.email")


CRM_CONTACT_KEY_PREFIX = "003"
"""Salesforce Contact ids start with it; the canonical customer id is the CRM contact id."""


def crm_contact_id_of(data: Mapping[str, Any]) -> str | None:
    named = field(
        data,
        "crm_contact_id",
        "contact_id",
        "system_ids.crm",
        "customer.system_ids.crm",
        "customer.crm_contact_id",
    )
    if named is not None:
        return named
    # process APIs name the customer by its canonical id, which is its CRM contact id; other
    # sources (the billing webhook) use customer_id for their own ids
    canonical = field(data, "customer_id", "customer.id")
    return canonical if canonical and canonical.startswith(CRM_CONTACT_KEY_PREFIX) else None


async def crm_contact(data: Mapping[str, Any], systems: Systems) -> Contact:
    """The CRM contact the event is about: by id when given, else by email."""
    contact_id = crm_contact_id_of(data)
    if contact_id is not None:
        return await systems.crm.get_contact(contact_id)
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
