"""The HubSpot CRM client against its sandbox over real HTTP, and its pure mapping."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from system_apis.errors import (
    BackendAuthFailed,
    BackendConflict,
    BackendNotFound,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    BadBackendData,
)
from system_apis.http.common import InvalidInput
from system_apis.hubspot_crm import (
    LEAD_STATUS_FROM_VENDOR,
    LEAD_STATUS_TO_VENDOR,
    STAGE_FROM_VENDOR,
    STAGE_TO_VENDOR,
    TASK_STATUS_FROM_VENDOR,
    AccountCreate,
    ContactCreate,
    HubSpotCrmClient,
    account_from_vendor,
    account_to_vendor,
    batch_associations,
    contact_from_vendor,
    contact_to_vendor,
    date_to_vendor,
    lead_from_vendor,
    lead_to_vendor,
    opportunity_from_vendor,
    task_from_vendor,
    task_to_vendor,
)
from system_apis.models import Activity, Lead, LeadStatus, OpportunityStage
from system_apis.sandbox import seed
from system_apis.sandbox.hubspot_crm import STAGES, company_id, contact_id
from tests.system.hubspot_crm.conftest import HubSpotSandbox, config


def unique_email(kind: str = "t") -> str:
    return f"{kind}-{uuid.uuid4().hex[:12]}@client.example.com"


# --- pure mapping ----------------------------------------------------------------------------

RAW_CONTACT: dict[str, Any] = {
    "id": "100001",
    "properties": {
        "email": "ada@example.com",
        "firstname": "Ada",
        "lastname": "Lovelace",
        "phone": "+1-555-100-1000",
        "jobtitle": "CEO",
        "erp_customer_number": "0000100001",
        "createdate": "2025-03-01T10:15:00.000Z",
        "lifecyclestage": "customer",
    },
    "createdAt": "2025-03-01T10:15:00.000Z",
    "updatedAt": "2025-03-01T10:15:00.000Z",
    "archived": False,
}


def with_props(raw: dict[str, Any], **props: Any) -> dict[str, Any]:
    return {**raw, "properties": {**raw["properties"], **props}}


def test_contact_from_vendor_renames_and_parses_dates() -> None:
    c = contact_from_vendor(RAW_CONTACT, "20001")
    assert (c.id, c.first_name, c.last_name, c.email, c.title) == (
        "100001",
        "Ada",
        "Lovelace",
        "ada@example.com",
        "CEO",
    )
    assert c.account_id == "20001" and c.erp_customer_number == "0000100001"
    assert c.created_at == datetime(2025, 3, 1, 10, 15, tzinfo=UTC)


def test_contact_to_vendor_is_the_inverse_rename() -> None:
    body = contact_to_vendor(contact_from_vendor(RAW_CONTACT, "20001"))
    assert "createdate" not in body and "hs_object_id" not in body
    assert body["jobtitle"] == "CEO" and body["erp_customer_number"] == "0000100001"
    assert contact_to_vendor({"title": "CTO"}) == {"jobtitle": "CTO"}
    with pytest.raises(ValueError, match="nickname"):
        contact_to_vendor({"nickname": "x"})


@pytest.mark.parametrize(
    ("field", "value"),
    [("email", None), ("lastname", 42), ("createdate", "yesterday"), ("createdate", 5)],
)
def test_bad_contact_names_record_and_vendor_field(field: str, value: Any) -> None:
    with pytest.raises(BadBackendData) as err:
        contact_from_vendor(with_props(RAW_CONTACT, **{field: value}))
    assert err.value.backend == "hubspot-crm"
    assert (err.value.record, err.value.field) == ("100001", field)


@pytest.mark.parametrize(
    "raw", [["not", "an", "object"], {"id": 5, "properties": {}}, {"id": "1", "properties": []}]
)
def test_a_record_without_id_or_properties_is_bad_data(raw: Any) -> None:
    with pytest.raises(BadBackendData):
        contact_from_vendor(raw)


RAW_DEAL: dict[str, Any] = {
    "id": "300001",
    "properties": {
        "dealname": "Deal",
        "dealstage": "presentationscheduled",
        "amount": "12345.67",
        "closedate": "2026-05-31T00:00:00.000Z",
        "deal_currency_code": None,
    },
}


def test_opportunity_mapping() -> None:
    o = opportunity_from_vendor(RAW_DEAL, "20001", "100001")
    assert o.stage is OpportunityStage.PROPOSAL
    assert o.amount == Decimal("12345.67") and o.currency == "USD"
    assert o.close_date == date(2026, 5, 31)
    assert (o.account_id, o.contact_id) == ("20001", "100001")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dealstage", "closed-maybe"),
        ("amount", "lots"),
        ("amount", "NaN"),
        ("amount", 12),
        ("closedate", "31/05"),
        ("closedate", "2026-05-31T00:00:00"),  # no time zone
    ],
)
def test_bad_deal_names_field(field: str, value: Any) -> None:
    with pytest.raises(BadBackendData) as err:
        opportunity_from_vendor(with_props(RAW_DEAL, **{field: value}))
    assert (err.value.record, err.value.field) == ("300001", field)


def test_vocabularies_cover_the_pipeline_and_both_ways() -> None:
    assert set(STAGE_FROM_VENDOR) == {s.id for s in STAGES}
    assert set(STAGE_TO_VENDOR) == set(OpportunityStage)
    for canon, vendor in STAGE_TO_VENDOR.items():
        assert STAGE_FROM_VENDOR[vendor] is canon
    assert set(LEAD_STATUS_TO_VENDOR) == set(LeadStatus) - {LeadStatus.CONVERTED}
    for canon, vendor in LEAD_STATUS_TO_VENDOR.items():
        assert LEAD_STATUS_FROM_VENDOR[vendor] is canon
    assert set(TASK_STATUS_FROM_VENDOR.values()) == {
        "not_started",
        "in_progress",
        "completed",
        "waiting",
        "deferred",
    }


def test_lead_mapping_both_ways() -> None:
    raw = {
        "id": "1000001",
        "properties": {
            "email": "pat@example.org",
            "firstname": "Pat",
            "lastname": "Prospect",
            "company": None,
            "phone": None,
            "lead_source": "Web",
            "hubspotscore": "42",
            "lifecyclestage": "lead",
            "hs_lead_status": "CONNECTED",
        },
    }
    lead = lead_from_vendor(raw)
    assert lead.status is LeadStatus.WORKING and lead.score == 42 and lead.source == "Web"
    body = lead_to_vendor(lead)
    assert body == {
        "email": "pat@example.org",
        "firstname": "Pat",
        "lastname": "Prospect",
        "lead_source": "Web",
        "lifecyclestage": "lead",
        "hs_lead_status": "IN_PROGRESS",
    }
    assert lead_from_vendor(with_props(raw, lifecyclestage="opportunity")).status is (
        LeadStatus.CONVERTED
    )
    assert lead_from_vendor(with_props(raw, hs_lead_status=None)).status is LeadStatus.NEW
    with pytest.raises(BadBackendData) as err:
        lead_from_vendor(with_props(raw, hs_lead_status="WARM"))
    assert err.value.field == "hs_lead_status"
    with pytest.raises(BadBackendData) as err:
        lead_from_vendor(with_props(raw, hubspotscore="4.5"))
    assert err.value.field == "hubspotscore"


def test_task_mapping() -> None:
    raw = {
        "id": "400001",
        "properties": {
            "hs_task_subject": "Call",
            "hs_task_status": "IN_PROGRESS",
            "hs_timestamp": "2026-01-02T00:00:00.000Z",
            "hs_task_body": None,
        },
    }
    task = task_from_vendor(raw, "100001", "20001")
    assert task.status == "in_progress" and task.due_date == date(2026, 1, 2)
    assert (task.contact_id, task.related_to_id) == ("100001", "20001")
    body = task_to_vendor(task)
    assert body["hs_task_status"] == "IN_PROGRESS"
    assert body["hs_timestamp"] == date_to_vendor(date(2026, 1, 2)) == "1767312000000"
    no_date = task_to_vendor(Activity(subject="x"), today=date(2026, 3, 4))
    assert no_date["hs_timestamp"] == date_to_vendor(date(2026, 3, 4))
    with pytest.raises(BadBackendData) as err:
        task_from_vendor(with_props(raw, hs_task_status="SLEEPING"))
    assert err.value.field == "hs_task_status"


def test_company_industry_and_domain() -> None:
    raw = {
        "id": "20001",
        "properties": {"name": "Acme", "domain": "www.acme.com", "industry": "COMPUTER_SOFTWARE"},
    }
    account = account_from_vendor(raw)
    assert (account.domain, account.industry) == ("acme.com", "Software")
    other = account_from_vendor(with_props(raw, industry="INFORMATION_TECHNOLOGY_AND_SERVICES"))
    assert other.industry == "Information Technology And Services"
    body = account_to_vendor(
        AccountCreate(name="A", domain="https://a.example/x", industry="Retail")
    )
    assert body == {"name": "A", "domain": "a.example", "industry": "RETAIL"}
    with pytest.raises(BadBackendData) as err:
        account_from_vendor(with_props(raw, name=None))
    assert err.value.field == "name"


def test_batch_associations_marks_the_primary() -> None:
    body = {
        "status": "COMPLETE",
        "results": [
            {
                "from": {"id": "300001"},
                "to": [
                    {"toObjectId": 20002, "associationTypes": [{"typeId": 341}]},
                    {"toObjectId": 20001, "associationTypes": [{"typeId": 341}, {"typeId": 5}]},
                ],
            }
        ],
    }
    assert batch_associations(body) == {"300001": [("20002", False), ("20001", True)]}
    with pytest.raises(BadBackendData):
        batch_associations({"results": [{"from": {"id": "1"}, "to": [{"toObjectId": True}]}]})


# --- against the sandbox ---------------------------------------------------------------------


async def test_get_contact_maps_the_seed(client: HubSpotCrmClient) -> None:
    p = seed.people()[6]
    c = await client.get_contact(str(contact_id(p.index)))
    assert (c.email, c.first_name, c.last_name, c.phone) == (
        p.email,
        p.first_name,
        p.last_name,
        p.phone,
    )
    assert c.account_id == str(company_id(p.account.index))
    assert c.erp_customer_number == p.erp_customer_number
    assert c.created_at is not None and c.created_at.tzinfo is not None


async def test_find_contact_and_account(client: HubSpotCrmClient) -> None:
    p = seed.people()[11]
    found = await client.find_contact_by_email(p.email.upper())
    assert found is not None and found.id == str(contact_id(p.index))
    assert found.account_id == str(company_id(p.account.index))
    assert await client.find_contact_by_email("nobody@nowhere.example") is None
    account = await client.find_account_by_domain(f"https://www.{p.account.domain}/about")
    assert account is not None and account.id == str(company_id(p.account.index))
    assert account.industry == p.account.industry
    assert await client.find_account_by_domain("nowhere.example") is None


async def test_contacts_page_walks_after_cursors(client: HubSpotCrmClient) -> None:
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await client.contacts_page(cursor, 250)  # more than HubSpot's 100: clamped
        assert len(page.items) <= 100
        seen += [c.id for c in page.items]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages >= 10
    assert len(seen) == len(set(seen))
    assert {str(contact_id(p.index)) for p in seed.people()} <= set(seen)
    with pytest.raises(InvalidInput):
        await client.contacts_page("../../__faults", 10)
    with pytest.raises(BackendRejected):
        await client.contacts_page("not-a-cursor", 10)  # well-formed, but HubSpot refuses it


async def test_iter_contacts_reaches_every_seed_contact(client: HubSpotCrmClient) -> None:
    seen = [c.id async for c in client.iter_contacts()]
    assert len(seen) == len(set(seen))
    assert {str(contact_id(p.index)) for p in seed.people()} <= set(seen)


async def test_create_and_update_contact_with_its_company(client: HubSpotCrmClient) -> None:
    account = await client.create_account(
        AccountCreate(name="Newco", domain="newco.example", industry="Software")
    )
    assert account.industry == "Software" and account.domain == "newco.example"
    email = unique_email()
    new = await client.create_contact(
        ContactCreate(email=email, first_name="New", last_name="Person", account_id=account.id)
    )
    assert new.account_id == account.id and new.created_at is not None
    changed = await client.update_contact(new.id, {"title": "CTO", "phone": "+1-555-000-0000"})
    assert (changed.title, changed.phone) == ("CTO", "+1-555-000-0000")
    with pytest.raises(BackendConflict):
        await client.create_contact(ContactCreate(email=email, first_name="A", last_name="B"))
    with pytest.raises(ValueError, match="account_id"):
        await client.update_contact(new.id, {"account_id": account.id})
    await client.set_account_status(account.id, "Paying")
    assert (await client.get_account(account.id)).status == "Paying"


async def test_unknown_and_malformed_ids_are_not_found(
    hubspot: HubSpotSandbox, client: HubSpotCrmClient
) -> None:
    with pytest.raises(BackendNotFound):
        await client.get_contact("999999999")
    before = await hubspot.control("GET", "/__stats")
    for bad in ("abc", "../__faults", "0", "12345678901234567890"):
        with pytest.raises(BackendNotFound):
            await client.get_contact(bad)
    assert await hubspot.control("GET", "/__stats") == before  # no call made


async def test_opportunities_of_an_account_and_stage_changes(client: HubSpotCrmClient) -> None:
    p = seed.people()[20]
    account = str(company_id(p.account.index))
    mine = [o async for o in client.iter_opportunities(account)]
    every = [o async for o in client.iter_opportunities()]
    assert len(every) == 600
    assert {o.id for o in mine} == {o.id for o in every if o.account_id == account}
    assert mine and all(o.contact_id for o in mine)
    deal = mine[0]
    won = await client.set_opportunity_stage(deal.id, OpportunityStage.CLOSED_WON)
    assert won.stage is OpportunityStage.CLOSED_WON and won.account_id == account
    assert (await client.get_opportunity(deal.id)).stage is OpportunityStage.CLOSED_WON


async def test_tasks_are_associated_with_contact_and_company(client: HubSpotCrmClient) -> None:
    p = seed.people()[30]
    cid, company = str(contact_id(p.index)), str(company_id(p.account.index))
    task = await client.create_task(
        Activity(
            subject="Call back",
            contact_id=cid,
            related_to_id=company,
            status="in_progress",
            due_date=date(2026, 6, 1),
            description="about the order",
        )
    )
    assert (task.contact_id, task.related_to_id) == (cid, company)
    assert (task.status, task.due_date) == ("in_progress", date(2026, 6, 1))
    tasks = [t async for t in client.iter_tasks(cid)]
    assert task in tasks
    with pytest.raises(BackendRejected):
        await client.create_task(Activity(subject="x", contact_id=cid, status="sleeping"))


async def test_leads_are_lead_stage_contacts(client: HubSpotCrmClient) -> None:
    email = unique_email("lead")
    lead = await client.create_lead(
        Lead(email=email, first_name="Pat", last_name="Prospect", company="P Co", source="Web")
    )
    assert lead.status is LeadStatus.NEW and lead.company == "P Co"
    assert await client.find_lead_by_email(email) == lead
    assert await client.find_contact_by_email(email) is None  # a lead, not yet a contact
    with pytest.raises(BackendConflict):
        await client.create_lead(Lead(email=email, first_name="P", last_name="Q"))
    working = await client.set_lead_status(lead.id, LeadStatus.WORKING)
    assert working.status is LeadStatus.WORKING
    converted = await client.set_lead_status(lead.id, LeadStatus.CONVERTED)
    assert converted.status is LeadStatus.CONVERTED
    assert await client.find_lead_by_email(email) is None
    contact = await client.find_contact_by_email(email)
    assert contact is not None and contact.id == lead.id


async def test_a_wrong_token_is_our_misconfiguration(hubspot: HubSpotSandbox) -> None:
    c = HubSpotCrmClient(config(token="pat-na1-wrong"), base_url=hubspot.url)
    await c.start()
    try:
        with pytest.raises(BackendAuthFailed) as err:
            await c.get_contact(str(contact_id(1)))
        assert err.value.backend == "hubspot-crm"
        assert c.stats.by_status == {401: 1}  # a private-app token is not refreshed: no retry
    finally:
        await c.close()


async def test_429_is_retried_after_retry_after(
    hubspot: HubSpotSandbox, client: HubSpotCrmClient
) -> None:
    await hubspot.control("POST", "/__limits", {"per_window": 2, "window_s": 1.0})
    ids = [str(contact_id(i)) for i in (1, 2, 3)]
    got = [await client.get_contact(i) for i in ids]  # the third waits for the window
    assert [c.id for c in got] == ids
    assert client.stats.by_status.get(429, 0) >= 1
    assert client.stats.retries >= 1 and client.stats.failures == 0


async def test_a_create_refused_with_429_is_sent_again(
    hubspot: HubSpotSandbox, client: HubSpotCrmClient
) -> None:
    await hubspot.control("POST", "/__limits", {"per_window": 1, "window_s": 1.0})
    await client.get_account(str(company_id(1)))
    email = unique_email()
    new = await client.create_contact(ContactCreate(email=email, first_name="A", last_name="B"))
    assert new.email == email
    assert client.stats.by_status.get(429, 0) >= 1


async def test_a_retry_after_longer_than_allowed_fails_fast(hubspot: HubSpotSandbox) -> None:
    await hubspot.control("POST", "/__limits", {"per_window": 1, "window_s": 10.0})
    c = HubSpotCrmClient(config(retry={"max_retry_after_s": 2}), base_url=hubspot.url)
    await c.start()
    try:
        await c.get_account(str(company_id(1)))
        with pytest.raises(BackendUnavailable) as err:
            await c.get_account(str(company_id(2)))
        assert err.value.retry_after is not None and err.value.retry_after > 2
        assert c.stats.by_status == {200: 1, 429: 1}
    finally:
        await c.close()


async def test_a_stalled_hubspot_is_a_timeout(hubspot: HubSpotSandbox) -> None:
    await hubspot.control("POST", "/__faults", {"latency_ms": 2000})
    c = HubSpotCrmClient(
        config(
            timeouts={"connect_s": 0.5, "read_s": 0.2, "total_s": 0.3}, retry={"max_attempts": 1}
        ),
        base_url=hubspot.url,
    )
    await c.start()
    try:
        with pytest.raises(BackendTimeout):
            await c.get_contact(str(contact_id(1)))
    finally:
        await c.close()


async def test_garbage_from_hubspot_is_bad_data(hubspot: HubSpotSandbox) -> None:
    await hubspot.control("POST", "/__faults", {"malformed_rate": 1.0})
    c = HubSpotCrmClient(config(), base_url=hubspot.url)
    await c.start()
    try:
        with pytest.raises(BadBackendData):
            await c.get_contact(str(contact_id(1)))
    finally:
        await c.close()


async def test_the_sandbox_answers_what_the_client_sends(hubspot: HubSpotSandbox) -> None:
    """The search bodies the client builds are ones the sandbox (HubSpot's rules) accepts."""
    async with httpx.AsyncClient(
        base_url=hubspot.url, headers={"Authorization": "Bearer pat-na1-sandbox-hubspot-crm"}
    ) as h:
        r = await h.post(
            "/crm/v3/objects/contacts/search",
            json={
                "filterGroups": [],
                "properties": ["email"],
                "limit": 200,
                "sorts": [{"propertyName": "hs_object_id", "direction": "DESCENDING"}],
            },
        )
    ids = [int(x["id"]) for x in r.json()["results"]]
    assert ids == sorted(ids, reverse=True)
