"""The Crm role as the process layer sees it, on every CRM connector: ids, paging, not found.

Each connector's client runs as an instance named ``crm-eu`` against its own sandbox over real
HTTP; the same assertions hold for both, with the seed's records under each vendor's ids.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from system_apis.config import BackendConfig
from system_apis.connectors import get
from system_apis.errors import BackendNotFound, InvalidInput
from system_apis.models import LeadStatus, OpportunityStage
from system_apis.roles import Crm
from system_apis.sandbox import seed
from system_apis.sandbox.hubspot_crm import TOKEN
from system_apis.sandbox.server import make_backend_app
from tests.servers import free_port

INSTANCE = "crm-eu"
AUTH: dict[str, dict[str, Any]] = {
    "salesforce": {
        "kind": "oauth_client_credentials",
        "token_url": "/services/oauth2/token",
        "client_id": "trellis-sandbox",
        "client_secret": "crm-sandbox-secret",
    },
    "hubspot-crm": {
        "kind": "api_key",
        "header": "Authorization",
        "prefix": "Bearer ",
        "key": TOKEN,
    },
}
CONNECTORS = sorted(AUTH)


@pytest.fixture(scope="module", params=CONNECTORS)
async def role(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Crm, seed.CrmIds]]:
    """The connector's client as the ``crm-eu`` instance, its sandbox, and its seed ids."""
    connector: str = request.param
    runner = web.AppRunner(make_backend_app(INSTANCE, connector=connector), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    config = BackendConfig.model_validate(
        {"sandbox": True, "auth": AUTH[connector], "retry": {"max_attempts": 2}}
    )
    client = get(connector).make_client(config, f"http://127.0.0.1:{port}", INSTANCE)
    await client.start()
    try:
        assert isinstance(client, Crm)
        yield client, seed.CRM_IDS[connector]
    finally:
        await client.close()
        await runner.cleanup()


def other_vendors_ids(ids: seed.CrmIds) -> list[str]:
    return [other.contact(1) for other in seed.CRM_IDS.values() if other is not ids]


async def test_id_syntax_is_the_vendors(role: tuple[Crm, seed.CrmIds]) -> None:
    crm, ids = role
    person = seed.people()[4]
    contact = await crm.get_contact(ids.contact(person.index))
    assert contact.id == ids.contact(person.index) and contact.email == person.email
    assert crm.id_syntax.matches(contact.id)
    assert contact.account_id == ids.account(person.account.index)
    assert crm.id_syntax.matches(ids.missing_contact)
    for foreign in other_vendors_ids(ids):
        assert not crm.id_syntax.matches(foreign)
        with pytest.raises(BackendNotFound) as err:  # refused before any call
            await crm.get_contact(foreign)
        assert err.value.backend == INSTANCE


async def test_the_seed_deals_and_leads_are_the_same_on_every_crm(
    role: tuple[Crm, seed.CrmIds],
) -> None:
    crm, ids = role
    deal = seed.deals()[0]
    opp = await crm.get_opportunity(ids.deal(deal.index))
    assert opp.name == deal.name and opp.amount == deal.amount
    assert opp.stage is OpportunityStage(deal.stage)
    assert opp.contact_id == ids.contact(deal.person.index)
    assert opp.account_id == ids.account(deal.person.account.index)
    lead = seed.leads()[2]
    found = await crm.find_lead_by_email(lead.email)
    assert found is not None and found.id == ids.lead(lead.index)
    assert found.status is LeadStatus(lead.status) and found.company == lead.company


async def test_paging_hands_out_cursors_of_its_syntax(role: tuple[Crm, seed.CrmIds]) -> None:
    crm, _ = role
    seen: set[str] = set()
    cursor: str | None = None
    for _ in range(3):
        page = await crm.contacts_page(cursor, 20)
        assert page.items and page.next_cursor
        assert crm.cursor_syntax(page.next_cursor) == page.next_cursor
        ids = {c.id for c in page.items}
        assert ids.isdisjoint(seen)
        seen |= ids
        cursor = page.next_cursor
    with pytest.raises(InvalidInput) as bad:
        await crm.contacts_page("';DROP TABLE", 20)
    assert bad.value.status == 400


async def test_not_found_names_the_instance(role: tuple[Crm, seed.CrmIds]) -> None:
    crm, ids = role
    for call in (
        crm.get_contact(ids.missing_contact),
        crm.get_opportunity(ids.missing_deal),
        crm.get_contact("no such id!"),
    ):
        with pytest.raises(BackendNotFound) as err:
            await call
        assert err.value.backend == INSTANCE
        assert str(err.value).startswith(f"{INSTANCE}: ")
    assert await crm.find_contact_by_email("nobody@nowhere.example.com") is None
