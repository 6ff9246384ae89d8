"""Deals closing, lead capture and ticket context through the whole gateway."""

from __future__ import annotations

import uuid
from typing import Any

from system_apis.models import InvoiceStatus, Opportunity, OpportunityStage
from system_apis.sandbox import seed
from tests.process.harness import Gw, assert_problem

OPEN_STAGES = {
    OpportunityStage.PROSPECTING,
    OpportunityStage.QUALIFICATION,
    OpportunityStage.PROPOSAL,
    OpportunityStage.NEGOTIATION,
}
_used: set[str] = set()


async def open_deal(gw: Gw) -> Opportunity:
    async for opp in gw.systems.crm.iter_opportunities():
        if opp.stage in OPEN_STAGES and opp.amount and opp.contact_id and opp.id not in _used:
            _used.add(opp.id)
            return opp
    raise AssertionError("the sandbox has no open deal left")


async def test_close_won_bills_and_replays(clean: Gw) -> None:
    opp = await open_deal(clean)
    status, headers, body = await clean.call("POST", f"/process/v1/deals/{opp.id}/close-won")
    assert status == 200, body
    s = clean.systems
    assert (await s.crm.get_opportunity(opp.id)).stage is OpportunityStage.CLOSED_WON
    invoice = await s.billing.get_invoice(body["invoice"]["id"])
    assert invoice.status is InvoiceStatus.OPEN and invoice.total == opp.amount
    assert body["nurture_stopped"] is True
    assert any(e["subject"] == opp.id for e in clean.outbox("deal.won"))
    status, headers, again = await clean.call("POST", f"/process/v1/deals/{opp.id}/close-won")
    assert status == 200 and again == body and headers["Idempotent-Replayed"] == "true"


async def test_close_won_billing_down_restores_the_stage(clean: Gw) -> None:
    opp = await open_deal(clean)
    await clean.sandbox.set_faults("billing", error_rate=1, paths=["/v1/invoices"])
    status, headers, body = await clean.call("POST", f"/process/v1/deals/{opp.id}/close-won")
    await clean.sandbox.clear_faults()
    assert_problem(status, headers, body, 503)
    assert "billing.create_invoice" in body["detail"] and "crm.close_won" in body["detail"]
    assert (await clean.systems.crm.get_opportunity(opp.id)).stage is opp.stage


async def test_close_won_unknown_and_closed_deals(clean: Gw) -> None:
    status, headers, body = await clean.call(
        "POST", f"/process/v1/deals/{seed.crm_ids().missing_deal}/close-won"
    )
    assert_problem(status, headers, body, 404)
    async for opp in clean.systems.crm.iter_opportunities():
        if opp.stage is OpportunityStage.CLOSED_LOST:
            status, headers, body = await clean.call(
                "POST", f"/process/v1/deals/{opp.id}/close-won"
            )
            assert_problem(status, headers, body, 409)
            break


def lead_body(**extra: Any) -> dict[str, Any]:
    return {
        "email": f"lead.{uuid.uuid4().hex[:8]}@prospect{uuid.uuid4().hex[:4]}.example.com",
        "first_name": "Lin",
        "last_name": "Lead",
        **extra,
    }


async def test_capture_lead_creates_scores_and_nurtures(clean: Gw) -> None:
    req = lead_body(company="Prospect Ltd", phone="+44 20 7946 0000")
    status, _, body = await clean.call("POST", "/process/v1/leads", json=req)
    assert status == 201, body
    s = clean.systems
    lead = await s.crm.find_lead_by_email(req["email"])
    assert lead is not None and lead.id == body["lead"]["id"]
    assert 0 < body["score"] <= 100
    members = [m.id async for m in s.marketing.iter_list_members(body["nurture_list_id"])]
    assert body["marketing_contact_id"] in members
    status, headers, dup = await clean.call("POST", "/process/v1/leads", json=req)
    assert_problem(status, headers, dup, 409)


async def test_capture_lead_is_enriched_from_the_account(clean: Gw) -> None:
    account = seed.accounts()[7]
    req = lead_body()
    req["email"] = f"new.{uuid.uuid4().hex[:8]}@{account.domain}"
    status, _, body = await clean.call("POST", "/process/v1/leads", json=req)
    assert status == 201, body
    assert body["account_id"] == account.crm_id
    assert body["lead"]["company"] == account.name


async def test_capture_lead_for_a_customer_is_409(clean: Gw) -> None:
    p = seed.people()[30]
    status, headers, body = await clean.call(
        "POST", "/process/v1/leads", json={"email": p.email, "first_name": "a", "last_name": "b"}
    )
    assert_problem(status, headers, body, 409)


async def test_invalid_lead_creates_nothing(clean: Gw) -> None:
    req = lead_body(first_name="")
    status, headers, body = await clean.call("POST", "/process/v1/leads", json=req)
    assert_problem(status, headers, body, 422)
    assert body["errors"][0]["path"] == "first_name"
    assert await clean.systems.crm.find_lead_by_email(req["email"]) is None
    assert await clean.systems.marketing.find_contact_by_email(req["email"]) is None


async def test_ticket_context(clean: Gw) -> None:
    page = await clean.systems.support.tickets_page(limit=5)
    ticket = page.items[0]
    status, _, body = await clean.call("GET", f"/process/v1/tickets/{ticket.id}/context")
    assert status == 200, body
    assert body["ticket"]["id"] == ticket.id and body["requester"]["id"] == ticket.requester_id
    assert body["customer_id"] and body["partial"] is False
    await clean.sandbox.set_faults("billing", error_rate=1)
    status, _, body = await clean.call("GET", f"/process/v1/tickets/{ticket.id}/context")
    assert status == 200 and body["unavailable"] == ["billing"], body
    status, headers, body = await clean.call("GET", "/process/v1/tickets/999999999/context")
    assert_problem(status, headers, body, 404)
