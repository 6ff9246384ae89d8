"""Leads: capture one from a web form, enrich it from the CRM, score it, start its nurture."""

from __future__ import annotations

from system_apis.errors import BackendConflict, BackendError

from .customers import NURTURE_LIST
from .errors import DuplicateCustomer
from .models import Account, Lead, LeadCaptured, LeadRequest, LeadStatus, dump
from .ports import DomainEvent, Outcome
from .saga import Saga
from .service import ProcessApis
from .tracing import step

FREE_MAIL = frozenset(
    {"gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "gmx.de", "icloud.com", "aol.com"}
)

__all__ = ["capture_lead", "score"]


def score(req: LeadRequest, account: Account | None, marketing_score: int | None) -> int:
    """0-100: known account, company, phone and a business address make a warmer lead."""
    points = 10
    points += 30 if account is not None else 0
    points += 10 if req.company else 0
    points += 10 if req.phone else 0
    points += 0 if req.email.rsplit("@", 1)[1] in FREE_MAIL else 15
    points += (marketing_score or 0) // 4
    return min(points, 100)


async def capture_lead(apis: ProcessApis, req: LeadRequest) -> LeadCaptured:
    crm = apis.systems.crm
    with step("crm.dedupe"):
        if await crm.find_contact_by_email(req.email) is not None:
            raise DuplicateCustomer("contact", req.email)
        if await crm.find_lead_by_email(req.email) is not None:
            raise DuplicateCustomer("lead", req.email)
    with step("crm.enrich"):
        try:
            account = await crm.find_account_by_domain(req.email.rsplit("@", 1)[1])
        except BackendError:  # enrichment is a bonus, not a reason to lose the lead
            account = None
    saga = Saga("lead")
    lead = await saga.run(
        "crm.create_lead",
        lambda: crm.create_lead(
            Lead(
                email=req.email,
                first_name=req.first_name,
                last_name=req.last_name,
                company=req.company or (account.name if account else None),
                phone=req.phone,
                source=req.source,
                status=LeadStatus.NEW,
            )
        ),
        keep_reason="the CRM API offers no delete; the lead stays, the form may be resent",
    )
    marketing = apis.systems.marketing

    async def enrol() -> tuple[str, str | None, int | None]:
        found = await marketing.find_contact_by_email(req.email)
        if found is None:
            try:
                found = await marketing.create_contact(
                    req.email, req.first_name, req.last_name, lifecycle_stage="lead"
                )
            except BackendConflict:
                found = await marketing.find_contact_by_email(req.email)
                if found is None:
                    raise
        nurture = await marketing.find_list(NURTURE_LIST)
        if nurture is not None:
            await marketing.add_to_list(nurture.id, [found.id])
        return found.id, nurture.id if nurture else None, found.lead_score

    contact_id, list_id, marketing_score = await saga.run(
        "marketing.enrol_nurture",
        enrol,
        keep_reason="the marketing API offers no delete",
    )
    result = LeadCaptured(
        lead=lead,
        account_id=account.id if account else None,
        score=score(req, account, marketing_score),
        marketing_contact_id=contact_id,
        nurture_list_id=list_id,
    )
    event = DomainEvent(type="lead.captured", subject=lead.id, data=dump(result))
    await saga.run("publish", lambda: apis.store.commit(Outcome(events=[event])))
    return result
