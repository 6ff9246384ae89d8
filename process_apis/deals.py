"""Deals: closing one as won bills it, stops the nurture and announces ``deal.won``.

Closing is idempotent per opportunity (the key is the deal itself): a retry or a second click
replays the first answer instead of billing twice.
"""

from __future__ import annotations

import logging

from system_apis.errors import BackendConflict, BackendNotFound

from .customers import NURTURE_LIST, get_contact
from .errors import NotFound
from .idempotency import attempt_reference, once
from .models import CloseWonResult, Contact, LeadStatus, OpportunityStage, dump
from .ports import DomainEvent, Outcome, StoredResponse
from .saga import Saga
from .service import ProcessApis
from .tracing import step
from .web import InvalidInput
from .xrefs import billing_customer, known_ids, marketing_contact

log = logging.getLogger("trellis.process.deals")

__all__ = ["close_won"]


async def close_won(apis: ProcessApis, opportunity_id: str) -> tuple[StoredResponse, bool]:
    """The stored answer of closing this deal, and whether it is a replay."""
    key = f"close-won:{opportunity_id}"
    return await once(
        apis.store,
        key,
        "close-won",
        lambda: _close_won(apis, opportunity_id, key),
        apis.idempotency_ttl_s,
    )


async def _close_won(apis: ProcessApis, opportunity_id: str, key: str) -> StoredResponse:
    crm = apis.systems.crm
    with step("crm.get_opportunity"):
        try:
            opp = await crm.get_opportunity(opportunity_id)
        except BackendNotFound:
            raise NotFound("deal", opportunity_id) from None
    if opp.stage in (OpportunityStage.CLOSED_WON, OpportunityStage.CLOSED_LOST):
        raise BackendConflict("crm", f"the deal is already {opp.stage.value}")
    if opp.amount is None or opp.amount <= 0:
        raise InvalidInput(
            "the deal has no amount to bill",
            [{"path": "amount", "message": "missing", "type": "missing"}],
        )
    if opp.contact_id is None:
        raise InvalidInput(
            "the deal has no contact to bill",
            [{"path": "contact_id", "message": "missing", "type": "missing"}],
        )
    contact = await get_contact(apis, opp.contact_id)
    known = await known_ids(apis, contact)
    with step("billing.find_customer"):
        bill_to = await billing_customer(apis, contact, known)
    if bill_to is None:
        raise InvalidInput(
            "the deal's contact has no billing account",
            [{"path": "contact_id", "message": "not billable", "type": "missing"}],
        )
    previous = opp.stage
    amount = opp.amount
    ref = await attempt_reference(apis.store, key, "DW")
    saga = Saga("deal")
    won = await saga.run(
        "crm.close_won",
        lambda: crm.set_opportunity_stage(opp.id, OpportunityStage.CLOSED_WON),
        lambda _: crm.set_opportunity_stage(opp.id, previous),
    )
    invoice = await saga.run(
        "billing.create_invoice",
        lambda: apis.systems.billing.create_invoice(
            bill_to.id,
            [amount],
            opp.currency,
            order_ref=f"deal:{opp.id}",
            idempotency_key=ref,
            description=f"Deal {opp.name}",
        ),
        lambda inv: apis.systems.billing.void_invoice(inv.id, idempotency_key=ref),
    )
    stopped = await _stop_nurture(apis, contact, known)
    result = CloseWonResult(opportunity=won, invoice=invoice, nurture_stopped=stopped)
    body = dump(result)
    response = StoredResponse(200, body)
    event = DomainEvent(
        type="deal.won",
        subject=opp.id,
        data={
            "opportunity_id": opp.id,
            "customer_id": contact.id,
            "invoice_id": invoice.id,
            "amount": str(amount),
            "currency": opp.currency,
        },
    )
    await saga.run(
        "publish",
        lambda: apis.store.commit(Outcome(idempotency_key=key, response=response, events=[event])),
    )
    return response


async def _stop_nurture(apis: ProcessApis, contact: Contact, known: dict[str, str]) -> bool:
    """The lead converted: leave the nurture list, become a customer, mark the CRM lead.

    Best effort after the money moved: a failure here is logged and reported as
    ``nurture_stopped: false`` (the ``deal.won`` event lets a subscriber finish it).
    """
    with step("marketing.stop_nurture"):
        try:
            marketing = apis.systems.marketing
            found = await marketing_contact(apis, contact, known)
            if found is not None:
                nurture = await marketing.find_list(NURTURE_LIST)
                if nurture is not None:
                    await marketing.remove_from_list(nurture.id, [found.id])
                await marketing.update_contact(found.id, lifecycle_stage="customer")
            lead = await apis.systems.crm.find_lead_by_email(contact.email)
            if lead is not None and lead.id is not None and lead.status is not LeadStatus.CONVERTED:
                await apis.systems.crm.set_lead_status(lead.id, LeadStatus.CONVERTED)
            return True
        except Exception as exc:  # best effort: reported in the answer, logged here
            log.warning("nurture not stopped", extra={"customer": contact.id, "error": repr(exc)})
            return False
