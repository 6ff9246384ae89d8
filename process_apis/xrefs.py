"""A customer's id in every system: from the store, else looked up once and then remembered.

The canonical customer id is the CRM contact id (the system of record), so every seed customer
has a cross-reference without a migration: the ERP number is on the CRM contact, the others are
found by email the first time and cached in the store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from system_apis.errors import BackendNotFound

from .models import BillingCustomer, Contact, MarketingContact, SupportUser
from .ports import Outcome
from .service import ProcessApis


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


R = TypeVar("R", bound=_HasId)

ONBOARDING = "_onboarding"
"""Marker entry (not a system): "incomplete" while an onboarding still has steps to finish."""

__all__ = [
    "ONBOARDING",
    "billing_customer",
    "known_ids",
    "marketing_contact",
    "remember",
    "support_user",
]


async def known_ids(apis: ProcessApis, contact: Contact) -> dict[str, str]:
    ids = {"crm": contact.id}
    if contact.erp_customer_number:
        ids["erp"] = contact.erp_customer_number
    ids.update(await apis.store.xrefs(contact.id))
    return ids


async def remember(apis: ProcessApis, customer_id: str, ids: dict[str, str]) -> None:
    """Cache newly found ids; a store hiccup only costs a lookup next time, so it is not fatal."""
    if ids:
        await apis.store.commit(Outcome(xrefs={customer_id: ids}))


async def _resolve(
    apis: ProcessApis,
    contact: Contact,
    known: dict[str, str],
    system: str,
    get: Callable[[str], Awaitable[R | None]],
    find: Callable[[str], Awaitable[R | None]],
) -> R | None:
    """The record by its remembered id, else found by email (and the id remembered)."""
    if system in known:
        try:
            return await get(known[system])
        except BackendNotFound:
            pass
    found = await find(contact.email)
    if found is not None and known.get(system) != found.id:
        await remember(apis, contact.id, {system: found.id})
    return found


async def billing_customer(
    apis: ProcessApis, contact: Contact, known: dict[str, str]
) -> BillingCustomer | None:
    billing = apis.systems.billing
    return await _resolve(
        apis, contact, known, "billing", billing.get_customer, billing.find_customer_by_email
    )


async def support_user(
    apis: ProcessApis, contact: Contact, known: dict[str, str]
) -> SupportUser | None:
    support = apis.systems.support
    return await _resolve(
        apis, contact, known, "support", support.get_user, support.find_user_by_email
    )


async def marketing_contact(
    apis: ProcessApis, contact: Contact, known: dict[str, str]
) -> MarketingContact | None:
    marketing = apis.systems.marketing
    return await _resolve(
        apis, contact, known, "marketing", marketing.get_contact, marketing.find_contact_by_email
    )
