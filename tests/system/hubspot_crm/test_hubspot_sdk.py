"""HubSpot's own Python SDK (``hubspot-api-client``) reads and writes the sandbox: its generated
models deserialise every answer, so the sandbox speaks HubSpot's shapes, not our guess of them.

The SDK is synchronous (urllib3): each call runs in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from hubspot import HubSpot
from hubspot.crm.contacts import (
    ApiException,
    Filter,
    FilterGroup,
    PublicObjectSearchRequest,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.deals import SimplePublicObjectInputForCreate as DealInput

from system_apis.sandbox import seed
from system_apis.sandbox.hubspot_crm import TOKEN, contact_id
from tests.system.hubspot_crm.conftest import HubSpotSandbox

T = TypeVar("T")


async def off_loop(call: Callable[[], T]) -> T:
    return await asyncio.to_thread(call)


def sdk(sandbox: HubSpotSandbox, token: str = TOKEN) -> HubSpot:
    return HubSpot(access_token=token, host=sandbox.url)


async def test_the_sdk_pages_reads_and_searches(hubspot: HubSpotSandbox) -> None:
    api = sdk(hubspot)
    page = await off_loop(lambda: api.crm.contacts.basic_api.get_page(limit=100))
    assert len(page.results) == 100
    after = page.paging.next.after
    second = await off_loop(lambda: api.crm.contacts.basic_api.get_page(limit=100, after=after))
    assert {c.id for c in page.results}.isdisjoint({c.id for c in second.results})
    p = seed.people()[2]
    one = await off_loop(
        lambda: api.crm.contacts.basic_api.get_by_id(
            str(contact_id(p.index)), properties=["email", "jobtitle"], associations=["companies"]
        )
    )
    assert one.properties["email"] == p.email
    assert one.associations["companies"].results[0].type == "contact_to_company"
    request = PublicObjectSearchRequest(
        filter_groups=[
            FilterGroup(filters=[Filter(property_name="email", operator="EQ", value=p.email)])
        ],
        properties=["email", "firstname"],
        limit=5,
    )
    found = await off_loop(lambda: api.crm.contacts.search_api.do_search(request))
    assert found.total == 1 and found.results[0].id == str(contact_id(p.index))


async def test_the_sdk_creates_reads_pipelines_and_associations(hubspot: HubSpotSandbox) -> None:
    api = sdk(hubspot)
    email = f"sdk-{uuid.uuid4().hex[:10]}@sdk.example.com"
    created = await off_loop(
        lambda: api.crm.contacts.basic_api.create(
            SimplePublicObjectInputForCreate(properties={"email": email, "firstname": "Sdk"})
        )
    )
    assert created.properties["email"] == email and created.created_at is not None
    deal = await off_loop(
        lambda: api.crm.deals.basic_api.create(
            DealInput(properties={"dealname": "SDK deal", "dealstage": "qualifiedtobuy"})
        )
    )
    pipelines = await off_loop(lambda: api.crm.pipelines.pipelines_api.get_all("deals"))
    stages = [s.id for s in pipelines.results[0].stages]
    assert deal.properties["dealstage"] in stages
    await off_loop(
        lambda: api.crm.associations.v4.basic_api.create_default(
            "deals", deal.id, "contacts", created.id
        )
    )
    links = await off_loop(
        lambda: api.crm.associations.v4.basic_api.get_page("deals", deal.id, "contacts")
    )
    assert [str(x.to_object_id) for x in links.results] == [created.id]
    assert links.results[0].association_types[0].type_id == 3


async def test_the_sdk_reads_hubspots_error_bodies(hubspot: HubSpotSandbox) -> None:
    api = sdk(hubspot)

    def refused(call: Callable[[], Any]) -> ApiException:
        with pytest.raises(ApiException) as err:
            call()
        return err.value

    missing = await off_loop(
        lambda: refused(lambda: api.crm.contacts.basic_api.get_by_id("999999999"))
    )
    assert missing.status == 404
    assert json.loads(missing.body)["category"] == "OBJECT_NOT_FOUND"
    invalid = await off_loop(
        lambda: refused(
            lambda: api.crm.contacts.basic_api.create(
                SimplePublicObjectInputForCreate(properties={"shoe_size": "9"})
            )
        )
    )
    assert invalid.status == 400
    assert json.loads(invalid.body)["errors"][0]["code"] == "PROPERTY_DOESNT_EXIST"
    wrong = sdk(hubspot, token="pat-na1-wrong")
    denied = await off_loop(lambda: refused(lambda: wrong.crm.contacts.basic_api.get_page()))
    assert denied.status == 401
    assert json.loads(denied.body)["category"] == "INVALID_AUTHENTICATION"
