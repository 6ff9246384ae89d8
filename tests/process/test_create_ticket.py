"""Opening a support ticket through the whole gateway: the ticket in the helpdesk, the
customer's helpdesk user found or created, ``ticket.created`` published and its subscriber's
internal history comment on the ticket."""

from __future__ import annotations

import uuid
from typing import Any

from process_apis.subscribers.lookup import marker
from system_apis.models import ContactCreate, TicketComment
from system_apis.sandbox import seed
from tests.eventually import eventually
from tests.process.harness import Gw, assert_problem

PEOPLE = seed.people()


def key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


def ticket_body(customer_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "subject": f"Parcel missing {uuid.uuid4().hex[:6]}",
        "body": "My parcel has not arrived.",
        **extra,
    }


def created_events(gw: Gw, ticket_id: str) -> list[dict[str, Any]]:
    return [e for e in gw.outbox("ticket.created") if e["subject"] == ticket_id]


async def history_comment(gw: Gw, ticket_id: str, event_id: str) -> TicketComment:
    """The ticket-customer-history subscriber's comment, once the bus has delivered it."""

    async def ours() -> list[TicketComment]:
        comments = [c async for c in gw.systems.support.iter_comments(ticket_id)]
        return [c for c in comments if marker(event_id) in c.body]

    found = await eventually(ours, timeout=20, interval=0.2, message="history comment")
    assert len(found) == 1, found
    return found[0]


async def test_ticket_for_a_known_customer(clean: Gw) -> None:
    p = PEOPLE[850]
    req = ticket_body(p.crm_contact_id, priority="high")
    status, headers, body = await clean.call("POST", "/process/v1/tickets", json=req, headers=key())
    assert status == 201, body
    assert "Idempotent-Replayed" not in headers
    ticket = await clean.systems.support.get_ticket(body["id"])
    assert ticket.requester_id == str(p.support_user_id)
    assert ticket.subject == req["subject"] and ticket.priority and ticket.priority.value == "high"
    assert body["requester_id"] == str(p.support_user_id) and body["status"] == ticket.status
    [event] = created_events(clean, ticket.id)
    assert event["data"]["ticket_id"] == ticket.id
    assert event["data"]["email"] == p.email
    assert event["data"]["requester_id"] == str(p.support_user_id)
    comment = await history_comment(clean, ticket.id, event["id"])
    assert comment.public is False and "Orders:" in comment.body and "Invoices:" in comment.body
    assert (await clean.process.store.xrefs(p.crm_contact_id))["support"] == str(p.support_user_id)


async def test_ticket_for_a_customer_without_a_helpdesk_user(clean: Gw) -> None:
    email = f"tk-{uuid.uuid4().hex[:10]}@example.com"
    contact = await clean.systems.crm.create_contact(
        ContactCreate(email=email, first_name="Tia", last_name="Ket")
    )
    support = clean.systems.support
    assert await support.find_user_by_email(email) is None
    status, _, body = await clean.call(
        "POST", "/process/v1/tickets", json=ticket_body(contact.id), headers=key()
    )
    assert status == 201, body
    user = await support.find_user_by_email(email)
    assert user is not None and user.crm_contact_id == contact.id
    assert body["requester_id"] == user.id
    assert [t.id for t in (await support.user_tickets_page(user.id)).items] == [body["id"]]
    assert (await clean.process.store.xrefs(contact.id))["support"] == user.id
    [event] = created_events(clean, body["id"])
    await history_comment(clean, body["id"], event["id"])


async def test_same_key_replays_one_ticket(clean: Gw) -> None:
    p = PEOPLE[851]
    req, hdr = ticket_body(p.crm_contact_id), key()
    status, _, first = await clean.call("POST", "/process/v1/tickets", json=req, headers=hdr)
    assert status == 201, first
    status, headers, again = await clean.call("POST", "/process/v1/tickets", json=req, headers=hdr)
    assert status == 201 and again == first and headers["Idempotent-Replayed"] == "true"
    page = await clean.systems.support.user_tickets_page(str(p.support_user_id), limit=100)
    assert [t.id for t in page.items if t.subject == req["subject"]] == [first["id"]]
    assert len(created_events(clean, first["id"])) == 1


async def test_helpdesk_down_then_retry_opens_one_ticket(clean: Gw) -> None:
    p = PEOPLE[852]
    req, hdr = ticket_body(p.crm_contact_id), key()
    await clean.sandbox.set_faults("support", error_rate=1, paths=["/api/v2/tickets.json"])
    status, headers, body = await clean.call("POST", "/process/v1/tickets", json=req, headers=hdr)
    await clean.sandbox.clear_faults()
    assert_problem(status, headers, body, 503)
    assert body["step"] == "support.create_ticket"
    status, _, ok = await clean.call("POST", "/process/v1/tickets", json=req, headers=hdr)
    assert status == 201, ok
    page = await clean.systems.support.user_tickets_page(str(p.support_user_id), limit=100)
    assert [t.id for t in page.items if t.subject == req["subject"]] == [ok["id"]]


BAD = [
    ({"subject": ""}, "subject"),
    ({"body": ""}, "body"),
    ({"priority": "whenever"}, "priority"),
    ({"cc": "boss@example.com"}, "cc"),
    ({"customer_id": "not an id"}, "customer_id"),
]


async def test_bad_bodies_and_unknown_customers_create_nothing(clean: Gw) -> None:
    p = PEOPLE[853]
    for patch, path in BAD:
        req = {**ticket_body(p.crm_contact_id), **patch}
        status, headers, body = await clean.call(
            "POST", "/process/v1/tickets", json=req, headers=key()
        )
        assert_problem(status, headers, body, 422)
        assert path in [e["path"] for e in body["errors"]], body
    req = ticket_body(seed.crm_ids().missing_contact)
    status, headers, body = await clean.call("POST", "/process/v1/tickets", json=req, headers=key())
    assert_problem(status, headers, body, 422)
    assert [e["path"] for e in body["errors"]] == ["customer_id"]
    status, headers, body = await clean.call(
        "POST", "/process/v1/tickets", json=ticket_body(p.crm_contact_id)
    )
    assert_problem(status, headers, body, 400)
    hits = await clean.sandbox.hits("support")
    assert not any(k.startswith("POST") for k in hits), hits
    page = await clean.systems.support.user_tickets_page(str(p.support_user_id), limit=100)
    assert not any(t.subject.startswith("Parcel missing") for t in page.items)


async def test_agent_desk_opens_a_ticket_and_scopes_hold(clean: Gw) -> None:
    p = PEOPLE[854]
    req = ticket_body(p.crm_contact_id)
    status, _, body = await clean.call(
        "POST", "/experience/support/v1/tickets", json=req, headers=key(), client="support-desk"
    )
    assert status == 201, body
    assert (await clean.systems.support.get_ticket(body["id"])).subject == req["subject"]
    assert len(created_events(clean, body["id"])) == 1
    status, headers, problem = await clean.call(
        "POST", "/process/v1/tickets", json=req, headers=key(), client="support-desk"
    )
    assert_problem(status, headers, problem, 403)
    status, headers, problem = await clean.call(
        "POST", "/experience/support/v1/tickets", json=req, headers=key(), client="web-app"
    )
    assert_problem(status, headers, problem, 403)
