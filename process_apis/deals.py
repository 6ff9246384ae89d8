"""Deals: closing one as won bills it, stops the nurture and announces ``deal.won``.

Closing is idempotent per opportunity (the key is the deal itself): a retry or a second click
replays the first answer instead of billing twice. It runs in the saga log: a failure is undone
(stage back, invoice void) and the next request runs it again under a new reference.
"""

from __future__ import annotations

import logging
from typing import Any

from system_apis.errors import BackendConflict, BackendNotFound

from .customers import NURTURE_LIST, get_contact
from .durable import RECOVERY, Journal, Recovery, durable_once
from .errors import NotFound
from .models import CloseWonResult, Contact, InvoiceStatus, LeadStatus, OpportunityStage, dump
from .ports import DomainEvent, OperationRecord, Outcome, StoredResponse
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
    return await durable_once(
        apis.saga_log,
        "deal",
        key,
        "close-won",
        lambda journal: _close_won(apis, opportunity_id, key, journal),
        apis.durable,
        rerun_failed=True,
    )


async def _close_won(
    apis: ProcessApis, opportunity_id: str, key: str, journal: Journal
) -> StoredResponse:
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
    ref = "DW" + journal.reference
    saga = Saga("deal", journal)
    won = await saga.run(
        "crm.close_won",
        lambda: crm.set_opportunity_stage(opp.id, OpportunityStage.CLOSED_WON),
        lambda _: crm.set_opportunity_stage(opp.id, previous),
        intent={"opportunity_id": opp.id, "previous": previous.value},
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
        intent={"customer_id": bill_to.id, "order_ref": f"deal:{opp.id}", "reference": ref},
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

    async def publish() -> StoredResponse:
        await apis.store.commit(Outcome(idempotency_key=key, response=response, events=[event]))
        return response

    await saga.run("publish", publish, final=True)
    return response


# --- recovery from the saga log alone -------------------------------------------------------


async def _reopen(apis: ProcessApis, op: OperationRecord, record: dict[str, Any]) -> None:
    opp = await apis.systems.crm.get_opportunity(record["opportunity_id"])
    if opp.stage is OpportunityStage.CLOSED_WON:
        await apis.systems.crm.set_opportunity_stage(opp.id, OpportunityStage(record["previous"]))


async def _void(apis: ProcessApis, op: OperationRecord, record: dict[str, Any]) -> None:
    invoice = await apis.systems.billing.get_invoice(record["id"])
    if invoice.status is not InvoiceStatus.VOID:
        await apis.systems.billing.void_invoice(invoice.id, idempotency_key=record["reference"])


async def _find_invoice(
    apis: ProcessApis, op: OperationRecord, intent: dict[str, Any]
) -> dict[str, Any] | None:
    found = await apis.systems.billing.find_invoice_by_order_ref(
        intent["customer_id"], intent["order_ref"]
    )
    return None if found is None else found.model_dump(mode="json")


async def _stage_set(
    apis: ProcessApis, op: OperationRecord, intent: dict[str, Any]
) -> dict[str, Any] | None:
    """The stage change is undone by setting the previous stage back: always safe to do."""
    return {"id": intent["opportunity_id"]}


RECOVERY["deal"] = Recovery(
    undo={"crm.close_won": _reopen, "billing.create_invoice": _void},
    lookup={"crm.close_won": _stage_set, "billing.create_invoice": _find_invoice},
)


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
