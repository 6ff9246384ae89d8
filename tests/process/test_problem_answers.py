"""Real error answers carry a registered problem type and its title, whatever layer fails."""

from __future__ import annotations

import uuid

from gateway.problems import PROBLEM_TYPES
from system_apis.sandbox import seed
from tests.process.harness import Gw, assert_problem

PEOPLE = seed.people()


def assert_kind(body: dict[str, object], slug: str) -> None:
    kind = PROBLEM_TYPES[slug]
    assert body["type"] == f"/problems/{slug}", body
    assert body["title"] == kind.title, body


async def test_missing_records_are_not_found_in_every_layer(clean: Gw) -> None:
    # the process layer's own lookup, the system layer's, and the router's
    for path in (
        "/process/v1/orders/4599999999",
        "/process/v1/tickets/999999999/context",
        "/process/v1/no-such-route",
    ):
        status, headers, body = await clean.call("GET", path)
        assert_problem(status, headers, body, 404)
        assert_kind(body, "not-found")


async def test_duplicate_customer(clean: Gw) -> None:
    p = PEOPLE[21]
    req = {"email": p.email, "first_name": "X", "last_name": "Y"}
    status, headers, body = await clean.call("POST", "/process/v1/customers", json=req)
    assert_problem(status, headers, body, 409)
    assert_kind(body, "duplicate-customer")


async def test_backend_unavailable(clean: Gw) -> None:
    await clean.sandbox.set_faults("crm", error_rate=1)
    status, headers, body = await clean.call(
        "GET", f"/process/v1/customers/{PEOPLE[22].crm_contact_id}"
    )
    assert_problem(status, headers, body, 503)
    assert_kind(body, "backend-unavailable")


async def test_edge_answers(clean: Gw) -> None:
    status, headers, body = await clean.call("GET", "/process/v1/customers", client=None)
    assert_problem(status, headers, body, 401)
    assert_kind(body, "authentication-required")
    status, headers, body = await clean.call("GET", "/process/v1/customers", client="web-app")
    assert_problem(status, headers, body, 403)
    assert_kind(body, "insufficient-scope")
    hdr = {"Idempotency-Key": uuid.uuid4().hex}
    status, headers, body = await clean.call(
        "POST", "/process/v1/orders", json={"lines": []}, headers=hdr
    )
    assert_problem(status, headers, body, 422)
    assert_kind(body, "validation-failed")
