"""The helpdesk against Zendesk's contract as Zendesk's Python client ``zenpy`` speaks it.

Zendesk publishes no machine-readable contract in a package; ``zenpy`` (its long-standing Python
client) is the reference: it drives the sandbox over HTTPS (it only speaks https) through users,
tickets, comments and the unified search (``/api/v2/search.json``), reads the absolute ``url``
of each record and the rate-limit headers it paces by; and our client's requests must be
requests zenpy also sends for the same operations.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import uuid
from pathlib import Path

import pytest
import requests
from zenpy import Zenpy
from zenpy.lib.api_objects import Ticket, User
from zenpy.lib.exception import RecordNotFoundException

from system_apis.config import BackendConfig
from system_apis.models import TicketStatus
from system_apis.sandbox import support as sandbox_support
from system_apis.support import SupportClient
from tests.egress.certs import PrivateCA
from tests.system.contracts.conftest import Backend, Recorded

EMAIL = sandbox_support.USERNAME.removesuffix("/token")


def _server_context(ca: PrivateCA) -> ssl.SSLContext:
    leaf = ca.issue("support.sandbox", ips=("127.0.0.1",))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(leaf.cert, leaf.key)
    return ctx


def _zenpy(backend: Recorded, ca: PrivateCA) -> tuple[Zenpy, requests.Session]:
    session = requests.Session()
    session.verify = str(ca.pem)
    session.trust_env = False  # REQUESTS_CA_BUNDLE or a proxy from the shell would win
    port = backend.url.rsplit(":", 1)[1]
    # zenpy builds https://<subdomain>.<domain>/api/v2: here https://127.0.0.1:<port>/api/v2
    client = Zenpy(
        subdomain="127",
        domain=f"0.0.1:{port}",
        email=EMAIL,
        token=sandbox_support.TOKEN,
        session=session,
        disable_cache=True,
    )
    return client, session


def _template(path: str) -> str:
    return re.sub(r"/\d+(?=[/.])", "/{id}", path)


@pytest.fixture
async def zendesk(recorded_backend: Backend, tmp_path: Path) -> tuple[Zenpy, Recorded, PrivateCA]:
    ca = PrivateCA(tmp_path)
    backend = await recorded_backend(sandbox_support.create_app(), _server_context(ca))
    client, _ = _zenpy(backend, ca)
    return client, backend, ca


async def test_zenpy_works_users_tickets_and_search_against_the_sandbox(
    zendesk: tuple[Zenpy, Recorded, PrivateCA],
) -> None:
    zp, backend, _ = zendesk
    email = f"zenpy-{uuid.uuid4().hex[:10]}@example.com"

    def flow() -> None:
        user = zp.users.create(User(name="Zen Py", email=email))
        assert user.email == email and user.url == f"{backend.url}/api/v2/users/{user.id}.json"
        audit = zp.tickets.create(
            Ticket(subject="Printer on fire", description="Smoke", requester_id=user.id)
        )
        ticket = zp.tickets(id=audit.ticket.id)
        assert ticket.subject == "Printer on fire" and ticket.requester_id == user.id
        assert ticket.url == f"{backend.url}/api/v2/tickets/{ticket.id}.json"
        ticket.status = "solved"
        zp.tickets.update(ticket)
        assert zp.tickets(id=ticket.id).status == "solved"
        assert [c.body for c in zp.tickets.comments(ticket=ticket.id)] == ["Smoke"]

        users = list(zp.search(type="user", email=email))
        assert [u.id for u in users] == [user.id]
        tickets = list(zp.search(type="ticket", requester=user.id))
        assert [t.id for t in tickets] == [ticket.id]
        assert [t.id for t in zp.search(type="ticket", requester=email)] == [ticket.id]
        everything = list(zp.search(email))  # no type: users and tickets alike
        assert {type(r).__name__ for r in everything} >= {"User"}
        with pytest.raises(RecordNotFoundException):
            zp.tickets(id=999_999_999)

    await asyncio.to_thread(flow)
    paths = {s.path for s in backend.sent}
    assert "/api/v2/search.json" in paths


async def test_search_pages_with_absolute_next_page_links(
    zendesk: tuple[Zenpy, Recorded, PrivateCA],
) -> None:
    zp, backend, _ = zendesk

    def page_through() -> int:
        return sum(1 for _ in zp.search(type="ticket", status="open"))

    count = await asyncio.to_thread(page_through)
    searches = [s for s in backend.sent if s.path == "/api/v2/search.json"]
    assert count > 100 and len(searches) >= 2  # zenpy followed next_page
    open_total = sum(
        1 for t in sandbox_support.seed_state().tickets.values() if t["status"] == "open"
    )
    assert count == min(open_total, sandbox_support.SEARCH_MAX_RESULTS)


async def test_every_answer_carries_zendesks_rate_limit_headers(
    zendesk: tuple[Zenpy, Recorded, PrivateCA],
) -> None:
    _, backend, ca = zendesk
    _, session = _zenpy(backend, ca)

    def get() -> requests.Response:
        session.auth = (sandbox_support.USERNAME, sandbox_support.TOKEN)
        return session.get(f"{backend.url}/api/v2/tickets.json", timeout=5)

    resp = await asyncio.to_thread(get)
    assert resp.status_code == 200
    limit, remaining = (
        int(resp.headers["X-Rate-Limit"]),
        int(resp.headers["X-Rate-Limit-Remaining"]),
    )
    assert 0 <= remaining < limit
    assert resp.headers["ratelimit-limit"] == str(limit)
    assert resp.headers["ratelimit-remaining"] == str(remaining)
    assert resp.json()["tickets"][0]["url"].startswith(f"{backend.url}/api/v2/tickets/")


async def test_our_client_sends_only_requests_zenpy_sends(
    recorded_backend: Backend, tmp_path: Path
) -> None:
    ca = PrivateCA(tmp_path)
    backend = await recorded_backend(sandbox_support.create_app(), _server_context(ca))
    zp, _ = _zenpy(backend, ca)
    email = f"both-{uuid.uuid4().hex[:10]}@example.com"
    config = BackendConfig.model_validate(
        {
            "base_url": backend.url,
            "tls": {"ca_bundle": str(ca.pem)},
            "auth": {
                "kind": "basic",
                "username": sandbox_support.USERNAME,
                "password": sandbox_support.TOKEN,
            },
            "retry": {"max_attempts": 1},
        }
    )
    ours = SupportClient(config, base_url=backend.url)
    await ours.start()
    try:
        user = await ours.create_user(email, "Both Clients")
        assert (await ours.find_user_by_email(email)) == user
        ticket = await ours.create_ticket(user.id, "Subject", "Body")
        await ours.get_ticket(ticket.id)
        await ours.set_ticket_status(ticket.id, TicketStatus.SOLVED)
        await ours.tickets_page(limit=10)
        await ours.user_tickets_page(user.id)
        await ours.comments_page(ticket.id)
    finally:
        await ours.close()
    ours_sent = list(backend.sent)
    backend.sent.clear()

    def vendor_client_does_the_same() -> None:
        created = zp.users.create(User(name="Zen", email=f"z-{email}"))
        list(zp.users.search(query=f"email:{email}"))
        audit = zp.tickets.create(Ticket(subject="S", description="B", requester_id=created.id))
        found = zp.tickets(id=audit.ticket.id)
        found.status = "solved"
        zp.tickets.update(found)
        next(iter(zp.tickets(cursor_pagination=10)))
        list(zp.users.requested(created.id))
        list(zp.tickets.comments(ticket=found.id))

    await asyncio.to_thread(vendor_client_does_the_same)
    vendor_forms = {(s.method, _template(s.path)) for s in backend.sent}
    vendor_params = {k for s in backend.sent for k, _ in s.query}
    for s in ours_sent:
        assert (s.method, _template(s.path)) in vendor_forms, (s.method, s.path, vendor_forms)
        assert {k for k, _ in s.query} <= vendor_params | {"page[after]"}, s.query
