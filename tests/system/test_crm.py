"""The CRM system API against the Salesforce-like sandbox over real HTTP, plus its pure mapping."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from system_apis.backend_auth import ClientCredentialsToken
from system_apis.config import BackendConfig
from system_apis.crm import (
    LEAD_STATUS_FROM_VENDOR,
    LEAD_STATUS_TO_VENDOR,
    STAGE_FROM_VENDOR,
    STAGE_TO_VENDOR,
    AccountCreate,
    ContactCreate,
    CrmClient,
    account_from_vendor,
    contact_from_vendor,
    contact_to_vendor,
    domain_from_website,
    lead_from_vendor,
    lead_to_vendor,
    opportunity_from_vendor,
    soql,
    soql_quote,
    task_from_vendor,
    task_to_vendor,
)
from system_apis.errors import (
    BackendConflict,
    BackendError,
    BackendNotFound,
    BackendRejected,
    BadBackendData,
)
from system_apis.http.common import InvalidInput
from system_apis.http.crm import routes
from system_apis.models import Activity, Lead, LeadStatus, OpportunityStage
from system_apis.sandbox import seed
from system_apis.sandbox.crm import STAGES, run_query, seed_state

pytestmark = pytest.mark.vendor_crm("salesforce")


def config(secret: str = "crm-sandbox-secret") -> BackendConfig:
    return BackendConfig.model_validate(
        {
            "sandbox": True,
            "auth": {
                "kind": "oauth_client_credentials",
                "token_url": "/services/oauth2/token",
                "client_id": "trellis-sandbox",
                "client_secret": secret,
            },
            "retry": {"max_attempts": 2, "base_delay_s": 0.01},
        }
    )


@pytest.fixture
async def client(clean_sandbox: Any) -> AsyncIterator[CrmClient]:
    c = CrmClient(config(), base_url=clean_sandbox.url("crm"))
    await c.start()
    yield c
    await c.close()


def unique_email(kind: str = "t") -> str:
    return f"{kind}-{uuid.uuid4().hex[:12]}@test.example.com"


def token_of(c: CrmClient) -> ClientCredentialsToken:
    assert isinstance(c.auth, ClientCredentialsToken)
    return c.auth


# --- pure mapping ----------------------------------------------------------------------------

RAW_CONTACT = {
    "attributes": {"type": "Contact", "url": "/services/data/v60.0/sobjects/Contact/003TR1"},
    "Id": "003TR0000000000001",
    "FirstName": "Ada",
    "LastName": "Lovelace",
    "Email": "ada@example.com",
    "Phone": "+1-555-100-1000",
    "Title": "CEO",
    "AccountId": "001TR0000000000001",
    "ERP_Customer_Number__c": "0000100001",
    "CreatedDate": "2025-03-01T10:15:00.000+0000",
}


def test_contact_from_vendor_renames_and_parses_dates() -> None:
    c = contact_from_vendor(RAW_CONTACT)
    assert (c.id, c.first_name, c.last_name, c.email) == (
        "003TR0000000000001",
        "Ada",
        "Lovelace",
        "ada@example.com",
    )
    assert c.account_id == "001TR0000000000001"
    assert c.erp_customer_number == "0000100001"
    assert c.created_at == datetime(2025, 3, 1, 10, 15, tzinfo=UTC)


def test_contact_to_vendor_is_the_inverse_rename() -> None:
    c = contact_from_vendor(RAW_CONTACT)
    body = contact_to_vendor(c)
    assert "Id" not in body and "CreatedDate" not in body
    assert body["Email"] == "ada@example.com"
    assert body["ERP_Customer_Number__c"] == "0000100001"
    assert contact_to_vendor({"title": "CTO"}) == {"Title": "CTO"}
    with pytest.raises(ValueError, match="nickname"):
        contact_to_vendor({"nickname": "x"})


@pytest.mark.parametrize(
    ("field", "value"),
    [("Email", None), ("LastName", 42), ("CreatedDate", "yesterday"), ("CreatedDate", 5)],
)
def test_bad_contact_names_record_and_vendor_field(field: str, value: Any) -> None:
    raw = {**RAW_CONTACT, field: value}
    with pytest.raises(BadBackendData) as err:
        contact_from_vendor(raw)
    assert err.value.backend == "crm"
    assert err.value.record == "003TR0000000000001"
    assert err.value.field == field


def test_missing_contact_field_and_non_object() -> None:
    raw = {k: v for k, v in RAW_CONTACT.items() if k != "FirstName"}
    with pytest.raises(BadBackendData) as err:
        contact_from_vendor(raw)
    assert err.value.field == "FirstName"
    with pytest.raises(BadBackendData):
        contact_from_vendor(["not", "a", "record"])


RAW_OPP = {
    "Id": "006TR0000000000001",
    "Name": "Deal",
    "AccountId": "001TR0000000000001",
    "Primary_Contact__c": "003TR0000000000001",
    "StageName": "Proposal/Price Quote",
    "Amount": 12345.67,
    "CloseDate": "2026-05-31",
    "IsWon": False,
}


def test_opportunity_mapping() -> None:
    o = opportunity_from_vendor(RAW_OPP)
    assert o.stage is OpportunityStage.PROPOSAL
    assert o.amount == Decimal("12345.67")
    assert o.close_date == date(2026, 5, 31)
    assert o.contact_id == "003TR0000000000001"


@pytest.mark.parametrize(
    ("field", "value"),
    [("StageName", "Closed Maybe"), ("Amount", "lots"), ("Amount", True), ("CloseDate", "31/05")],
)
def test_bad_opportunity_names_field(field: str, value: Any) -> None:
    with pytest.raises(BadBackendData) as err:
        opportunity_from_vendor({**RAW_OPP, field: value})
    assert (err.value.record, err.value.field) == ("006TR0000000000001", field)


def test_vocabularies_cover_both_ways() -> None:
    assert set(STAGE_FROM_VENDOR) == set(STAGES)
    assert set(STAGE_TO_VENDOR) == set(OpportunityStage)
    assert set(LEAD_STATUS_TO_VENDOR) == set(LeadStatus)
    for vendor, canon in LEAD_STATUS_FROM_VENDOR.items():
        assert LEAD_STATUS_TO_VENDOR[canon] == vendor


def test_lead_mapping_both_ways() -> None:
    raw = {
        "Id": "00QTR0000000000001",
        "FirstName": "Pat",
        "LastName": "Prospect",
        "Email": "pat@example.org",
        "Company": None,
        "Phone": None,
        "Status": "Working - Contacted",
        "LeadSource": "Web",
        "Lead_Score__c": 42.0,
    }
    lead = lead_from_vendor(raw)
    assert lead.status is LeadStatus.WORKING and lead.score == 42
    body = lead_to_vendor(lead)
    assert body["Status"] == "Working - Contacted"
    assert body["Company"] == "[not provided]"
    assert "Id" not in body
    with pytest.raises(BadBackendData) as err:
        lead_from_vendor({**raw, "Status": "Warm"})
    assert err.value.field == "Status"
    with pytest.raises(BadBackendData) as err:
        lead_from_vendor({**raw, "Lead_Score__c": 4.5})
    assert err.value.field == "Lead_Score__c"


def test_task_mapping() -> None:
    raw = {
        "Id": "00TTR0000000000001",
        "Subject": "Call",
        "WhatId": None,
        "WhoId": "003TR0000000000001",
        "Status": "In Progress",
        "ActivityDate": "2026-01-02",
        "Description": None,
    }
    task = task_from_vendor(raw)
    assert task.status == "in_progress" and task.due_date == date(2026, 1, 2)
    assert task_to_vendor(task)["Status"] == "In Progress"
    assert task_to_vendor(task)["ActivityDate"] == "2026-01-02"
    with pytest.raises(BadBackendData) as err:
        task_from_vendor({**raw, "Status": "Sleeping"})
    assert err.value.field == "Status"


def test_account_website_becomes_domain() -> None:
    assert domain_from_website("https://www.Acme.com/about") == "acme.com"
    assert domain_from_website("acme.com") == "acme.com"
    assert domain_from_website(None) is None
    raw = {"Id": "001TR0000000000001", "Name": "Acme", "Website": "http://www.acme.com"}
    assert account_from_vendor(raw).domain == "acme.com"
    with pytest.raises(BadBackendData) as err:
        account_from_vendor({**raw, "Name": None})
    assert err.value.field == "Name"


def test_soql_values_are_escaped_and_cannot_inject() -> None:
    assert soql_quote("O'Brien\\") == "'O\\'Brien\\\\'"
    hostile = "x' OR Email != 'y"
    state = seed_state()
    cursor = run_query(state, soql("Contact", {"Id": "id"}, Email=hostile), 200)
    assert cursor.ids == []
    person = seed.people()[0]
    cursor = run_query(state, soql("Contact", {"Id": "id"}, Email=person.email.upper()), 200)
    assert cursor.ids == [person.crm_contact_id]


# --- against the sandbox ---------------------------------------------------------------------


async def test_get_contact_maps_the_seed(client: CrmClient) -> None:
    p = seed.people()[6]
    c = await client.get_contact(p.crm_contact_id)
    assert (c.email, c.first_name, c.last_name, c.phone) == (
        p.email,
        p.first_name,
        p.last_name,
        p.phone,
    )
    assert c.account_id == p.account.crm_id
    assert c.erp_customer_number == p.erp_customer_number
    assert c.created_at is not None and c.created_at.tzinfo is not None


async def test_find_contact_by_email(client: CrmClient) -> None:
    p = seed.people()[11]
    found = await client.find_contact_by_email(p.email)
    assert found is not None and found.id == p.crm_contact_id
    assert await client.find_contact_by_email("nobody@nowhere.example") is None
    assert await client.find_contact_by_email("x' OR Email != 'y") is None


async def test_iter_contacts_follows_next_records_url_to_the_end(client: CrmClient) -> None:
    seen = [c.id async for c in client.iter_contacts()]
    assert len(seen) == len(set(seen))
    assert {p.crm_contact_id for p in seed.people()} <= set(seen)


async def test_contacts_page_walks_query_locators(client: CrmClient) -> None:
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await client.contacts_page(cursor, 150)
        assert len(page.items) <= 150
        seen += [c.id for c in page.items]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages >= 7
    assert {p.crm_contact_id for p in seed.people()} <= set(seen)
    assert len(seen) == len(set(seen))
    with pytest.raises(InvalidInput):
        await client.contacts_page("../../__faults", 10)
    with pytest.raises(BackendRejected):
        await client.contacts_page("DEADBEEF-10", 10)  # well-formed but unknown locator


async def test_token_is_cached_and_refreshed_once_after_revocation(client: CrmClient) -> None:
    p = seed.people()[0]
    for _ in range(5):
        await client.get_contact(p.crm_contact_id)
    assert token_of(client).fetches == 1
    async with httpx.AsyncClient() as h:
        await h.post(client.base_url + "/__tokens/revoke-all")
    c = await client.get_contact(p.crm_contact_id)
    assert c.id == p.crm_contact_id
    assert token_of(client).fetches == 2
    assert client.stats.by_status.get(401) == 1


async def test_api_without_token_answers_invalid_session(clean_sandbox: Any) -> None:
    async with httpx.AsyncClient() as h:
        r = await h.get(
            clean_sandbox.url("crm") + "/services/data/v60.0/query?q=SELECT Id FROM Lead"
        )
    assert r.status_code == 401
    assert r.json()[0]["errorCode"] == "INVALID_SESSION_ID"


async def test_bad_credentials_are_a_typed_error(clean_sandbox: Any) -> None:
    c = CrmClient(config(secret="wrong"), base_url=clean_sandbox.url("crm"))
    await c.start()
    try:
        with pytest.raises(BackendError) as err:
            await c.get_contact(seed.people()[0].crm_contact_id)
        assert err.value.backend == "crm"
        assert "token" in err.value.detail
    finally:
        await c.close()


async def test_not_found(client: CrmClient) -> None:
    with pytest.raises(BackendNotFound):
        await client.get_contact(seed.crm_id("003", 99_999_999))
    with pytest.raises(BackendNotFound):
        await client.get_contact("../sobjects/Account/001TR0000000000001")
    with pytest.raises(BackendNotFound):
        await client.get_opportunity(seed.crm_id("006", 99_999_999))


async def test_malformed_body_is_bad_backend_data(client: CrmClient, clean_sandbox: Any) -> None:
    await client.get_contact(seed.people()[0].crm_contact_id)  # token fetched before the fault
    await clean_sandbox.set_faults("crm", malformed_rate=1, paths=["/services/data"])
    with pytest.raises(BadBackendData):
        await client.get_contact(seed.people()[1].crm_contact_id)
    with pytest.raises(BadBackendData):
        await client.find_contact_by_email(seed.people()[1].email)


async def test_create_update_and_duplicate_contact(client: CrmClient) -> None:
    email = unique_email("contact")
    account = seed.accounts()[3]
    new = ContactCreate(
        email=email, first_name="Grace", last_name="Hopper", account_id=account.crm_id
    )
    created = await client.create_contact(new)
    assert created.id.startswith("003TR") and len(created.id) == 18
    assert created.account_id == account.crm_id and created.created_at is not None
    found = await client.find_contact_by_email(email)
    assert found is not None and found.id == created.id

    with pytest.raises(BackendConflict):
        await client.create_contact(new.model_copy(update={"first_name": "Other"}))

    updated = await client.update_contact(created.id, {"title": "Rear Admiral", "phone": "+1-1"})
    assert (updated.title, updated.phone) == ("Rear Admiral", "+1-1")
    assert (await client.get_contact(created.id)).title == "Rear Admiral"

    other = seed.people()[2].email
    with pytest.raises(BackendConflict):
        await client.update_contact(created.id, {"email": other})


async def test_create_contact_validation_is_rejected(client: CrmClient) -> None:
    with pytest.raises(BackendRejected) as err:
        await client.create_contact(
            ContactCreate(email="not-an-email", first_name="A", last_name="B")
        )
    assert err.value.upstream_status == 400
    with pytest.raises(BackendRejected):
        await client.create_contact(
            ContactCreate(
                email=unique_email(), first_name="A", last_name="B", account_id="001TRnope0000000"
            )
        )


async def test_accounts(client: CrmClient) -> None:
    a = seed.accounts()[9]
    acct = await client.get_account(a.crm_id)
    assert (acct.name, acct.domain, acct.industry) == (a.name, a.domain, a.industry)
    found = await client.find_account_by_domain(f"https://www.{a.domain}/")
    assert found is not None and found.id == a.crm_id
    domain = f"{uuid.uuid4().hex[:10]}.example.net"
    created = await client.create_account(
        AccountCreate(name="Test Co", domain=domain, status="Prospect")
    )
    again = await client.find_account_by_domain(domain)
    assert again is not None and again.id == created.id and again.status == "Prospect"


async def test_opportunities_walk_and_stage_change(client: CrmClient) -> None:
    opps = [o async for o in client.iter_opportunities()]
    seed_ids = {seed.crm_id("006", i) for i in range(1, 601)}
    assert seed_ids <= {o.id for o in opps}
    assert any(o.stage is OpportunityStage.CLOSED_WON for o in opps)

    account_id = opps[0].account_id
    assert account_id is not None
    mine = [o async for o in client.iter_opportunities(account_id)]
    assert mine and all(o.account_id == account_id for o in mine)
    assert {o.id for o in mine} == {o.id for o in opps if o.account_id == account_id}

    target = next(o for o in opps if o.stage is not OpportunityStage.NEGOTIATION)
    changed = await client.set_opportunity_stage(target.id, OpportunityStage.NEGOTIATION)
    assert changed.stage is OpportunityStage.NEGOTIATION
    assert (await client.get_opportunity(target.id)).stage is OpportunityStage.NEGOTIATION


async def test_tasks(client: CrmClient) -> None:
    p = seed.people()[20]
    task = await client.create_task(
        Activity(
            subject="Follow up",
            contact_id=p.crm_contact_id,
            related_to_id=p.account.crm_id,
            status="not_started",
            due_date=date(2026, 12, 1),
        )
    )
    assert task.id and task.status == "not_started" and task.due_date == date(2026, 12, 1)
    assert task.id in {t.id async for t in client.iter_tasks(p.crm_contact_id)}
    with pytest.raises(BackendRejected):
        await client.create_task(Activity(subject="x", status="sleeping"))


async def test_leads(client: CrmClient) -> None:
    email = unique_email("lead")
    lead = await client.create_lead(
        Lead(email=email, first_name="Lee", last_name="Dee", company="Lead Co", score=10)
    )
    assert lead.id and lead.status is LeadStatus.NEW and lead.score == 10
    found = await client.find_lead_by_email(email)
    assert found is not None and found.id == lead.id
    assert lead.id is not None
    qualified = await client.set_lead_status(lead.id, LeadStatus.QUALIFIED)
    assert qualified.status is LeadStatus.QUALIFIED
    assert (await client.find_lead_by_email(email)) == qualified
    with pytest.raises(BackendConflict):
        await client.create_lead(Lead(email=email, first_name="A", last_name="B"))
    assert await client.find_lead_by_email(unique_email()) is None


async def test_sandbox_honours_batch_size_and_rejects_bad_soql(client: CrmClient) -> None:
    page = await client.contacts_page(None, 7)
    assert len(page.items) == 7 and page.next_cursor is not None
    nxt = await client.contacts_page(page.next_cursor, 7)
    assert len(nxt.items) == 7 and not {c.id for c in nxt.items} & {c.id for c in page.items}
    with pytest.raises(BackendRejected):
        await client.request("GET", "/services/data/v60.0/query", params={"q": "DROP TABLE"})
    with pytest.raises(BackendRejected) as err:
        await client.request(
            "GET", "/services/data/v60.0/query", params={"q": "SELECT Nope FROM Contact"}
        )
    assert "Nope" in err.value.detail


# --- HTTP views ------------------------------------------------------------------------------


@pytest.fixture
async def views(client: CrmClient) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=routes(client))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as h:
        yield h


async def test_views(views: httpx.AsyncClient) -> None:
    r = await views.get("/contacts", params={"limit": 3})
    assert r.status_code == 200
    body = r.json()
    assert len(body["items"]) == 3 and body["next_cursor"]
    r2 = await views.get("/contacts", params={"limit": 3, "cursor": body["next_cursor"]})
    assert r2.json()["items"][0]["id"] != body["items"][0]["id"]

    p = seed.people()[4]
    r = await views.get("/contacts", params={"email": p.email})
    assert [c["id"] for c in r.json()["items"]] == [p.crm_contact_id]
    r = await views.get(f"/contacts/{p.crm_contact_id}")
    assert r.json()["email"] == p.email

    email = unique_email("view")
    r = await views.post("/contacts", json={"email": email, "first_name": "V", "last_name": "W"})
    assert r.status_code == 201 and r.json()["email"] == email

    opp = seed.crm_id("006", 5)
    r = await views.post(f"/opportunities/{opp}/stage", json={"stage": "closed_won"})
    assert r.status_code == 200 and r.json()["stage"] == "closed_won"
    r = await views.get(f"/opportunities/{opp}")
    assert r.json()["stage"] == "closed_won"

    r = await views.get(f"/accounts/{p.account.crm_id}")
    assert r.json()["domain"] == p.account.domain

    lead_email = unique_email("viewlead")
    r = await views.post(
        "/leads", json={"email": lead_email, "first_name": "L", "last_name": "M", "company": "C"}
    )
    assert r.status_code == 201
    r = await views.get("/leads", params={"email": lead_email})
    assert r.json()["items"][0]["status"] == "new"

    r = await views.post("/tasks", json={"subject": "s", "contact_id": p.crm_contact_id})
    assert r.status_code == 201 and r.json()["status"] == "completed"


async def test_views_refuse_bad_input(views: httpx.AsyncClient) -> None:
    with pytest.raises(InvalidInput) as err:
        await views.get("/contacts", params={"cursor": "../../__faults"})
    assert err.value.errors[0]["path"] == "query/cursor"
    with pytest.raises(InvalidInput):
        await views.get("/contacts", params={"limit": 0})
    with pytest.raises(InvalidInput):
        await views.post(f"/opportunities/{seed.crm_id('006', 1)}/stage", json={"stage": "won"})
    with pytest.raises(InvalidInput):
        await views.get("/leads")


@pytest.mark.parametrize("bad", ["003TR0000000000001\n", "003TR000000000000\u0661"])
async def test_contact_ids_are_ascii_and_whole(client: CrmClient, bad: str) -> None:
    with pytest.raises(BackendNotFound):
        await client.get_contact(bad)
