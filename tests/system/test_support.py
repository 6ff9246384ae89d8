"""The support system API against the Zendesk-like sandbox over real HTTP, plus its mapping.

Includes the vendor's strict rate limit: the outbound pacer keeps a burst under it, and without
the pacer the client's Retry-After-aware retries absorb the 429s.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from functools import cache
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from system_apis.config import BackendConfig
from system_apis.errors import (
    BackendAuthFailed,
    BackendNotFound,
    BackendRejected,
    BackendUnavailable,
    BadBackendData,
)
from system_apis.http.support import routes
from system_apis.models import SupportUser, TicketPriority, TicketStatus
from system_apis.sandbox import seed
from system_apis.sandbox import support as vendor
from system_apis.support import (
    SupportClient,
    comment_from_vendor,
    cursor_page_from_vendor,
    ticket_from_vendor,
    ticket_to_vendor,
    user_from_vendor,
    user_to_vendor,
)

SEED_TICKETS = vendor.TICKETS


def config(
    password: str = "support-sandbox-token", paced: bool = True, max_attempts: int = 4
) -> BackendConfig:
    """The settings of config/backends.yaml; ``paced=False`` drops the outbound pacer."""
    data: dict[str, Any] = {
        "sandbox": True,
        "auth": {"kind": "basic", "username": "trellis@example.com/token", "password": password},
        "timeouts": {"connect_s": 2, "read_s": 5, "total_s": 8},
        "retry": {
            "max_attempts": max_attempts,
            "base_delay_s": 0.1,
            "max_delay_s": 2,
            "max_retry_after_s": 5,
        },
    }
    if paced:
        data["rate_limit"] = {"rate": 15, "period_s": 1, "burst": 2}
    return BackendConfig.model_validate(data)


async def make_client(sandbox: Any, **kwargs: Any) -> SupportClient:
    c = SupportClient(config(**kwargs), base_url=sandbox.url("support"))
    await c.start()
    return c


@pytest.fixture
async def client(clean_sandbox: Any) -> AsyncIterator[SupportClient]:
    c = await make_client(clean_sandbox)
    yield c
    await c.close()


@cache
def seed_state() -> vendor.SupportState:
    """The sandbox's own deterministic seed, rebuilt here to know the expected counts."""
    return vendor.seed_state()


async def ratelimit(sandbox: Any, per_second: int | None = None) -> dict[str, int]:
    if per_second is not None:  # also empties the sandbox's current window
        return dict(
            await sandbox.control("support", "POST", "/__ratelimit", {"per_second": per_second})
        )
    return dict(await sandbox.control("support", "GET", "/__ratelimit"))


def unique_email() -> str:
    return f"support-{uuid.uuid4().hex[:10]}@test.example.com"


# --- pure mapping ----------------------------------------------------------------------------

RAW_USER = {
    "id": 360000001,
    "name": "Ada Lovelace",
    "email": "ada@x.example",
    "external_id": "003A",
}
RAW_TICKET = {
    "id": 17,
    "requester_id": 360000001,
    "subject": "Broken",
    "description": "It broke.",
    "status": "hold",
    "priority": "high",
    "tags": ["vip"],
    "created_at": "2026-03-01T10:00:00Z",
    "updated_at": "2026-03-02T10:00:00Z",
}
RAW_COMMENT = {
    "id": 99,
    "author_id": 361000001,
    "body": "On it",
    "public": False,
    "created_at": "2026-03-01T11:00:00Z",
}


def test_user_mapping_both_ways() -> None:
    user = user_from_vendor(RAW_USER)
    assert user == SupportUser(
        id="360000001", name="Ada Lovelace", email="ada@x.example", crm_contact_id="003A"
    )
    body = user_to_vendor(user.email, user.name, user.crm_contact_id)
    assert body["user"]["external_id"] == "003A" and body["user"]["email"] == "ada@x.example"


def test_ticket_mapping_canonicalises_hold_and_times() -> None:
    t = ticket_from_vendor(RAW_TICKET)
    assert t.id == "17" and t.requester_id == "360000001"
    assert t.status is TicketStatus.PENDING  # hold -> pending
    assert t.priority is TicketPriority.HIGH and t.tags == ["vip"]
    assert t.created_at is not None and t.created_at.utcoffset() is not None
    assert ticket_from_vendor({**RAW_TICKET, "priority": None}).priority is None
    out = ticket_to_vendor("360000001", "Hi", "Body", TicketPriority.URGENT, ["a"])["ticket"]
    assert out == {
        "subject": "Hi",
        "comment": {"body": "Body", "public": True},
        "requester_id": 360000001,
        "priority": "urgent",
        "tags": ["a"],
    }
    with pytest.raises(ValueError):
        ticket_to_vendor("abc", "Hi", "Body")


def test_comment_mapping() -> None:
    c = comment_from_vendor(RAW_COMMENT, "17")
    assert c.id == "99" and c.ticket_id == "17" and c.author_id == "361000001"
    assert c.public is False and c.body == "On it"


@pytest.mark.parametrize(
    ("mapper", "raw", "field"),
    [
        (user_from_vendor, {**RAW_USER, "email": None}, "email"),
        (user_from_vendor, {**RAW_USER, "external_id": 7}, "external_id"),
        (ticket_from_vendor, {**RAW_TICKET, "requester_id": "360000001"}, "requester_id"),
        (ticket_from_vendor, {**RAW_TICKET, "status": "archived"}, "status"),
        (ticket_from_vendor, {**RAW_TICKET, "priority": "meh"}, "priority"),
        (ticket_from_vendor, {k: v for k, v in RAW_TICKET.items() if k != "subject"}, "subject"),
        (ticket_from_vendor, {**RAW_TICKET, "tags": "vip"}, "tags"),
        (ticket_from_vendor, {**RAW_TICKET, "created_at": "yesterday"}, "created_at"),
        (ticket_from_vendor, {**RAW_TICKET, "updated_at": "2026-03-02T10:00:00"}, "updated_at"),
        (lambda r: comment_from_vendor(r, "17"), {**RAW_COMMENT, "public": "no"}, "public"),
    ],
)
def test_bad_vendor_data_names_record_and_field(
    mapper: Any, raw: dict[str, Any], field: str
) -> None:
    with pytest.raises(BadBackendData) as info:
        mapper(raw)
    assert info.value.backend == "support"
    assert info.value.record == str(raw["id"])
    assert info.value.field == field


def test_bad_ids_and_pages() -> None:
    with pytest.raises(BadBackendData) as info:
        ticket_from_vendor({**RAW_TICKET, "id": "17"})
    assert info.value.field == "id"
    with pytest.raises(BadBackendData) as info:
        cursor_page_from_vendor(
            {"tickets": [RAW_TICKET], "meta": {"has_more": True, "after_cursor": None}},
            "tickets",
            ticket_from_vendor,
        )
    assert info.value.field == "meta.after_cursor"
    with pytest.raises(BadBackendData):
        cursor_page_from_vendor(
            {"tickets": {}, "meta": {"has_more": False}}, "tickets", ticket_from_vendor
        )


# --- reads -----------------------------------------------------------------------------------


async def test_get_and_find_seed_user(client: SupportClient) -> None:
    p = seed.people()[4]
    user = await client.get_user(str(p.support_user_id))
    assert user == SupportUser(
        id=str(p.support_user_id), name=p.name, email=p.email, crm_contact_id=p.crm_contact_id
    )
    assert await client.find_user_by_email(p.email.upper()) == user
    assert await client.find_user_by_email(unique_email()) is None


async def test_iter_tickets_walks_the_cursor_to_the_end(client: SupportClient) -> None:
    tickets = [t async for t in client.iter_tickets()]
    ids = [int(t.id) for t in tickets]
    assert ids == sorted(set(ids))
    assert len([i for i in ids if i <= SEED_TICKETS]) == SEED_TICKETS
    statuses = {t.status for t in tickets}
    assert TicketStatus.PENDING in statuses and TicketStatus.CLOSED in statuses


async def test_ticket_pages_chain_without_overlap(client: SupportClient) -> None:
    first = await client.tickets_page(limit=5)
    assert [t.id for t in first.items] == ["1", "2", "3", "4", "5"]
    assert first.next_cursor is not None
    second = await client.tickets_page(first.next_cursor, limit=5)
    assert [t.id for t in second.items] == ["6", "7", "8", "9", "10"]
    with pytest.raises(ValueError):
        await client.tickets_page(limit=101)


async def test_user_tickets_and_comments_match_the_seed(client: SupportClient) -> None:
    state = seed_state()
    uid, expected = max(state.requested.items(), key=lambda kv: len(kv[1]))
    got = [t async for t in client.iter_user_tickets(str(uid), page_size=2)]
    assert [int(t.id) for t in got if int(t.id) <= SEED_TICKETS] == expected
    assert all(t.requester_id == str(uid) for t in got)
    ticket_id = expected[0]
    comments = [c async for c in client.iter_comments(str(ticket_id), page_size=1)]
    assert [int(c.id) for c in comments] == [c["id"] for c in state.comments[ticket_id]]
    assert comments[0].author_id == str(uid)
    one = await client.get_ticket(str(ticket_id))
    assert one.description == comments[0].body


async def test_not_found_is_typed(client: SupportClient) -> None:
    with pytest.raises(BackendNotFound):
        await client.get_ticket("999999999")
    with pytest.raises(BackendNotFound):
        await client.get_user("1")
    with pytest.raises(BackendNotFound):  # never sent: vendor ids are integers
        await client.get_ticket("../users/1")


async def test_bad_credentials_are_a_typed_error(clean_sandbox: Any) -> None:
    c = await make_client(clean_sandbox, password="wrong")
    try:
        with pytest.raises(BackendAuthFailed) as info:
            await c.get_ticket("1")
        assert info.value.backend == "support"
    finally:
        await c.close()


async def test_malformed_body_is_bad_backend_data(
    client: SupportClient, clean_sandbox: Any
) -> None:
    await clean_sandbox.set_faults("support", malformed_rate=1)
    with pytest.raises(BadBackendData):
        await client.get_ticket("1")


# --- writes ----------------------------------------------------------------------------------


async def test_created_user_is_visible_and_duplicates_are_refused(client: SupportClient) -> None:
    email = unique_email()
    user = await client.create_user(email, "New Person", crm_contact_id="003NEW")
    assert user.email == email and user.crm_contact_id == "003NEW"
    assert await client.get_user(user.id) == user
    assert await client.find_user_by_email(email) == user
    with pytest.raises(BackendRejected) as info:
        await client.create_user(email, "Someone Else")
    assert info.value.upstream_status == 422


async def test_ticket_lifecycle(client: SupportClient) -> None:
    user = await client.create_user(unique_email(), "Ticket Person")
    ticket = await client.create_ticket(
        user.id, "Printer on fire", "Smoke everywhere", TicketPriority.URGENT, ["Hardware"]
    )
    assert ticket.status is TicketStatus.NEW and ticket.priority is TicketPriority.URGENT
    assert ticket.tags == ["hardware"] and ticket.requester_id == user.id
    assert await client.get_ticket(ticket.id) == ticket
    assert [t.id async for t in client.iter_user_tickets(user.id)] == [ticket.id]
    comments = [c async for c in client.iter_comments(ticket.id)]
    assert [(c.body, c.author_id) for c in comments] == [("Smoke everywhere", user.id)]

    solved = await client.set_ticket_status(ticket.id, TicketStatus.SOLVED)
    assert solved.status is TicketStatus.SOLVED
    assert (await client.get_ticket(ticket.id)).status is TicketStatus.SOLVED
    with pytest.raises(BackendRejected):  # Zendesk never lets a ticket go back to new
        await client.set_ticket_status(ticket.id, TicketStatus.NEW)
    await client.set_ticket_status(ticket.id, TicketStatus.CLOSED)
    with pytest.raises(BackendRejected) as info:  # closed tickets are frozen
        await client.set_ticket_status(ticket.id, TicketStatus.OPEN)
    assert info.value.upstream_status == 422


async def test_ticket_for_unknown_requester_is_rejected(client: SupportClient) -> None:
    with pytest.raises(BackendRejected) as info:
        await client.create_ticket("123", "x", "y")
    assert info.value.upstream_status == 422


async def test_retried_ticket_create_makes_one_ticket(
    client: SupportClient, clean_sandbox: Any
) -> None:
    user = await client.create_user(unique_email(), "Retry Person")
    await clean_sandbox.set_faults("support", fail_next=1, error_statuses=[503])
    ticket = await client.create_ticket(user.id, "Once", "Only once please")
    assert client.stats.retries == 1
    assert [t.id async for t in client.iter_user_tickets(user.id)] == [ticket.id]


# --- the vendor's rate limit -----------------------------------------------------------------


@pytest.mark.slow  # paced in real time
async def test_pacer_keeps_a_burst_under_the_vendor_limit(clean_sandbox: Any) -> None:
    before = await ratelimit(clean_sandbox, per_second=20)
    c = await make_client(clean_sandbox)
    try:
        results = await asyncio.gather(*(c.get_ticket(str(i)) for i in range(1, 61)))
    finally:
        await c.close()
    assert [t.id for t in results] == [str(i) for i in range(1, 61)]
    assert (await ratelimit(clean_sandbox))["throttled"] == before["throttled"]
    assert c.stats.retries == 0 and 429 not in c.stats.by_status


@pytest.mark.slow  # retried after real waits
async def test_without_pacer_a_burst_is_throttled_and_retried(clean_sandbox: Any) -> None:
    before = await ratelimit(clean_sandbox, per_second=20)
    c = await make_client(clean_sandbox, paced=False)
    try:
        results = await asyncio.gather(*(c.get_ticket(str(i)) for i in range(1, 61)))
    finally:
        await c.close()
    assert len(results) == 60
    throttled = (await ratelimit(clean_sandbox))["throttled"] - before["throttled"]
    assert throttled > 0
    assert c.stats.retries == throttled == c.stats.by_status[429]
    hits = await clean_sandbox.hits("support")
    assert sum(hits.values()) == 60 + c.stats.retries


@pytest.mark.slow  # waits out Retry-After
async def test_injected_429_waits_for_retry_after(
    client: SupportClient, clean_sandbox: Any
) -> None:
    await ratelimit(clean_sandbox, per_second=20)
    await clean_sandbox.set_faults("support", burst_429=1, retry_after_s=1)
    started = time.monotonic()
    ticket = await client.get_ticket("7")
    waited = time.monotonic() - started
    assert ticket.id == "7" and client.stats.retries == 1
    assert waited >= 0.95  # the vendor asked for a second; the client honoured it


async def test_long_retry_after_fails_fast(client: SupportClient, clean_sandbox: Any) -> None:
    await clean_sandbox.set_faults("support", burst_429=1, retry_after_s=30)
    with pytest.raises(BackendUnavailable) as info:
        await client.get_ticket("7")
    assert info.value.retry_after == 30
    assert client.stats.retries == 0
    assert sum((await clean_sandbox.hits("support")).values()) == 1


# --- canonical HTTP views --------------------------------------------------------------------


async def test_http_views(client: SupportClient) -> None:
    app = Starlette(routes=routes(client))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:
        r = await http.get("/tickets", params={"limit": 3})
        body = r.json()
        assert r.status_code == 200 and [t["id"] for t in body["items"]] == ["1", "2", "3"]
        r = await http.get("/tickets", params={"limit": 3, "cursor": body["next_cursor"]})
        assert [t["id"] for t in r.json()["items"]] == ["4", "5", "6"]

        email = unique_email()
        r = await http.post("/users", json={"email": email, "name": "View Person"})
        assert r.status_code == 201
        uid = r.json()["id"]
        assert (await http.get("/users", params={"email": email})).json()["items"][0]["id"] == uid
        r = await http.post(
            "/tickets", json={"requester_id": uid, "subject": "S", "body": "B", "priority": "low"}
        )
        assert r.status_code == 201
        tid = r.json()["id"]
        r = await http.patch(f"/tickets/{tid}", json={"status": "open"})
        assert r.json()["status"] == "open"
        assert (await http.get(f"/tickets/{tid}")).json()["status"] == "open"
        assert [t["id"] for t in (await http.get(f"/users/{uid}/tickets")).json()["items"]] == [tid]
        comments = (await http.get(f"/tickets/{tid}/comments")).json()["items"]
        assert [c["body"] for c in comments] == ["B"]


async def test_vendor_shapes_for_auth_limits_and_paging(clean_sandbox: Any) -> None:
    """The sandbox answers like Zendesk: its 401 and 429 bodies, Retry-After, page limits."""
    import aiohttp

    base = clean_sandbox.url("support") + "/api/v2"
    import base64

    def basic(user: str, password: str) -> dict[str, str]:
        return {
            "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        }

    auth = basic("trellis@example.com/token", "support-sandbox-token")
    await ratelimit(clean_sandbox, per_second=2)
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/tickets/1.json", headers=basic("x", "y")) as r:
                assert r.status == 401 and await r.json() == {"error": "Couldn't authenticate you"}
            async with s.get(f"{base}/tickets.json?page[size]=101", headers=auth) as r:
                assert r.status == 400
                assert (await r.json())["error"] == "InvalidPaginationParameter"
            async with s.get(f"{base}/tickets.json?page[size]=1", headers=auth) as r:
                assert r.status == 429 and (await r.json())["error"] == "APIRateLimitExceeded"
                assert int(r.headers["Retry-After"]) >= 1
    finally:
        await ratelimit(clean_sandbox, per_second=20)
