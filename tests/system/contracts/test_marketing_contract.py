"""Marketing against HubSpot's published contract: the ``hubspot-api-client`` SDK.

HubSpot generates its official Python SDK from its OpenAPI documents, so the SDK's API classes
name each operation's path, method and query parameters, and its models name each body's and
answer's fields (with the required ones). Both directions are checked:

- our client: every request it sends is recorded at the backend and must be an operation of
  the SDK (path, method, query parameters), its JSON body within the operation's model with
  the required fields present;
- the sandbox: the SDK drives it (lists by name and by search, memberships, batch read) and
  reads its answers into its own models; the v1 lists API that HubSpot sunset answers 404;
  the ten-second rolling limit is HubSpot's, and our pacer's settings keep under it.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hubspot
import orjson
import pytest
import yaml
from aiohttp import ClientSession
from hubspot.crm.contacts import BasicApi as ContactsBasicApi
from hubspot.crm.contacts import BatchApi as ContactsBatchApi
from hubspot.crm.contacts import SearchApi as ContactsSearchApi
from hubspot.crm.contacts.models import BatchReadInputSimplePublicObjectId, SimplePublicObjectId
from hubspot.crm.lists import ApiException, ListsApi, ListSearchRequest, MembershipsApi
from hubspot.crm.lists import models as list_models

from system_apis.config import BackendConfig
from system_apis.marketing import MarketingClient
from system_apis.sandbox import marketing as sandbox_marketing
from tests.conftest import SandboxThread
from tests.system.contracts.conftest import Backend

ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Operation:
    method: str
    path: re.Pattern[str]
    query: frozenset[str]
    body: type | None


def _operations() -> list[Operation]:
    """Every operation of the SDK's API classes used here, read from the SDK's own source."""
    ops: list[Operation] = []
    for api in (ListsApi, MembershipsApi, ContactsBasicApi, ContactsBatchApi, ContactsSearchApi):
        for name, fn in inspect.getmembers(api, inspect.isfunction):
            if not name.endswith("_with_http_info"):
                continue
            src = inspect.getsource(fn)
            call = re.search(r'call_api\(\s*"([^"]+)",\s*"(\w+)"', src)
            assert call is not None, name
            template, method = call.groups()
            pattern = re.compile(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)) + "$")
            query = frozenset(re.findall(r'query_params\.append\(\("(\w+)"', src))
            body_param = re.search(r'body_params = local_var_params\["(\w+)"\]', src)
            body: type | None = None
            if body_param is not None:
                doc = re.search(rf":param (\w+) {body_param.group(1)}:", fn.__doc__ or "")
                if doc is not None and doc.group(1) != "list[str]":
                    module = (
                        hubspot.crm.lists.models
                        if api in (ListsApi, MembershipsApi)
                        else (hubspot.crm.contacts.models)
                    )
                    body = getattr(module, doc.group(1), None)
            ops.append(Operation(method, pattern, query, body))
    return ops


OPERATIONS = _operations()


def _operation(method: str, path: str) -> Operation:
    found = [op for op in OPERATIONS if op.method == method and op.path.match(path)]
    assert found, f"{method} {path} is no operation of HubSpot's published API"
    return min(found, key=lambda op: len(op.query))  # the most specific template matched


def _fields(model: type) -> tuple[frozenset[str], frozenset[str]]:
    """A model's JSON field names, and those its constructor requires."""
    attribute_map: dict[str, str] = model.attribute_map  # type: ignore[attr-defined]
    src = inspect.getsource(model)
    required = set(re.findall(r"client_side_validation and (\w+) is None", src))
    return frozenset(attribute_map.values()), frozenset(attribute_map[r] for r in required)


def config(**extra: Any) -> BackendConfig:
    return BackendConfig.model_validate(
        {
            "sandbox": True,
            "auth": {
                "kind": "api_key",
                "header": "Authorization",
                "prefix": "Bearer ",
                "key": sandbox_marketing.TOKEN,
            },
            "retry": {"max_attempts": 1},
            **extra,
        }
    )


# --- our client against the published contract ----------------------------------------------


async def test_every_request_of_the_client_is_an_operation_of_hubspots_sdk(
    recorded_backend: Backend,
) -> None:
    backend = await recorded_backend(sandbox_marketing.create_app())
    client = MarketingClient(config(), base_url=backend.url)
    await client.start()
    try:
        lists = await client.lists()
        assert {"Newsletter", "Nurture"} <= {lst.name for lst in lists}
        webinar = await client.find_list("Webinar Attendees")
        assert webinar is not None and await client.find_list("No such list") is None
        contact = await client.create_contact(f"c-{uuid.uuid4().hex[:8]}@example.com", "A", "B")
        assert (await client.add_to_list(webinar.id, [contact.id, "99999999"])).updated == [
            contact.id
        ]
        members = [c.id async for c in client.iter_list_members(webinar.id, page_size=40)]
        assert contact.id in members and len(members) == len(set(members))
        assert (await client.remove_from_list(webinar.id, [contact.id])).updated == [contact.id]
        assert await client.find_contact_by_email(contact.email) is not None
        await client.get_contact(contact.id)
    finally:
        await client.close()

    kinds = set()
    for sent in backend.sent:
        op = _operation(sent.method, sent.path)
        kinds.add((op.method, op.path.pattern))
        unknown = {k for k, _ in sent.query} - op.query
        assert not unknown, f"{sent.method} {sent.path}: {unknown} not in the SDK's parameters"
        if op.body is not None:
            body = orjson.loads(sent.body)
            names, required = _fields(op.body)
            assert set(body) <= names, (sent.path, set(body) - names)
            assert required <= set(body), (sent.path, required - set(body))
        elif sent.path.endswith(("/memberships/add", "/memberships/remove")):
            ids = orjson.loads(sent.body)
            assert isinstance(ids, list) and all(isinstance(i, str) for i in ids)
    assert len(kinds) >= 8, kinds
    assert not any("/contacts/v1/" in s.path for s in backend.sent)


# --- HubSpot's SDK against the sandbox -------------------------------------------------------


@pytest.fixture
def sdk(sandbox: SandboxThread) -> hubspot.Client:
    return hubspot.Client.create(
        access_token=sandbox_marketing.TOKEN, host=sandbox.url("marketing"), retry=None
    )


def test_hubspots_sdk_reads_lists_memberships_and_batches_from_the_sandbox(
    sdk: hubspot.Client,
) -> None:
    lists_api, memberships = sdk.crm.lists.lists_api, sdk.crm.lists.memberships_api
    newsletter = lists_api.get_by_name(list_name="Newsletter", object_type_id="0-1").list
    assert isinstance(newsletter, list_models.PublicObjectList)
    assert newsletter.processing_type == "MANUAL" and newsletter.size > 100

    page = lists_api.do_search(list_search_request=ListSearchRequest(query="", count=2, offset=0))
    assert isinstance(page, list_models.ListSearchResponse)
    assert page.has_more is True and page.offset == 2 and page.total >= 4
    assert page.lists[0].additional_properties["hs_list_size"].isdigit()

    ids: list[str] = []
    after: str | None = None
    while True:
        kwargs: dict[str, Any] = {"limit": 250}
        if after:
            kwargs["after"] = after
        got = memberships.get_page(list_id=newsletter.list_id, **kwargs)
        ids += [m.record_id for m in got.results]
        if got.paging is None or got.paging.next is None:
            break
        after = got.paging.next.after
    assert len(ids) == len(set(ids)) == newsletter.size

    batch = sdk.crm.contacts.batch_api.read(
        batch_read_input_simple_public_object_id=BatchReadInputSimplePublicObjectId(
            properties=["email", "firstname"],
            properties_with_history=[],
            inputs=[SimplePublicObjectId(id=i) for i in ids[:100]],
        )
    )
    assert batch.status == "COMPLETE" and {c.id for c in batch.results} == set(ids[:100])
    assert all(c.properties["email"] for c in batch.results)


def test_hubspots_sdk_changes_memberships_in_the_sandbox(sdk: hubspot.Client) -> None:
    email = f"sdk-{uuid.uuid4().hex[:10]}@example.com"
    created = sdk.crm.contacts.basic_api.create(
        simple_public_object_input_for_create={"properties": {"email": email}}
    )
    webinar = sdk.crm.lists.lists_api.get_by_name(
        list_name="Webinar Attendees", object_type_id="0-1"
    ).list
    memberships = sdk.crm.lists.memberships_api
    added = memberships.add(list_id=webinar.list_id, request_body=[created.id, "99999999"])
    assert isinstance(added, list_models.MembershipsUpdateResponse)
    assert added.records_ids_added == [created.id] and added.record_ids_missing == ["99999999"]
    again = memberships.add(list_id=webinar.list_id, request_body=[created.id])
    assert again.records_ids_added == []  # already a member: ignored
    removed = memberships.remove(list_id=webinar.list_id, request_body=[created.id])
    assert removed.record_ids_removed == [created.id]


def test_hubspots_errors_and_the_sunset_v1_lists(
    sdk: hubspot.Client, sandbox: SandboxThread
) -> None:
    with pytest.raises(ApiException) as missing:
        sdk.crm.lists.lists_api.get_by_id(list_id="999")
    body = orjson.loads(missing.value.body)
    assert missing.value.status == 404 and body["category"] == "OBJECT_NOT_FOUND"
    assert body["status"] == "error" and body["correlationId"]
    with pytest.raises(ApiException) as invalid:
        sdk.crm.lists.lists_api.do_search(list_search_request={"query": "", "count": 501})
    assert invalid.value.status == 400
    assert orjson.loads(invalid.value.body)["category"] == "VALIDATION_ERROR"

    async def v1() -> int:
        async with ClientSession() as s:
            headers = {"Authorization": f"Bearer {sandbox_marketing.TOKEN}"}
            async with s.get(sandbox.url("marketing") + "/contacts/v1/lists", headers=headers) as r:
                return r.status

    assert asyncio.run(v1()) == 404


# --- the ten-second rolling limit ------------------------------------------------------------


async def test_answers_carry_hubspots_limit_and_a_request_over_it_is_refused(
    recorded_backend: Backend,
) -> None:
    app = sandbox_marketing.create_app()
    app[sandbox_marketing.LIMIT].max = 3
    backend = await recorded_backend(app)
    headers = {"Authorization": f"Bearer {sandbox_marketing.TOKEN}"}
    async with ClientSession() as s:
        answers = []
        for _ in range(4):
            async with s.get(f"{backend.url}/crm/v3/lists/1", headers=headers) as r:
                answers.append((r.status, dict(r.headers), await r.json()))
    assert [a[0] for a in answers] == [200, 200, 200, 429]
    first = answers[0][1]
    assert first["X-HubSpot-RateLimit-Max"] == "3"
    assert first["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert first["X-HubSpot-RateLimit-Remaining"] == "2"
    _, over, body = answers[3]
    assert body["policyName"] == "TEN_SECONDLY_ROLLING" and body["errorType"] == "RATE_LIMIT"
    assert int(over["Retry-After"]) >= 1 and over["X-HubSpot-RateLimit-Remaining"] == "0"


def _shipped_pacing() -> dict[str, Any]:
    backends = yaml.safe_load((ROOT / "config" / "backends.yaml").read_text())
    pacing: dict[str, Any] = backends["marketing"]["rate_limit"]
    return pacing


@pytest.mark.slow  # waits on real time: seconds of paced requests
@pytest.mark.parametrize("paced", [True, False])
async def test_the_shipped_pacer_keeps_under_hubspots_rolling_limit(
    recorded_backend: Backend, paced: bool
) -> None:
    """The shipped pacing against HubSpot's limit, both run twice as fast; unpaced, the same
    load is refused (so the paced run proves something)."""
    pacing = _shipped_pacing()
    app = sandbox_marketing.create_app()
    app[sandbox_marketing.LIMIT].interval_ms = sandbox_marketing.RATE_INTERVAL_MS // 2
    backend = await recorded_backend(app)
    extra: dict[str, Any] = {"max_concurrency": 64}
    if paced:
        extra["rate_limit"] = {**pacing, "period_s": pacing["period_s"] / 2}
        extra["timeouts"] = {"connect_s": 10, "read_s": 10, "total_s": 20}
    client = MarketingClient(config(**extra), base_url=backend.url)
    await client.start()
    try:
        results = await asyncio.gather(
            *(client.get_contact("5001") for _ in range(200)), return_exceptions=True
        )
    finally:
        await client.close()
    failed = [r for r in results if isinstance(r, BaseException)]
    throttled = app[sandbox_marketing.LIMIT].throttled
    if paced:
        assert failed == [] and throttled == 0
    else:
        assert throttled > 0 and failed
