"""Every ``201 Created`` carries ``Location``: the new resource's URI, which reads it back
wherever its API has a GET for a single resource."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from system_apis.sandbox import seed
from tests.gateway.helpers import token
from tests.process.harness import Gw

PEOPLE = seed.people()
STOCKED = [s.sku for s in seed.skus() if s.on_hand >= 150]
_people = itertools.count(300)
CLIENT = "test-everything"


def new_email(tag: str) -> str:
    return f"{tag}.{uuid.uuid4().hex[:10]}@location-{uuid.uuid4().hex[:6]}.example.com"


def key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


def created_operations() -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    """(path, body, headers) for each operation that answers 201."""
    p, q = PEOPLE[next(_people)], PEOPLE[next(_people)]
    sku = STOCKED[0]
    person = {"first_name": "Loc", "last_name": "Ation"}
    ticket = {"customer_id": q.crm_contact_id, "subject": "Where is it", "body": "Please check"}
    return [
        ("/system/v1/crm/contacts", {"email": new_email("c"), **person}, {}),
        ("/system/v1/crm/tasks", {"subject": "Call back", "contact_id": p.crm_contact_id}, {}),
        ("/system/v1/crm/leads", {"email": new_email("l"), **person}, {}),
        ("/system/v1/erp/customers", {"name": "Location Test"}, {}),
        (
            "/system/v1/erp/orders",
            {
                "customer_number": p.erp_customer_number,
                "channel": "sales",
                "lines": [{"sku": sku, "quantity": 1, "unit_price": "5.00"}],
            },
            {},
        ),
        ("/system/v1/billing/customers", {"email": new_email("b"), "name": "Loc"}, key()),
        (
            "/system/v1/billing/invoices",
            {
                "customer_id": p.billing_customer_id,
                "currency": "usd",
                "lines": [{"sku": sku, "quantity": 1, "unit_price": "5.00"}],
            },
            key(),
        ),
        ("/system/v1/support/users", {"email": new_email("s"), "name": "Loc"}, {}),
        (
            "/system/v1/support/tickets",
            {"requester_id": str(p.support_user_id), "subject": "Hi", "body": "Hello"},
            {},
        ),
        ("/system/v1/marketing/contacts", {"email": new_email("m"), **person}, {}),
        (
            "/system/v1/inventory/reservations",
            {"reference": uuid.uuid4().hex[:20], "lines": [{"sku": sku, "quantity": 1}]},
            {},
        ),
        ("/process/v1/customers", {"email": new_email("o"), **person}, {}),
        (
            "/process/v1/orders",
            {"customer_id": p.crm_contact_id, "lines": [{"sku": sku, "quantity": 1}]},
            key(),
        ),
        ("/process/v1/leads", {"email": new_email("p"), **person}, {}),
        ("/process/v1/tickets", ticket, key()),
        ("/experience/support/v1/tickets", ticket, key()),
    ]


WITHOUT_ITEM_GET = {"/system/v1/crm/tasks", "/system/v1/crm/leads", "/process/v1/leads"}
"""Collections whose API has no GET for one item (the process ticket reads as its context)."""


async def test_every_created_operation_is_covered(clean: Gw) -> None:
    status, _, doc = await clean.call("GET", "/openapi.json", client=None)
    assert status == 200
    created = {
        path
        for path, item in doc["paths"].items()
        for op in item.values()
        if "201" in op["responses"]
    }
    assert created == {path for path, _, _ in created_operations()}


async def test_created_answers_carry_a_location_that_reads_back(clean: Gw) -> None:
    clean.tokens.setdefault(CLIENT, await token(clean.url, CLIENT))
    for path, body, headers in created_operations():
        status, got, answer = await clean.call("POST", path, CLIENT, json=body, headers=headers)
        assert status == 201, (path, answer)
        location = got.get("Location")
        assert location is not None and location.startswith(path + "/"), (path, location)
        ident = location.removeprefix(path + "/")
        assert "/" not in ident and ident in str(answer), (path, location)
        if path == "/process/v1/tickets":
            location += "/context"
        # the resource's own route reads it back, where its API has one
        status, _, again = await clean.call("GET", location, CLIENT)
        if path in WITHOUT_ITEM_GET:
            assert status in (404, 405), (path, status)
        else:
            assert status == 200, (location, again)
