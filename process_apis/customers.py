"""Customers: the list and onboarding into every system; the 360 view lives in customer360."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from system_apis.errors import BackendConflict, BackendNotFound
from system_apis.models import AccountCreate, ContactCreate, ErpCustomerCreate

from .contacts import get_contact
from .customer360 import customer_360, payment_status, to_customer
from .durable import OWNER, RECOVERY, Journal, Recovery
from .errors import DuplicateCustomer, KeyInProgress, StepFailed
from .idempotency import reference_of
from .models import (
    Account,
    Contact,
    Customer,
    OnboardRequest,
    Page,
    dump,
)
from .ports import DomainEvent, OpState, Outcome
from .saga import Saga
from .service import ProcessApis
from .tracing import step
from .xrefs import ONBOARDING

log = logging.getLogger("trellis.process.customers")

NURTURE_LIST = "Nurture"

__all__ = [
    "NURTURE_LIST",
    "customer_360",
    "get_contact",
    "list_customers",
    "onboard",
    "payment_status",
]


async def list_customers(
    apis: ProcessApis, cursor: str | None, limit: int, email: str | None = None
) -> Page[Customer]:
    crm = apis.systems.crm
    if email is not None:
        with step("crm.find_contact_by_email"):
            found = await crm.find_contact_by_email(email.strip())
        contacts = [found] if found else []
        return Page[Customer](items=[to_customer(c, None, _ids(c)) for c in contacts])
    with step("crm.contacts_page"):  # a malformed cursor is a 400 before any call
        page = await crm.contacts_page(cursor, limit)
    return Page[Customer](
        items=[to_customer(c, None, _ids(c)) for c in page.items], next_cursor=page.next_cursor
    )


def _ids(contact: Contact) -> dict[str, str]:
    ids = {"crm": contact.id}
    if contact.erp_customer_number:
        ids["erp"] = contact.erp_customer_number
    return ids


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
    okey = f"onboard:{req.email.lower()}"
    with step("crm.find_contact_by_email"):
        existing = await crm.find_contact_by_email(req.email)
    ids: dict[str, str] = {}
    if existing is not None:
        ids = await apis.store.xrefs(existing.id)
        # ours when the store says so, or when the saga log holds our unfinished onboarding
        # (the store may have failed before it could record even the CRM contact)
        if ids.get(ONBOARDING) != "incomplete" and not await _unfinished(apis, okey):
            raise DuplicateCustomer("customer", req.email)
    journal = await _claim(apis, okey)
    try:
        result = await _onboard(apis, req, existing, ids, journal)
    except BaseException:
        await _settle_log(apis, journal, OpState.RETRYABLE)
        raise
    await _settle_log(apis, journal, OpState.DONE)
    return result


async def _unfinished(apis: ProcessApis, okey: str) -> bool:
    op = await apis.saga_log.by_key(okey)
    return op is not None and op.state is not OpState.DONE


async def _claim(apis: ProcessApis, okey: str) -> Journal:
    """This email's onboarding in the saga log, run by this process from now on."""
    lease = apis.durable.lease_s
    op, created = await apis.saga_log.start("onboard", okey, "", reference_of(okey), OWNER, lease)
    if not created:
        again = await apis.saga_log.restart(op.id, OWNER, lease)
        if again is None:  # running in a live process (or about to be taken over)
            raise KeyInProgress(retry_after=max(1.0, op.lease_until - time.time()))
        op = again
    return Journal(apis.saga_log, op)


async def _settle_log(apis: ProcessApis, journal: Journal, state: OpState) -> None:
    try:
        await apis.saga_log.finish(journal.op.id, state, None)
    except Exception as exc:  # the lease expires; the sweeper marks it resumable
        log.error("saga log unavailable", extra={"operation": journal.op.id, "error": repr(exc)})


RECOVERY["onboard"] = Recovery(undo={}, lookup={}, resumable=True)
"""No backend deletes a customer: an interrupted onboarding is resumed by the same request."""


async def _onboard(
    apis: ProcessApis,
    req: OnboardRequest,
    existing: Contact | None,
    ids: dict[str, str],
    journal: Journal,
) -> tuple[Customer, bool]:
    crm = apis.systems.crm
    saga = Saga("onboard", journal)
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
        try:
            await apis.store.commit(Outcome(xrefs={cid: {**done, **marker}}, events=events))
        except Exception as exc:  # the saga log still knows the contact is ours: resumable
            if isinstance(exc, StepFailed):
                raise
            raise StepFailed(
                "store.record",
                exc,
                not_undone={"crm.create_contact": CANNOT_DELETE},
                resumable=True,
            ) from exc

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
            with contextlib.suppress(StepFailed):  # the failure being raised says more
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
