"""The marketing system API against the HubSpot-style sandbox over real HTTP, plus its mapping."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from system_apis.config import BACKEND_NAMES, BackendConfig
from system_apis.errors import (
    BackendAuthFailed,
    BackendConflict,
    BackendNotFound,
    BackendRejected,
    BadBackendData,
)
from system_apis.http.common import InvalidInput
from system_apis.http.marketing import routes
from system_apis.marketing import (
    MarketingClient,
    contact_from_vendor,
    contact_to_vendor,
    email_send_from_vendor,
    engagement_from_events,
    existing_contact_id,
    list_from_vendor,
    template_id,
)
from system_apis.models import MarketingContact
from system_apis.sandbox import seed
from system_apis.sandbox.marketing import FIRST_NEW_ID, LIFECYCLE_STAGES, PORTAL, Portal


def config(token: str = "pat-sandbox-marketing") -> BackendConfig:
    return BackendConfig.model_validate(
        {
            "sandbox": True,
            "auth": {
                "kind": "api_key",
                "header": "Authorization",
                "prefix": "Bearer ",
                "key": token,
            },
            "retry": {"max_attempts": 2, "base_delay_s": 0.01},
        }
    )


@pytest.fixture
async def client(clean_sandbox: Any) -> AsyncIterator[MarketingClient]:
    c = MarketingClient(config(), base_url=clean_sandbox.url("marketing"))
    await c.start()
    yield c
    await c.close()


def portal(sandbox: Any) -> Portal:
    return sandbox.sandbox.runners[BACKEND_NAMES.index("marketing")].app[PORTAL]


def unique_email() -> str:
    return f"mkt-{uuid.uuid4().hex[:12]}@example.org"


# --- pure mapping ----------------------------------------------------------------------------

V3 = {
    "id": "5001",
    "properties": {
        "email": "ada@example.com",
        "firstname": "Ada",
        "lastname": "Lovelace",
        "lifecyclestage": "lead",
        "hubspotscore": "42",
        "trellis_crm_id": "003TR0000000000001",
        "createdate": "2025-01-01T00:00:00.000Z",
        "hs_object_id": "5001",
    },
    "createdAt": "2025-01-01T00:00:00.000Z",
    "updatedAt": "2025-01-01T00:00:00.000Z",
    "archived": False,
}


def test_contact_from_vendor_types_string_properties() -> None:
    c = contact_from_vendor(V3)
    assert c == MarketingContact(
        id="5001",
        email="ada@example.com",
        first_name="Ada",
        last_name="Lovelace",
        lifecycle_stage="lead",
        lead_score=42,
        crm_contact_id="003TR0000000000001",
    )
    blank = {**V3, "properties": {**V3["properties"], "hubspotscore": "", "lastname": None}}
    c = contact_from_vendor(blank)
    assert c.lead_score is None and c.last_name is None


@pytest.mark.parametrize(
    ("props", "field"),
    [
        ({"hubspotscore": "high"}, "properties.hubspotscore"),
        ({"hubspotscore": 42}, "properties.hubspotscore"),
        ({"hubspotscore": "4.5"}, "properties.hubspotscore"),
        ({"firstname": 7}, "properties.firstname"),
        ({"email": None}, "properties.email"),
    ],
)
def test_contact_from_vendor_bad_property(props: dict[str, Any], field: str) -> None:
    raw = {**V3, "properties": {**V3["properties"], **props}}
    with pytest.raises(BadBackendData) as exc:
        contact_from_vendor(raw)
    assert (exc.value.backend, exc.value.record, exc.value.field) == ("marketing", "5001", field)


def test_contact_from_vendor_bad_shape() -> None:
    with pytest.raises(BadBackendData) as exc:
        contact_from_vendor({"properties": {}})
    assert exc.value.field == "id"
    with pytest.raises(BadBackendData) as exc:
        contact_from_vendor({"id": "5001", "properties": "x"})
    assert (exc.value.record, exc.value.field) == ("5001", "properties")
    with pytest.raises(BadBackendData):
        contact_from_vendor([V3])


def test_contact_to_vendor_renames_and_never_sends_the_score() -> None:
    c = MarketingContact(
        id="1", email="a@b.co", first_name="A", lead_score=99, crm_contact_id="003X"
    )
    assert contact_to_vendor(c) == {
        "properties": {"email": "a@b.co", "firstname": "A", "trellis_crm_id": "003X"}
    }
    # Round trip through the vendor shape keeps every mapped field.
    back = contact_from_vendor({"id": "1", "properties": contact_to_vendor(c)["properties"]})
    assert back == c.model_copy(update={"lead_score": None})


def test_list_send_and_helpers_mapping() -> None:
    lst = list_from_vendor({"listId": "2", "name": "Nurture", "size": 10})
    assert (lst.id, lst.name, lst.size) == ("2", "Nurture", 10)
    found = list_from_vendor(
        {"listId": "2", "name": "Nurture", "additionalProperties": {"hs_list_size": "10"}}
    )
    assert found == lst
    with pytest.raises(BadBackendData) as exc:
        list_from_vendor({"listId": "2", "name": "Nurture", "size": "10"})
    assert (exc.value.record, exc.value.field) == ("2", "size")
    with pytest.raises(BadBackendData) as exc:
        list_from_vendor(
            {"listId": "2", "name": "N", "additionalProperties": {"hs_list_size": "ten"}}
        )
    assert exc.value.field == "additionalProperties.hs_list_size"
    with pytest.raises(BadBackendData) as exc:
        list_from_vendor({"listId": 2, "name": "Nurture"})  # v3 ids are strings
    assert exc.value.field == "listId"
    send = email_send_from_vendor({"statusId": "s1", "status": "PENDING"}, "5001", "welcome")
    assert (send.id, send.status, send.contact_id) == ("s1", "queued", "5001")
    with pytest.raises(BadBackendData) as exc:
        email_send_from_vendor({"statusId": "s1", "status": "LOST"}, "5001", "welcome")
    assert (exc.value.record, exc.value.field) == ("s1", "status")
    assert existing_contact_id("Contact already exists. Existing ID: 5123") == "5123"
    assert existing_contact_id("conflict") is None
    assert template_id("welcome") == 1001 and template_id("1003") == 1003
    with pytest.raises(ValueError):
        template_id("nope")


def test_engagement_from_events() -> None:
    t0, t1 = 1_750_000_000_000, 1_750_000_100_000
    events = [
        {"id": "e1", "type": "SENT", "created": t0},
        {"id": "e2", "type": "DELIVERED", "created": t0 + 1},
        {"id": "e3", "type": "OPEN", "created": t1},
        {"id": "e4", "type": "CLICK", "created": t0 + 5},
    ]
    e = engagement_from_events("5001", events)
    assert (e.emails_sent, e.opens, e.clicks) == (1, 1, 1)
    assert e.last_engaged_at == datetime.fromtimestamp(t1 / 1000, UTC)
    with pytest.raises(BadBackendData) as exc:
        engagement_from_events("5001", [{"id": "e9", "type": "OPEN", "created": "yesterday"}])
    assert (exc.value.record, exc.value.field) == ("e9", "created")
    with pytest.raises(BadBackendData) as exc:
        engagement_from_events("5001", [{"id": "e9", "created": t0}])
    assert exc.value.field == "type"


# --- contacts --------------------------------------------------------------------------------


async def test_get_contact_matches_seed(client: MarketingClient) -> None:
    person = seed.people()[0]
    c = await client.get_contact(str(person.marketing_contact_id))
    assert (c.email, c.first_name, c.last_name) == (
        person.email,
        person.first_name,
        person.last_name,
    )
    assert c.crm_contact_id == person.crm_contact_id
    assert c.lifecycle_stage in LIFECYCLE_STAGES
    assert isinstance(c.lead_score, int) and 0 <= c.lead_score <= 100
    assert await client.lead_score(c.id) == c.lead_score


async def test_find_contact_by_email(client: MarketingClient) -> None:
    person = seed.people()[41]
    found = await client.find_contact_by_email(person.email.upper())
    assert found is not None and found.id == str(person.marketing_contact_id)
    assert await client.find_contact_by_email(unique_email()) is None


async def test_iter_contacts_walks_every_page(client: MarketingClient) -> None:
    ids = [int(c.id) async for c in client.iter_contacts(page_size=37)]
    assert len(ids) == len(set(ids))
    seeded = [i for i in ids if i < FIRST_NEW_ID]  # others' tests may have created more
    assert seeded == [p.marketing_contact_id for p in seed.people()]


async def test_contacts_page_cursor(client: MarketingClient) -> None:
    first = await client.contacts_page(None, 5)
    assert [c.id for c in first.items] == ["5001", "5002", "5003", "5004", "5005"]
    assert first.next_cursor is not None
    second = await client.contacts_page(first.next_cursor, 5)
    assert second.items[0].id == "5006"


async def test_create_update_and_conflict(client: MarketingClient) -> None:
    email = unique_email()
    created = await client.create_contact(
        email, "Hedy", "Lamarr", crm_contact_id="003TEST", lifecycle_stage="lead"
    )
    assert int(created.id) >= FIRST_NEW_ID
    assert (created.email, created.first_name, created.lifecycle_stage) == (email, "Hedy", "lead")
    assert created.lead_score is None  # calculated by the vendor; none yet

    got = await client.get_contact(created.id)
    assert got == created
    assert (await client.find_contact_by_email(email)) == created

    with pytest.raises(BackendConflict) as exc:
        await client.create_contact(email.upper(), "Other", "Person")
    assert existing_contact_id(exc.value.detail) == created.id

    updated = await client.update_contact(created.id, lifecycle_stage="customer", last_name="L.")
    assert (updated.lifecycle_stage, updated.last_name, updated.email) == (
        "customer",
        "L.",
        email,
    )
    assert (await client.get_contact(created.id)).lifecycle_stage == "customer"

    with pytest.raises(BackendRejected) as rej:
        await client.update_contact(created.id, lifecycle_stage="champion")
    assert rej.value.upstream_status == 400
    with pytest.raises(BackendConflict):
        await client.update_contact(created.id, email=seed.people()[0].email)


async def test_not_found(client: MarketingClient) -> None:
    with pytest.raises(BackendNotFound):
        await client.get_contact("99999999")
    with pytest.raises(BackendNotFound):
        await client.update_contact("99999999", first_name="X")
    with pytest.raises(BackendNotFound):
        [c async for c in client.iter_list_members("999")]


async def test_bad_credentials(clean_sandbox: Any) -> None:
    c = MarketingClient(config("pat-wrong"), base_url=clean_sandbox.url("marketing"))
    await c.start()
    try:
        with pytest.raises(BackendAuthFailed) as exc:
            await c.get_contact("5001")
        assert exc.value.status == 502  # our misconfiguration, not the caller's
    finally:
        await c.close()
    async with httpx.AsyncClient() as http:
        r = await http.get(clean_sandbox.url("marketing") + "/crm/v3/objects/contacts")
    body = r.json()
    assert r.status_code == 401 and body["category"] == "INVALID_AUTHENTICATION"
    assert body["message"].startswith("Authentication credentials not found")
    assert body["status"] == "error" and body["correlationId"]


async def test_malformed_body_is_bad_backend_data(
    client: MarketingClient, clean_sandbox: Any
) -> None:
    await clean_sandbox.set_faults("marketing", malformed_rate=1)
    with pytest.raises(BadBackendData):
        await client.get_contact("5001")
    with pytest.raises(BadBackendData):
        await client.lists()


# --- lists -----------------------------------------------------------------------------------


async def test_lists_and_member_paging(client: MarketingClient) -> None:
    lists = await client.lists()
    names = {lst.name for lst in lists}
    assert {"Newsletter", "Nurture"} <= names
    newsletter = await client.find_list("Newsletter")
    assert newsletter is not None and newsletter.size is not None
    assert await client.find_list("No such list") is None
    members = [int(c.id) async for c in client.iter_list_members(newsletter.id, page_size=23)]
    assert len(members) == len(set(members)) == newsletter.size > 100
    assert members == sorted(members)
    assert all(m % 2 == 0 for m in members if m < FIRST_NEW_ID)  # the seed's rule


async def test_add_and_remove_members(client: MarketingClient) -> None:
    lst = await client.find_list("Webinar Attendees")
    assert lst is not None
    contact = await client.create_contact(unique_email(), "Rasmus", "Lerdorf")

    added = await client.add_to_list(lst.id, [contact.id, "99999999"])
    assert added.updated == [contact.id] and added.invalid == ["99999999"]
    again = await client.add_to_list(lst.id, [contact.id])
    assert again.updated == [] and again.discarded == [contact.id]
    assert contact.id in [c.id async for c in client.iter_list_members(lst.id)]

    removed = await client.remove_from_list(lst.id, [contact.id])
    assert removed.updated == [contact.id]
    assert (await client.remove_from_list(lst.id, [contact.id])).discarded == [contact.id]
    assert contact.id not in [c.id async for c in client.iter_list_members(lst.id)]


# --- email -----------------------------------------------------------------------------------


async def test_engagement_summarises_every_page(
    client: MarketingClient, clean_sandbox: Any
) -> None:
    # A seed contact with a rich history, chosen from the sandbox's own (deterministic) events.
    state = portal(clean_sandbox)
    person = max(seed.people()[:50], key=lambda p: len(state.events_of(p.email)))
    events = state.events_of(person.email)
    assert len(events) > 6
    small = await client.engagement(person.email, page_size=3)  # several pages
    whole = await client.engagement(person.email, page_size=1000)
    assert small == whole
    assert small.contact_id == str(person.marketing_contact_id)
    assert small.emails_sent == sum(e["type"] == "SENT" for e in events)
    assert small.opens == sum(e["type"] == "OPEN" for e in events)
    assert small.clicks == sum(e["type"] == "CLICK" for e in events)
    with pytest.raises(BackendNotFound):
        await client.engagement(unique_email())


async def test_send_email_is_visible_in_engagement(client: MarketingClient) -> None:
    contact = await client.create_contact(unique_email(), "Lynn", "Conway")
    before = await client.engagement(contact.email, contact.id)
    assert before.emails_sent == 0
    send = await client.send_email(contact.id, "welcome")
    assert send.status == "queued" and send.id and send.contact_id == contact.id
    by_email = await client.send_email(contact.email, "1002")
    assert by_email.contact_id == contact.id
    after = await client.engagement(contact.email)
    assert after.emails_sent == 2
    # Sending to an address with no contact creates one, as HubSpot does.
    stranger = unique_email()
    created = await client.send_email(stranger, "newsletter")
    assert (await client.get_contact(created.contact_id)).email == stranger
    with pytest.raises(BackendRejected):
        await client.send_email(contact.id, "999")


# --- canonical HTTP views --------------------------------------------------------------------


@pytest.fixture
async def api(client: MarketingClient) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=[Mount("/system/v1/marketing", routes=routes(client))])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gw/system/v1/marketing"
    ) as http:
        yield http


async def test_views_contacts(api: httpx.AsyncClient) -> None:
    ids: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "100", **({"cursor": cursor} if cursor else {})}
        body = (await api.get("/contacts", params=params)).json()
        ids += [c["id"] for c in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert sum(int(i) < FIRST_NEW_ID for i in ids) == seed.PEOPLE
    person = seed.people()[2]
    found = (await api.get("/contacts", params={"email": person.email})).json()["items"]
    assert [c["id"] for c in found] == [str(person.marketing_contact_id)]

    email = unique_email()
    r = await api.post("/contacts", json={"email": email, "first_name": "A", "last_name": "B"})
    assert r.status_code == 201
    cid = r.json()["id"]
    assert (await api.get(f"/contacts/{cid}")).json()["email"] == email
    eng = (await api.get(f"/contacts/{cid}/engagement")).json()
    assert eng == {
        "contact_id": cid,
        "emails_sent": 0,
        "opens": 0,
        "clicks": 0,
        "last_engaged_at": None,
    }
    with pytest.raises(InvalidInput) as exc:
        await api.post("/contacts", json={"email": "not-an-email", "first_name": "A"})
    assert {e["path"] for e in exc.value.errors} == {"email", "last_name"}


async def test_views_lists_and_emails(api: httpx.AsyncClient) -> None:
    lists = (await api.get("/lists")).json()["items"]
    nurture = next(lst for lst in lists if lst["name"] == "Nurture")
    email = unique_email()
    cid = (
        await api.post("/contacts", json={"email": email, "first_name": "A", "last_name": "B"})
    ).json()["id"]
    r = await api.post(f"/lists/{nurture['id']}/members", json={"contact_ids": [cid]})
    assert r.status_code == 200 and r.json()["updated"] == [cid]
    r = await api.delete(f"/lists/{nurture['id']}/members/{cid}")
    assert r.status_code == 200 and r.json()["updated"] == [cid]
    with pytest.raises(BackendNotFound):
        await api.delete(f"/lists/{nurture['id']}/members/{cid}")

    r = await api.post("/emails", json={"contact_id": cid, "template": "welcome"})
    assert r.status_code == 202 and r.json()["status"] == "queued"
    assert (await api.get(f"/contacts/{cid}/engagement")).json()["emails_sent"] == 1
    with pytest.raises(InvalidInput):
        await api.post("/emails", json={"contact_id": cid, "template": "no-such-template"})
