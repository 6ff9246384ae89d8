"""Customers: the list, the 360 view across six systems, and onboarding into all of them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from system_apis.crm import AccountCreate, ContactCreate
from system_apis.erp import ErpCustomerCreate
from system_apis.errors import BackendConflict, BackendError, BackendNotFound

from .errors import DuplicateCustomer, NotFound
from .models import (
    Account,
    BillingSection,
    Contact,
    Customer,
    Customer360,
    ErpSection,
    Invoice,
    InvoiceStatus,
    MarketingSection,
    OnboardRequest,
    OrderStatus,
    Page,
    SupportSection,
    TicketStatus,
    dump,
)
from .ports import DomainEvent, Outcome
from .saga import Saga
from .service import ProcessApis
from .tracing import step
from .web import InvalidInput
from .xrefs import ONBOARDING, billing_customer, known_ids, marketing_contact, support_user

log = logging.getLogger("trellis.process.customers")
T = TypeVar("T")

NURTURE_LIST = "Nurture"
OPEN_ORDER_STATUSES = frozenset({OrderStatus.OPEN, OrderStatus.CONFIRMED})
OPEN_TICKET_STATUSES = frozenset({TicketStatus.NEW, TicketStatus.OPEN, TicketStatus.PENDING})
SECTION_PAGE = 20

__all__ = [
    "NURTURE_LIST",
    "customer_360",
    "get_contact",
    "list_customers",
    "onboard",
    "payment_status",
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


async def get_contact(apis: ProcessApis, customer_id: str) -> Contact:
    """The system-of-record contact; an unknown id is 404, a CRM outage stays 503."""
    with step("crm.get_contact"):
        try:
            return await apis.systems.crm.get_contact(customer_id)
        except BackendNotFound:
            raise NotFound("customer", customer_id) from None


async def list_customers(
    apis: ProcessApis, cursor: str | None, limit: int, email: str | None = None
) -> Page[Customer]:
    crm = apis.systems.crm
    if email is not None:
        with step("crm.find_contact_by_email"):
            found = await crm.find_contact_by_email(email.strip())
        contacts = [found] if found else []
        return Page[Customer](items=[to_customer(c, None, _ids(c)) for c in contacts])
    with step("crm.contacts_page"):
        try:
            page = await crm.contacts_page(cursor, limit)
        except ValueError:
            raise InvalidInput(
                "invalid cursor",
                [{"path": "query/cursor", "message": "not a cursor", "type": "cursor"}],
            ) from None
    return Page[Customer](
        items=[to_customer(c, None, _ids(c)) for c in page.items], next_cursor=page.next_cursor
    )


def _ids(contact: Contact) -> dict[str, str]:
    ids = {"crm": contact.id}
    if contact.erp_customer_number:
        ids["erp"] = contact.erp_customer_number
    return ids


# --- 360 -------------------------------------------------------------------------------------


async def _section(
    name: str, timeout_s: float, make: Callable[[], Awaitable[T]]
) -> tuple[str, T | None, bool]:
    """Run one backend's part with its own timeout: (name, result, available)."""
    with step(f"{name}.section"):
        try:
            return name, await asyncio.wait_for(make(), timeout_s), True
        except (BackendError, TimeoutError) as exc:
            log.warning("360 section unavailable", extra={"backend": name, "error": repr(exc)})
            return name, None, False


async def _erp(apis: ProcessApis, known: dict[str, str]) -> ErpSection:
    number = known.get("erp")
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


async def _billing(apis: ProcessApis, contact: Contact, known: dict[str, str]) -> BillingSection:
    customer = await billing_customer(apis, contact, known)
    if customer is None:
        return BillingSection()
    billing = apis.systems.billing
    invoices, payments = await asyncio.gather(
        billing.invoices_page(limit=SECTION_PAGE, customer_id=customer.id),
        billing.payments_page(customer.id, limit=SECTION_PAGE),
    )
    balance, status = payment_status(invoices.items)
    return BillingSection(
        customer=customer,
        invoices=invoices.items,
        payments=payments.items,
        balance_due=balance,
        payment_status=status,
    )


async def _support(apis: ProcessApis, contact: Contact, known: dict[str, str]) -> SupportSection:
    user = await support_user(apis, contact, known)
    if user is None:
        return SupportSection()
    tickets = await apis.systems.support.user_tickets_page(user.id, limit=SECTION_PAGE)
    open_count = sum(1 for t in tickets.items if t.status in OPEN_TICKET_STATUSES)
    return SupportSection(user=user, tickets=tickets.items, open_tickets=open_count)


async def _marketing(
    apis: ProcessApis, contact: Contact, known: dict[str, str]
) -> MarketingSection:
    found = await marketing_contact(apis, contact, known)
    if found is None:
        return MarketingSection()
    engagement = await apis.systems.marketing.engagement(found.email, found.id)
    return MarketingSection(
        contact=found,
        engagement=engagement,
        lead_score=found.lead_score,
        lifecycle_stage=found.lifecycle_stage,
    )


async def _account(apis: ProcessApis, contact: Contact) -> Account | None:
    if contact.account_id is None:
        return None
    try:
        return await apis.systems.crm.get_account(contact.account_id)
    except BackendNotFound:
        return None


async def customer_360(apis: ProcessApis, customer_id: str) -> Customer360:
    """CRM first (it is the system of record and tells us who to look for), then every other
    backend at once, each with its own timeout: latency is CRM plus the slowest, not the sum."""
    contact = await get_contact(apis, customer_id)
    known = await known_ids(apis, contact)
    timeout = apis.section_timeout_s
    results = await asyncio.gather(
        _section("crm", timeout, lambda: _account(apis, contact)),
        _section("erp", timeout, lambda: _erp(apis, known)),
        _section("billing", timeout, lambda: _billing(apis, contact, known)),
        _section("support", timeout, lambda: _support(apis, contact, known)),
        _section("marketing", timeout, lambda: _marketing(apis, contact, known)),
    )
    parts: dict[str, Any] = {name: value for name, value, _ in results}
    unavailable = [name for name, _, ok in results if not ok]
    ids = dict(known)
    for name, attr in (("billing", "customer"), ("support", "user"), ("marketing", "contact")):
        record = getattr(parts[name], attr, None) if parts[name] is not None else None
        if record is not None:
            ids[name] = record.id
    account: Account | None = parts["crm"]
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


# --- onboarding ------------------------------------------------------------------------------

CANNOT_DELETE = "the backend's API offers no delete; kept and linked, a retry resumes"


async def onboard(apis: ProcessApis, req: OnboardRequest) -> tuple[Customer, bool]:
    """Create the customer in CRM, ERP, billing and marketing (+ nurture list).

    None of those systems lets us delete a customer record, so a failure cannot roll back: the
    records made so far are linked in the store and marked incomplete, the failed step is named,
    and repeating the same request resumes where it stopped (each step reuses what exists).
    Answers the customer and whether it was newly created (False: a resumed onboarding).
    """
    crm = apis.systems.crm
    with step("crm.find_contact_by_email"):
        existing = await crm.find_contact_by_email(req.email)
    ids: dict[str, str] = {}
    if existing is not None:
        ids = await apis.store.xrefs(existing.id)
        if ids.get(ONBOARDING) != "incomplete":
            raise DuplicateCustomer("customer", req.email)
    saga = Saga("onboard")
    resumed = existing is not None
    name = f"{req.first_name} {req.last_name}"

    async def record(done: dict[str, str], finished: bool) -> None:
        cid = done["crm"]
        marker = {ONBOARDING: "complete" if finished else "incomplete"}
        events = []
        if finished:
            events.append(
                DomainEvent(
                    type="customer.created",
                    subject=cid,
                    data={
                        "customer_id": cid,
                        "crm_contact_id": cid,
                        "email": req.email,
                        "first_name": req.first_name,
                        "last_name": req.last_name,
                        "system_ids": done,
                    },
                )
            )
        await apis.store.commit(Outcome(xrefs={cid: {**done, **marker}}, events=events))

    account: Account | None = None
    if req.company:
        account = await saga.run("crm.account", lambda: _account_for(apis, req))
    contact: Contact
    if existing is not None:
        contact = existing
    else:
        contact = await saga.run(
            "crm.create_contact",
            lambda: crm.create_contact(
                ContactCreate(
                    email=req.email,
                    first_name=req.first_name,
                    last_name=req.last_name,
                    phone=req.phone,
                    account_id=account.id if account else None,
                )
            ),
            keep_reason=CANNOT_DELETE,
        )
    done = {"crm": contact.id, **{k: v for k, v in ids.items() if not k.startswith("_")}}
    await record(done, finished=False)

    async def step_or_record(step_name: str, make: Callable[[], Awaitable[str]]) -> str:
        try:
            return await saga.run(step_name, make, keep_reason=CANNOT_DELETE, resumable=True)
        except Exception:
            await record(done, finished=False)
            raise

    if "erp" not in done:
        done["erp"] = await step_or_record(
            "erp.create_customer", lambda: _erp_customer(apis, req, contact, name)
        )
    if contact.erp_customer_number != done["erp"]:
        await step_or_record(
            "crm.link_erp",
            lambda: _link_erp(apis, contact.id, done["erp"]),
        )
    if "billing" not in done:
        done["billing"] = await step_or_record(
            "billing.create_customer", lambda: _billing_customer(apis, req, contact.id, done, name)
        )
    if "marketing" not in done:
        done["marketing"] = await step_or_record(
            "marketing.create_contact", lambda: _marketing_contact(apis, req, contact.id)
        )
    await step_or_record("marketing.add_to_nurture", lambda: _nurture(apis, done["marketing"]))
    await step_or_record("publish", lambda: _finish(record, done))
    customer = Customer(
        id=contact.id,
        email=contact.email,
        first_name=contact.first_name,
        last_name=contact.last_name,
        phone=contact.phone,
        company=account.name if account else req.company,
        system_ids=done,
    )
    return customer, not resumed


async def _finish(
    record: Callable[[dict[str, str], bool], Awaitable[None]], done: dict[str, str]
) -> str:
    await record(done, True)
    return "published"


async def _account_for(apis: ProcessApis, req: OnboardRequest) -> Account:
    domain = req.email.rsplit("@", 1)[1]
    crm = apis.systems.crm
    found = await crm.find_account_by_domain(domain)
    if found is not None:
        return found
    return await crm.create_account(AccountCreate(name=req.company or domain, domain=domain))


async def _erp_customer(apis: ProcessApis, req: OnboardRequest, contact: Contact, name: str) -> str:
    erp = apis.systems.erp
    found = await erp.find_customer_by_email(req.email)
    if found is not None:
        return found.customer_number
    created = await erp.create_customer(
        ErpCustomerCreate(
            name=name[:35], email=req.email, phone=req.phone, crm_contact_id=contact.id
        )
    )
    return created.customer_number


async def _link_erp(apis: ProcessApis, contact_id: str, number: str) -> str:
    await apis.systems.crm.update_contact(contact_id, {"erp_customer_number": number})
    return number


async def _billing_customer(
    apis: ProcessApis, req: OnboardRequest, contact_id: str, done: dict[str, str], name: str
) -> str:
    billing = apis.systems.billing
    found = await billing.find_customer_by_email(req.email)
    if found is not None:
        return found.id
    created = await billing.create_customer(
        req.email,
        name,
        crm_contact_id=contact_id,
        erp_customer_number=done.get("erp"),
        idempotency_key=f"onboard:{contact_id}",
    )
    return created.id


async def _marketing_contact(apis: ProcessApis, req: OnboardRequest, contact_id: str) -> str:
    marketing = apis.systems.marketing
    found = await marketing.find_contact_by_email(req.email)
    if found is not None:
        return found.id
    try:
        created = await marketing.create_contact(
            req.email,
            req.first_name,
            req.last_name,
            crm_contact_id=contact_id,
            lifecycle_stage="lead",
        )
    except BackendConflict:  # created meanwhile (or a lagging search index): use that one
        again = await marketing.find_contact_by_email(req.email)
        if again is None:
            raise
        return again.id
    return created.id


async def _nurture(apis: ProcessApis, marketing_id: str) -> str:
    marketing = apis.systems.marketing
    nurture = await marketing.find_list(NURTURE_LIST)
    if nurture is None:
        raise BackendNotFound("marketing", f"no list named {NURTURE_LIST}")
    await marketing.add_to_list(nurture.id, [marketing_id])
    return nurture.id


def onboard_response(customer: Customer) -> dict[str, Any]:
    return dump(customer)
