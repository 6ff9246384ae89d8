"""Customer 360: one customer across CRM, ERP, billing, support and marketing in one round.

Why it is shaped like this: fetching the CRM contact, then letting each section look up its
system's id by email, then fetching that system's data takes three backend round trips in a row
(~170 ms with every backend at +50 ms, docs/performance.md). So the keys each section needs
(the system ids, plus the CRM account id and the marketing email, which are keys too: the
account is read by id, the engagement API by recipient email) come from the cross-reference
store, and whatever a view had to look up is written back there. From the second view of a
customer on, the CRM contact and every section run in one concurrent round. A cached key is
checked against what the round answers; a stale one costs that section one more round, never
a wrong answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from system_apis.errors import BackendError, BackendNotFound

from .contacts import get_contact
from .deadline import view_deadline
from .models import (
    Account,
    BillingCustomer,
    BillingSection,
    Contact,
    Customer,
    Customer360,
    ErpSection,
    Invoice,
    InvoiceStatus,
    MarketingContact,
    MarketingSection,
    OrderStatus,
    Page,
    Payment,
    SupportSection,
    SupportUser,
    Ticket,
    TicketStatus,
)
from .ports import Outcome
from .service import ProcessApis
from .tracing import step

log = logging.getLogger("trellis.process.customers")
T = TypeVar("T")

OPEN_ORDER_STATUSES = frozenset({OrderStatus.OPEN, OrderStatus.CONFIRMED})
OPEN_TICKET_STATUSES = frozenset({TicketStatus.NEW, TicketStatus.OPEN, TicketStatus.PENDING})
SECTION_PAGE = 20
ACCOUNT_KEY = "_crm.account"
"""Store entry: the contact's CRM account id (a key the view needs, not a system of its own)."""
MARKETING_EMAIL_KEY = "_marketing.email"
"""Store entry: the email marketing files the customer's engagement under."""

__all__ = [
    "ACCOUNT_KEY",
    "MARKETING_EMAIL_KEY",
    "customer_360",
    "payment_status",
    "to_customer",
]


def to_customer(contact: Contact, account: Account | None, ids: dict[str, str]) -> Customer:
    return Customer(
        id=contact.id,
        email=contact.email,
        first_name=contact.first_name,
        last_name=contact.last_name,
        phone=contact.phone,
        company=account.name if account else None,
        system_ids={k: v for k, v in ids.items() if not k.startswith("_")},
    )


def payment_status(invoices: list[Invoice], today: datetime | None = None) -> tuple[Decimal, str]:
    """Balance due and a one-word status: none, paid, outstanding or overdue."""
    day = (today or datetime.now(UTC)).date()
    open_ = [i for i in invoices if i.status is InvoiceStatus.OPEN]
    balance = sum((i.amount_due for i in open_), Decimal(0))
    if not invoices:
        return balance, "none"
    if any(i.due_date is not None and i.due_date < day for i in open_):
        return balance, "overdue"
    return balance, "outstanding" if open_ else "paid"


class PendingContact:
    """The CRM contact, fetched in the same round as the sections.

    A section needs it only when a key is missing from the store. The wait is shielded: a
    section that times out must not cancel the fetch the whole view depends on.
    """

    def __init__(self, task: asyncio.Task[Contact]) -> None:
        self._task = task

    async def get(self) -> Contact:
        return await asyncio.shield(self._task)


async def _section(
    name: str, timeout_s: float, make: Callable[[], Awaitable[T]]
) -> tuple[str, T | None, bool]:
    """Run one backend's part with its own timeout: (name, result, available)."""
    with step(f"{name}.section"):
        try:
            # a timeout scope in this task, not wait_for's task of its own per section
            async with asyncio.timeout(timeout_s):
                result = await make()
            return name, result, True
        except (BackendError, TimeoutError) as exc:
            log.warning("360 section unavailable", extra={"backend": name, "error": repr(exc)})
            return name, None, False


async def _account(
    apis: ProcessApis, pending: PendingContact, known: dict[str, str]
) -> Account | None:
    crm = apis.systems.crm
    cached = known.get(ACCOUNT_KEY)
    account: Account | None = None
    if cached is not None:
        try:
            account = await crm.get_account(cached)
        except BackendNotFound:
            account = None
    account_id = (await pending.get()).account_id
    if account_id is None:
        return None
    if account is not None and account.id == account_id:
        return account
    try:  # nothing cached, or the contact moved to another account
        return await crm.get_account(account_id)
    except BackendNotFound:
        return None


async def _erp(apis: ProcessApis, pending: PendingContact, known: dict[str, str]) -> ErpSection:
    number = known.get("erp") or (await pending.get()).erp_customer_number
    if number is None:
        return ErpSection()
    erp = apis.systems.erp
    try:
        customer, orders = await asyncio.gather(
            erp.get_customer(number), erp.orders_page(None, 100, customer_number=number)
        )
    except BackendNotFound:
        return ErpSection()
    open_orders = [o for o in orders.items if o.status in OPEN_ORDER_STATUSES]
    return ErpSection(customer=customer, open_orders=open_orders)


def _billing_section(
    customer: BillingCustomer, invoices: Page[Invoice], payments: Page[Payment]
) -> BillingSection:
    balance, status = payment_status(invoices.items)
    return BillingSection(
        customer=customer,
        invoices=invoices.items,
        payments=payments.items,
        balance_due=balance,
        payment_status=status,
    )


async def _billing(
    apis: ProcessApis, pending: PendingContact, known: dict[str, str]
) -> BillingSection:
    billing = apis.systems.billing

    async def data(cid: str) -> tuple[Page[Invoice], Page[Payment]]:
        return await asyncio.gather(
            billing.invoices_page(limit=SECTION_PAGE, customer_id=cid),
            billing.payments_page(cid, limit=SECTION_PAGE),
        )

    if "billing" in known:
        cid = known["billing"]
        try:
            customer, (invoices, payments) = await asyncio.gather(
                billing.get_customer(cid), data(cid)
            )
        except BackendNotFound:
            pass  # a stale id: find the customer again by email
        else:
            return _billing_section(customer, invoices, payments)
    found = await billing.find_customer_by_email((await pending.get()).email)
    if found is None:
        return BillingSection()
    return _billing_section(found, *await data(found.id))


async def _support(
    apis: ProcessApis, pending: PendingContact, known: dict[str, str]
) -> SupportSection:
    support = apis.systems.support

    if "support" in known:
        uid = known["support"]
        try:
            user, tickets = await asyncio.gather(
                support.get_user(uid), support.user_tickets_page(uid, limit=SECTION_PAGE)
            )
        except BackendNotFound:
            pass  # a stale id: find the user again by email
        else:
            return _support_section(user, tickets.items)
    found = await support.find_user_by_email((await pending.get()).email)
    if found is None:
        return SupportSection()
    page = await support.user_tickets_page(found.id, limit=SECTION_PAGE)
    return _support_section(found, page.items)


def _support_section(user: SupportUser, tickets: list[Ticket]) -> SupportSection:
    open_count = sum(1 for t in tickets if t.status in OPEN_TICKET_STATUSES)
    return SupportSection(user=user, tickets=tickets, open_tickets=open_count)


def _marketing_section(found: MarketingContact, engagement: Any) -> MarketingSection:
    return MarketingSection(
        contact=found,
        engagement=engagement,
        lead_score=found.lead_score,
        lifecycle_stage=found.lifecycle_stage,
    )


async def _marketing(
    apis: ProcessApis, pending: PendingContact, known: dict[str, str]
) -> MarketingSection:
    marketing = apis.systems.marketing
    mid, email = known.get("marketing"), known.get(MARKETING_EMAIL_KEY)
    found: MarketingContact | None = None
    if mid is not None:
        try:
            if email is None:
                found = await marketing.get_contact(mid)
            else:  # both keys known: the record and its engagement in one round
                record, engagement = await asyncio.gather(
                    marketing.get_contact(mid), marketing.engagement(email, mid)
                )
                if record.email.lower() == email.lower():
                    return _marketing_section(record, engagement)
                found = record  # its email changed: its engagement is under the new one
        except BackendNotFound:
            found = None  # a stale id: find the contact again by email
    if found is None:
        found = await marketing.find_contact_by_email((await pending.get()).email)
    if found is None:
        return MarketingSection()
    return _marketing_section(found, await marketing.engagement(found.email, found.id))


def _learned(
    contact: Contact, account: Account | None, parts: dict[str, Any], known: dict[str, str]
) -> dict[str, str]:
    """Every key this view used or found, to be remembered for the next view."""
    ids = {"crm": contact.id}
    if contact.erp_customer_number:
        ids["erp"] = contact.erp_customer_number
    ids.update(known)  # the store wins over the contact's field, as for every operation
    for name, attr in (("billing", "customer"), ("support", "user"), ("marketing", "contact")):
        record = getattr(parts[name], attr, None) if parts[name] is not None else None
        if record is not None:
            ids[name] = record.id
    if account is not None:
        ids[ACCOUNT_KEY] = account.id
    marketing = parts["marketing"]
    if marketing is not None and marketing.contact is not None:
        ids[MARKETING_EMAIL_KEY] = marketing.contact.email
    return ids


async def _remember(apis: ProcessApis, customer_id: str, changed: dict[str, str]) -> None:
    """Write back what changed; a store hiccup only costs the next view a lookup."""
    if not changed:
        return
    with step("store.remember_ids"):
        try:
            await apis.store.commit(Outcome(xrefs={customer_id: changed}))
        except Exception as exc:  # the view itself is complete: never fail it for a cache
            log.warning("360 could not remember ids", extra={"error": repr(exc)})


async def customer_360(apis: ProcessApis, customer_id: str) -> Customer360:
    """The CRM contact (system of record: its failure is the view's) and every section at once,
    each section with its own timeout: latency is the slowest backend when the store knows the
    customer's keys, and at most three rounds (contact, lookup, data) when it does not; the
    whole view within ``view_deadline_s`` (else a 504 naming the CRM)."""
    async with view_deadline(apis.view_deadline_s, "crm"):
        return await _customer_360(apis, customer_id)


async def _customer_360(apis: ProcessApis, customer_id: str) -> Customer360:
    with step("store.xrefs"):
        known = await apis.store.xrefs(customer_id)
    contact_task = asyncio.ensure_future(get_contact(apis, customer_id))
    pending = PendingContact(contact_task)
    timeout = min(apis.section_timeout_s, apis.view_deadline_s)
    sections = asyncio.gather(
        _section("crm", timeout, lambda: _account(apis, pending, known)),
        _section("erp", timeout, lambda: _erp(apis, pending, known)),
        _section("billing", timeout, lambda: _billing(apis, pending, known)),
        _section("support", timeout, lambda: _support(apis, pending, known)),
        _section("marketing", timeout, lambda: _marketing(apis, pending, known)),
    )
    try:
        contact = await contact_task
    except BaseException:
        sections.cancel()
        raise
    results = await sections
    parts: dict[str, Any] = {name: value for name, value, _ in results}
    unavailable = [name for name, _, ok in results if not ok]
    account: Account | None = parts["crm"]
    ids = _learned(contact, account, parts, known)
    await _remember(apis, contact.id, {k: v for k, v in ids.items() if known.get(k) != v})
    return Customer360(
        id=contact.id,
        customer=to_customer(contact, account, ids),
        contact=contact,
        account=account,
        erp=parts["erp"],
        billing=parts["billing"],
        support=parts["support"],
        marketing=parts["marketing"],
        partial=bool(unavailable),
        unavailable=unavailable,
    )
