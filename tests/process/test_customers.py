"""Customers through the whole gateway: list, 360 (each backend failing in turn), onboarding."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from system_apis.erp import odata_filter
from system_apis.sandbox import seed
from tests import crm_swap
from tests.process.harness import Gw, assert_problem

PEOPLE = seed.people()


def new_email(tag: str) -> str:
    return f"{tag}.{uuid.uuid4().hex[:10]}@newco-{uuid.uuid4().hex[:6]}.example.com"


async def exists_anywhere(gw: Gw, email: str) -> dict[str, bool]:
    """Whether ``email`` exists in each backend that onboarding writes to."""
    s = gw.systems
    return {
        "crm": await s.crm.find_contact_by_email(email) is not None,
        "erp": await s.erp.find_customer_by_email(email) is not None,
        "billing": await s.billing.find_customer_by_email(email) is not None,
        "marketing": await s.marketing.find_contact_by_email(email) is not None,
    }


async def test_list_customers_pages_with_cursor(clean: Gw) -> None:
    status, _, first = await clean.call("GET", "/process/v1/customers?limit=3")
    assert status == 200, first
    assert len(first["items"]) == 3 and first["next_cursor"]
    status, _, second = await clean.call(
        "GET", f"/process/v1/customers?limit=3&cursor={first['next_cursor']}"
    )
    assert status == 200
    assert {c["id"] for c in first["items"]}.isdisjoint({c["id"] for c in second["items"]})
    assert first["items"][0]["system_ids"]["crm"] == first["items"][0]["id"]


async def test_list_customers_by_email_and_bad_cursor(clean: Gw) -> None:
    p = PEOPLE[10]
    status, _, body = await clean.call("GET", "/process/v1/customers", params={"email": p.email})
    assert status == 200
    assert [c["id"] for c in body["items"]] == [p.crm_contact_id]
    status, headers, body = await clean.call("GET", "/process/v1/customers?cursor=%27;DROP")
    assert_problem(status, headers, body, 400)
    status, headers, body = await clean.call("GET", "/process/v1/customers?limit=0")
    assert_problem(status, headers, body, 400)


async def test_customer_360_gathers_every_backend(clean: Gw) -> None:
    p = PEOPLE[1]
    status, _, body = await clean.call("GET", f"/process/v1/customers/{p.crm_contact_id}")
    assert status == 200, body
    assert body["partial"] is False and body["unavailable"] == []
    assert body["erp"]["customer"]["customer_number"] == p.erp_customer_number
    assert body["billing"]["customer"]["id"] == p.billing_customer_id
    assert body["support"]["user"]["id"] == str(p.support_user_id)
    assert body["marketing"]["contact"]["id"] == str(p.marketing_contact_id)
    assert body["account"]["id"] == p.account.crm_id
    assert body["customer"]["system_ids"] == {
        "crm": p.crm_contact_id,
        "erp": p.erp_customer_number,
        "billing": p.billing_customer_id,
        "support": str(p.support_user_id),
        "marketing": str(p.marketing_contact_id),
    }


@pytest.mark.parametrize("backend", ["erp", "billing", "support", "marketing"])
async def test_customer_360_is_partial_when_a_backend_fails(clean: Gw, backend: str) -> None:
    p = PEOPLE[2]
    await clean.sandbox.set_faults(backend, error_rate=1)
    status, _, body = await clean.call("GET", f"/process/v1/customers/{p.crm_contact_id}")
    assert status == 200, body
    assert body["partial"] is True and body["unavailable"] == [backend]
    assert body[backend] is None
    for other in {"erp", "billing", "support", "marketing"} - {backend}:
        assert body[other] is not None, other
    assert body["contact"]["email"] == p.email


async def test_customer_360_is_partial_when_a_backend_is_too_slow(clean: Gw) -> None:
    p = PEOPLE[3]
    await clean.sandbox.set_faults("support", latency_ms=1500)
    proc = clean.process
    before, proc.section_timeout_s = proc.section_timeout_s, 0.5
    try:
        status, _, body = await clean.call("GET", f"/process/v1/customers/{p.crm_contact_id}")
    finally:
        proc.section_timeout_s = before
    assert status == 200 and body["unavailable"] == ["support"], body


async def test_customer_360_is_503_when_crm_fails(clean: Gw) -> None:
    await clean.sandbox.set_faults("crm", error_rate=1)
    status, headers, body = await clean.call(
        "GET", f"/process/v1/customers/{PEOPLE[4].crm_contact_id}"
    )
    assert_problem(status, headers, body, 503)
    assert body["backend"] == "crm"


async def test_customer_360_unknown_is_404(clean: Gw) -> None:
    status, headers, body = await clean.call("GET", "/process/v1/customers/003TR9999999999999")
    assert_problem(status, headers, body, 404)
    status, headers, body = await clean.call("GET", "/process/v1/customers/not-an-id")
    assert_problem(status, headers, body, 404)


async def test_customer_routes_need_process_scopes(clean: Gw) -> None:
    status, headers, body = await clean.call(
        "GET", f"/process/v1/customers/{PEOPLE[1].crm_contact_id}", client="web-app"
    )
    assert_problem(status, headers, body, 403)
    status, headers, body = await clean.call("GET", "/process/v1/customers", client=None)
    assert_problem(status, headers, body, 401)


async def test_onboard_creates_the_customer_everywhere(clean: Gw) -> None:
    email = new_email("ada")
    req = {
        "email": email,
        "first_name": "Ada",
        "last_name": "Onboard",
        "company": "Newco",
        "phone": "+1 555 010 2030",
    }
    status, _, body = await clean.call("POST", "/process/v1/customers", json=req)
    assert status == 201, body
    ids = body["system_ids"]
    assert set(ids) == {"crm", "erp", "billing", "marketing"}
    assert body["id"] == ids["crm"] and body["company"] == "Newco"
    s = clean.systems
    contact = await s.crm.get_contact(ids["crm"])
    assert contact.email == email and contact.erp_customer_number == ids["erp"]
    assert (await s.erp.get_customer(ids["erp"])).crm_contact_id == ids["crm"]
    billing = await s.billing.get_customer(ids["billing"])
    assert billing.email == email and billing.crm_contact_id == ids["crm"]
    nurture = await s.marketing.find_list("Nurture")
    assert nurture is not None
    members = [m.id async for m in s.marketing.iter_list_members(nurture.id)]
    assert ids["marketing"] in members
    # the new customer has a 360 at once, and a second onboarding is a conflict
    status, _, view = await clean.call("GET", f"/process/v1/customers/{ids['crm']}")
    assert status == 200 and view["customer"]["system_ids"]["billing"] == ids["billing"]
    status, headers, dup = await clean.call("POST", "/process/v1/customers", json=req)
    assert_problem(status, headers, dup, 409)
    # the event was recorded in the outbox with the operation
    events = clean.outbox("customer.created")
    assert any(e["subject"] == ids["crm"] for e in events)


async def test_onboard_duplicate_of_seed_customer_is_409(clean: Gw) -> None:
    p = PEOPLE[20]
    req = {"email": p.email.upper(), "first_name": "X", "last_name": "Y"}
    status, headers, body = await clean.call("POST", "/process/v1/customers", json=req)
    assert_problem(status, headers, body, 409)


BAD_BODIES: list[tuple[str, Any, int]] = [
    ("malformed", b'{"email": "x@y.example.com", "first_name": ', 400),
    ("not-an-object", b"[1, 2]", 422),
    ("missing-last-name", {"first_name": "A"}, 422),
    ("bad-email", {"first_name": "A", "last_name": "B", "email": "not-an-email"}, 422),
    ("unknown-field", {"first_name": "A", "last_name": "B", "admin": True}, 422),
    ("empty-name", {"first_name": "", "last_name": "B"}, 422),
    ("bad-phone", {"first_name": "A", "last_name": "B", "phone": "call me"}, 422),
]


@pytest.mark.parametrize(
    ("case", "body", "expected"), BAD_BODIES, ids=[c for c, _, _ in BAD_BODIES]
)
async def test_onboard_bad_input_creates_nothing(
    clean: Gw, case: str, body: Any, expected: int
) -> None:
    email = new_email(case)
    if isinstance(body, dict):
        body = {"email": email, **body} if case != "bad-email" else body
        kw: dict[str, Any] = {"json": body}
    else:
        kw = {"data": body, "headers": {"Content-Type": "application/json"}}
    status, headers, problem = await clean.call("POST", "/process/v1/customers", **kw)
    assert_problem(status, headers, problem, expected)
    if expected == 422 and isinstance(body, dict):
        assert problem["errors"] and all("path" in e for e in problem["errors"])
    assert await exists_anywhere(clean, email) == dict.fromkeys(
        ("crm", "erp", "billing", "marketing"), False
    )
    hits = await clean.sandbox.hits("crm")
    assert f"POST {crm_swap.crm().contacts_path}" not in hits, hits


async def test_onboard_wrong_content_type_is_415(clean: Gw) -> None:
    status, headers, body = await clean.call(
        "POST", "/process/v1/customers", data="email=a@b.c", headers={"Content-Type": "text/plain"}
    )
    assert_problem(status, headers, body, 415)


async def test_onboard_failing_midway_names_the_step_and_resumes(clean: Gw) -> None:
    email = new_email("grace")
    req = {"email": email, "first_name": "Grace", "last_name": "Resume"}
    await clean.sandbox.set_faults("billing", error_rate=1, paths=["/v1/customers"])
    status, headers, body = await clean.call("POST", "/process/v1/customers", json=req)
    assert_problem(status, headers, body, 503)
    assert "billing.create_customer" in body["detail"]
    await clean.sandbox.clear_faults()
    state = await exists_anywhere(clean, email)
    assert state == {"crm": True, "erp": True, "billing": False, "marketing": False}
    status, _, body = await clean.call("POST", "/process/v1/customers", json=req)
    assert status == 200, body  # resumed, not created anew
    assert await exists_anywhere(clean, email) == dict.fromkeys(
        ("crm", "erp", "billing", "marketing"), True
    )
    erp_rows, _ = await clean.systems.erp._page(
        "Customers", "Customer", 0, 10, odata_filter({"SMTP_ADDR": email})
    )
    assert len(erp_rows) == 1  # the ERP step was not repeated
    status, headers, body = await clean.call("POST", "/process/v1/customers", json=req)
    assert_problem(status, headers, body, 409)
