"""The HubSpot CRM sandbox keeps HubSpot's published contract, over real HTTP: paging, search
and its limits, pipelines, associations, error bodies, 401 and the 429s of both rate limits."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from system_apis.sandbox import seed
from system_apis.sandbox.hubspot_crm import STAGES, company_id, contact_id
from tests.system.hubspot_crm.conftest import HubSpotSandbox

CONTACTS = "/crm/v3/objects/contacts"


def unique_email() -> str:
    return f"t-{uuid.uuid4().hex[:12]}@contract.example.com"


def assert_hubspot_error(r: httpx.Response, status: int, category: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body["status"] == "error"
    assert body["category"] == category
    assert isinstance(body["message"], str) and body["message"]
    uuid.UUID(body["correlationId"])
    return body


async def test_list_follows_paging_next_after_to_the_end(api: httpx.AsyncClient) -> None:
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 100}
        if after:
            params["after"] = after
        r = await api.get(CONTACTS, params=params)
        assert r.status_code == 200
        body = r.json()
        assert len(body["results"]) <= 100
        seen += [c["id"] for c in body["results"]]
        pages += 1
        nxt = body.get("paging", {}).get("next")
        if nxt is None:
            break
        after = nxt["after"]
        assert f"after={after}" in nxt["link"]
    assert pages >= 10
    assert len(seen) == len(set(seen))
    assert {str(contact_id(p.index)) for p in seed.people()} <= set(seen)


async def test_list_default_limit_and_properties_are_hubspots(api: httpx.AsyncClient) -> None:
    body = (await api.get(CONTACTS)).json()
    assert len(body["results"]) == 10
    first = body["results"][0]
    assert set(first) >= {"id", "properties", "createdAt", "updatedAt", "archived"}
    assert set(first["properties"]) == {
        "createdate",
        "email",
        "firstname",
        "hs_object_id",
        "lastmodifieddate",
        "lastname",
    }
    assert all(isinstance(v, str) for v in first["properties"].values())


@pytest.mark.parametrize("limit", ["0", "101", "ten"])
async def test_list_limit_past_100_is_a_validation_error(
    api: httpx.AsyncClient, limit: str
) -> None:
    assert_hubspot_error(await api.get(CONTACTS, params={"limit": limit}), 400, "VALIDATION_ERROR")


async def test_unknown_properties_are_refused_on_writes_ignored_on_reads(
    api: httpx.AsyncClient,
) -> None:
    r = await api.post(CONTACTS, json={"properties": {"email": unique_email(), "shoe_size": "9"}})
    body = assert_hubspot_error(r, 400, "VALIDATION_ERROR")
    assert body["errors"][0]["code"] == "PROPERTY_DOESNT_EXIST"
    assert body["errors"][0]["context"] == {"propertyName": ["shoe_size"]}
    r = await api.post(CONTACTS, json={"properties": {"hubspotscore": "100"}})
    assert (
        assert_hubspot_error(r, 400, "VALIDATION_ERROR")["errors"][0]["code"] == "READ_ONLY_VALUE"
    )
    r = await api.post(CONTACTS, json={"properties": {"lifecyclestage": "hot"}})
    assert assert_hubspot_error(r, 400, "VALIDATION_ERROR")["errors"][0]["code"] == "INVALID_OPTION"
    r = await api.post(CONTACTS, json={"properties": {"email": "not-an-email"}})
    assert assert_hubspot_error(r, 400, "VALIDATION_ERROR")["errors"][0]["code"] == "INVALID_EMAIL"
    r = await api.get(f"{CONTACTS}/{contact_id(1)}", params={"properties": "email,shoe_size"})
    assert r.status_code == 200
    assert "shoe_size" not in r.json()["properties"]


async def test_create_get_patch_archive(api: httpx.AsyncClient) -> None:
    email = unique_email()
    r = await api.post(CONTACTS, json={"properties": {"email": email, "firstname": "Ada"}})
    assert r.status_code == 201
    created = r.json()
    new_id = created["id"]
    assert created["properties"]["email"] == email and created["archived"] is False
    r = await api.patch(f"{CONTACTS}/{new_id}", json={"properties": {"jobtitle": "CTO"}})
    assert r.status_code == 200 and r.json()["properties"]["jobtitle"] == "CTO"
    r = await api.get(f"{CONTACTS}/{email}", params={"idProperty": "email"})
    assert r.status_code == 200 and r.json()["id"] == new_id
    assert assert_hubspot_error(
        await api.post(CONTACTS, json={"properties": {"email": email.upper()}}), 409, "CONFLICT"
    )["message"].endswith(new_id)
    assert (await api.delete(f"{CONTACTS}/{new_id}")).status_code == 204
    assert_hubspot_error(await api.get(f"{CONTACTS}/{new_id}"), 404, "OBJECT_NOT_FOUND")
    r = await api.get(f"{CONTACTS}/{new_id}", params={"archived": "true"})
    assert r.status_code == 200 and r.json()["archived"] is True
    assert_hubspot_error(
        await api.patch(f"{CONTACTS}/{new_id}", json={"properties": {"jobtitle": "x"}}),
        404,
        "OBJECT_NOT_FOUND",
    )


async def test_missing_and_malformed_ids_are_object_not_found(api: httpx.AsyncClient) -> None:
    assert_hubspot_error(await api.get(f"{CONTACTS}/999999999"), 404, "OBJECT_NOT_FOUND")
    assert_hubspot_error(await api.get(f"{CONTACTS}/abc"), 404, "OBJECT_NOT_FOUND")
    r = await api.post(CONTACTS, content=b"{not json", headers={"Content-Type": "application/json"})
    assert_hubspot_error(r, 400, "VALIDATION_ERROR")


async def search(api: httpx.AsyncClient, kind: str, body: dict[str, Any]) -> httpx.Response:
    return await api.post(f"/crm/v3/objects/{kind}/search", json=body)


async def test_search_filter_groups_and_paging(api: httpx.AsyncClient) -> None:
    a, b = seed.people()[3], seed.people()[4]
    r = await search(
        api,
        "contacts",
        {
            "filterGroups": [
                {"filters": [{"propertyName": "email", "operator": "EQ", "value": a.email}]},
                {"filters": [{"propertyName": "email", "operator": "EQ", "value": b.email}]},
            ],
            "properties": ["email", "jobtitle"],
        },
    )
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == 2
    assert {c["properties"]["email"] for c in body["results"]} == {a.email, b.email}
    assert "jobtitle" in body["results"][0]["properties"]
    assert "X-HubSpot-RateLimit-Max" not in r.headers  # search answers carry no such headers
    r = await search(api, "contacts", {"limit": 200, "after": "200"})
    page = r.json()
    assert len(page["results"]) == 200 and page["paging"]["next"]["after"] == "400"
    r = await search(
        api,
        "deals",
        {
            "filterGroups": [
                {
                    "filters": [
                        {
                            "propertyName": "associations.company",
                            "operator": "EQ",
                            "value": str(company_id(a.account.index)),
                        },
                        {"propertyName": "amount", "operator": "GTE", "value": "0"},
                    ]
                }
            ]
        },
    )
    assert r.status_code == 200 and r.json()["total"] >= 1


@pytest.mark.parametrize(
    "body",
    [
        {"limit": 201},
        {"limit": 200, "after": "9900"},  # past the 10,000 results a search returns
        {"filterGroups": [{"filters": []}] * 6},
        {
            "filterGroups": [
                {"filters": [{"propertyName": "email", "operator": "HAS_PROPERTY"}] * 7}
            ]
        },
        {
            "filterGroups": [
                {"filters": [{"propertyName": "email", "operator": "HAS_PROPERTY"}] * 6}
            ]
            * 4
        },  # 24 filters: more than 18 in all
        {
            "filterGroups": [
                {"filters": [{"propertyName": "shoe_size", "operator": "EQ", "value": "9"}]}
            ]
        },
        {
            "filterGroups": [
                {"filters": [{"propertyName": "email", "operator": "LIKE", "value": "a"}]}
            ]
        },
        {"sorts": [{"propertyName": "email"}, {"propertyName": "firstname"}]},
    ],
)
async def test_search_limits_are_validation_errors(
    hubspot: HubSpotSandbox, api: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    assert_hubspot_error(await search(api, "contacts", body), 400, "VALIDATION_ERROR")


async def test_deal_pipeline_and_its_stages(api: httpx.AsyncClient) -> None:
    body = (await api.get("/crm/v3/pipelines/deals")).json()
    (pipeline,) = body["results"]
    assert pipeline["id"] == "default"
    assert [s["id"] for s in pipeline["stages"]] == [s.id for s in STAGES]
    closed = {s["id"] for s in pipeline["stages"] if s["metadata"]["isClosed"] == "true"}
    assert closed == {"closedwon", "closedlost"}
    assert (await api.get("/crm/v3/pipelines/deals/default")).json()["label"] == "Sales Pipeline"
    assert_hubspot_error(await api.get("/crm/v3/pipelines/deals/other"), 404, "OBJECT_NOT_FOUND")
    r = await api.post(
        "/crm/v3/objects/deals",
        json={"properties": {"dealname": "x", "dealstage": "won-ish", "pipeline": "default"}},
    )
    assert assert_hubspot_error(r, 400, "VALIDATION_ERROR")["errors"][0]["code"] == "INVALID_OPTION"
    r = await api.post(
        "/crm/v3/objects/deals",
        json={"properties": {"dealname": "x", "dealstage": "closedwon", "amount": "12.5"}},
    )
    assert r.status_code == 201
    deal = (
        await api.get(
            f"/crm/v3/objects/deals/{r.json()['id']}",
            params={"properties": "hs_is_closed_won,pipeline"},
        )
    ).json()
    assert deal["properties"]["hs_is_closed_won"] == "true"
    assert deal["properties"]["pipeline"] == "default"


async def test_associations_on_create_and_through_v4(api: httpx.AsyncClient) -> None:
    company = company_id(7)
    r = await api.post(
        CONTACTS,
        json={
            "properties": {"email": unique_email()},
            "associations": [
                {
                    "to": {"id": company},
                    "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}],
                }
            ],
        },
    )
    assert r.status_code == 201
    cid = r.json()["id"]
    r = await api.get(f"/crm/v4/objects/contacts/{cid}/associations/companies")
    assert r.json()["results"] == [
        {
            "toObjectId": company,
            "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 279, "label": None}],
        }
    ]
    r = await api.get(
        f"/crm/v4/objects/companies/{company}/associations/contacts", params={"limit": 500}
    )
    assert int(cid) in [x["toObjectId"] for x in r.json()["results"]]
    deal = 300_001
    r = await api.put(f"/crm/v4/objects/contacts/{cid}/associations/default/deals/{deal}")
    assert r.status_code == 200 and r.json()["status"] == "COMPLETE"
    r = await api.get(f"{CONTACTS}/{cid}", params={"associations": "deals,companies"})
    links = r.json()["associations"]
    assert links["deals"]["results"] == [{"id": str(deal), "type": "contact_to_deal"}]
    assert links["companies"]["results"] == [
        {"id": str(company), "type": "contact_to_company_unlabeled"}
    ]
    buyer = str(contact_id(seed.deals()[0].person.index))
    r = await api.post(
        "/crm/v4/associations/contacts/deals/batch/read",
        json={"inputs": [{"id": cid}, {"id": buyer}]},
    )
    assert r.status_code == 200  # both have a deal
    assert [x["from"]["id"] for x in r.json()["results"]] == [cid, buyer]
    assert (
        await api.delete(f"/crm/v4/objects/contacts/{cid}/associations/deals/{deal}")
    ).status_code == 204
    r = await api.post(
        "/crm/v4/associations/contacts/deals/batch/read", json={"inputs": [{"id": cid}]}
    )
    assert r.status_code == 207
    assert r.json()["errors"][0]["subCategory"] == "crm.associations.NO_ASSOCIATIONS_FOUND"
    r = await api.post(
        CONTACTS,
        json={
            "properties": {"email": unique_email()},
            "associations": [
                {
                    "to": {"id": "999999999"},
                    "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}],
                }
            ],
        },
    )
    assert_hubspot_error(r, 400, "VALIDATION_ERROR")


async def test_without_a_valid_token_every_call_is_hubspots_401(hubspot: HubSpotSandbox) -> None:
    async with httpx.AsyncClient(base_url=hubspot.url) as h:
        r = await h.get(CONTACTS)
        body = assert_hubspot_error(r, 401, "INVALID_AUTHENTICATION")
        assert "Authentication credentials not found" in body["message"]
        r = await h.get(CONTACTS, headers={"Authorization": "Bearer pat-na1-wrong"})
        assert_hubspot_error(r, 401, "INVALID_AUTHENTICATION")
        r = await h.post(f"{CONTACTS}/search", json={}, headers={"Authorization": "Basic eDp5"})
        assert_hubspot_error(r, 401, "INVALID_AUTHENTICATION")


async def test_the_ten_second_rolling_limit_answers_429(
    hubspot: HubSpotSandbox, api: httpx.AsyncClient
) -> None:
    limits = await hubspot.control("GET", "/__limits")
    assert limits == {"per_window": 190, "window_s": 10.0, "search_per_second": 5}
    r = await api.get(CONTACTS)
    assert r.headers["X-HubSpot-RateLimit-Max"] == "190"
    assert r.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert r.headers["X-HubSpot-RateLimit-Remaining"] == "189"
    await hubspot.control("POST", "/__limits", {"per_window": 3})
    remaining = [(await api.get(CONTACTS)).headers["X-HubSpot-RateLimit-Remaining"] for _ in "abc"]
    assert remaining == ["2", "1", "0"]
    r = await api.get(CONTACTS)
    assert r.status_code == 429
    body = r.json()
    assert body["status"] == "error" and body["errorType"] == "RATE_LIMIT"
    assert body["policyName"] == "TEN_SECONDLY_ROLLING"
    assert body["message"] == "You have reached your ten_secondly_rolling limit."
    uuid.UUID(body["correlationId"])
    assert 1 <= int(r.headers["Retry-After"]) <= 10
    assert (await api.post(f"{CONTACTS}/search", json={})).status_code == 429  # one budget


async def test_search_has_its_own_per_second_limit(
    hubspot: HubSpotSandbox, api: httpx.AsyncClient
) -> None:
    await hubspot.control("POST", "/__limits", {"search_per_second": 1})
    refused: httpx.Response | None = None
    for _ in range(20):  # two of these within one second is all it takes
        r = await search(api, "contacts", {})
        if r.status_code == 429:
            refused = r
            break
        assert r.status_code == 200
    assert refused is not None
    body = refused.json()
    assert body["errorType"] == "RATE_LIMIT" and body["policyName"] == "SECONDLY"
    assert body["message"] == "You have reached your secondly limit."
    assert refused.headers["Retry-After"] == "1"
    assert (await api.get(CONTACTS)).status_code == 200  # other endpoints still answer
