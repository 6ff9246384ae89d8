"""Experience channels through the whole gateway with each channel's own token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from system_apis.sandbox import seed
from tests.conftest import SandboxThread
from tests.process.harness import Gw, assert_problem, running_gateway

PEOPLE = seed.people()
ACME = [o for o in seed.orders() if o.channel == "partner-acme"]
GLOBEX = [o for o in seed.orders() if o.channel == "partner-globex"]
FORBIDDEN_IN_PARTNER = ("customer_number", "crm_contact_id", "unit_cost", "erp", "0000100")
CRM_IDS = {p.crm_contact_id for p in PEOPLE} | {a.crm_id for a in seed.accounts()}


def values(body: Any) -> set[str]:
    """Every string and number in a JSON body, as text."""
    if isinstance(body, dict):
        return set().union(*(values(v) for v in body.values())) if body else set()
    if isinstance(body, list):
        return set().union(*(values(v) for v in body)) if body else set()
    return {str(body)}


# --- web -------------------------------------------------------------------------------------


async def test_web_dashboard_customer(clean: Gw) -> None:
    p = PEOPLE[40]
    status, _, body = await clean.call(
        "GET", f"/experience/web/v1/customers/{p.crm_contact_id}", client="web-app"
    )
    assert status == 200, body
    assert body["contact"]["email"] == p.email  # the web channel sees the full record
    assert body["billing"]["customer"]["id"] == p.billing_customer_id
    status, _, page = await clean.call(
        "GET", "/experience/web/v1/customers?limit=2", client="web-app"
    )
    assert status == 200 and len(page["items"]) == 2 and page["next_cursor"]


async def test_channels_refuse_other_channels_tokens(clean: Gw) -> None:
    p = PEOPLE[40]
    for path, client in [
        (f"/experience/web/v1/customers/{p.crm_contact_id}", "mobile-app"),
        (f"/experience/mobile/v1/customers/{p.crm_contact_id}", "partner-acme"),
        ("/experience/partner/v1/orders", "web-app"),
        ("/experience/support/v1/tickets/1", "orders-service"),
    ]:
        status, headers, body = await clean.call("GET", path, client=client)
        assert_problem(status, headers, body, 403)


async def test_retired_version_is_410(clean: Gw) -> None:
    status, headers, body = await clean.call(
        "GET", f"/experience/web/v0/customers/{PEOPLE[1].crm_contact_id}", client="web-app"
    )
    assert_problem(status, headers, body, 410)
    assert "retired" in body["detail"] and headers["Sunset"].endswith("GMT")


async def test_deprecated_version_carries_deprecation_and_sunset(
    sandbox: SandboxThread, tmp_path: Path, clean_sandbox: SandboxThread
) -> None:
    experience = {
        "channels": {
            "web": {
                "versions": {
                    "v1": {
                        "status": "deprecated",
                        "deprecated_at": "2026-06-01T00:00:00Z",
                        "sunset": "2027-06-01T00:00:00Z",
                        "link": "https://docs.example/web-v2",
                    }
                }
            }
        }
    }
    async with running_gateway(sandbox, tmp_path, experience=experience) as gw:
        status, headers, _ = await gw.call(
            "GET", f"/experience/web/v1/customers/{PEOPLE[1].crm_contact_id}", client="web-app"
        )
        error, error_headers, _ = await gw.call(
            "GET", "/experience/web/v1/customers/no%20such%20id", client="web-app"
        )
    assert status == 200
    assert headers["Deprecation"] == "@1780272000"
    # an error answer of the version's routes carries the version's headers too
    assert 400 <= error < 500, error
    assert error_headers["Content-Type"].startswith("application/problem+json")
    assert error_headers["Deprecation"] == "@1780272000"
    assert headers["Sunset"] == "Tue, 01 Jun 2027 00:00:00 GMT"
    assert headers["Link"] == '<https://docs.example/web-v2>; rel="deprecation"'


# --- mobile ----------------------------------------------------------------------------------


async def test_mobile_card_fields_and_etag(clean: Gw) -> None:
    p = PEOPLE[41]
    path = f"/experience/mobile/v1/customers/{p.crm_contact_id}"
    status, headers, body = await clean.call("GET", path, client="mobile-app")
    assert status == 200, body
    assert body["email"] == p.email and "contact" not in body
    etag = headers["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    status, headers, body = await clean.call(
        "GET", path, client="mobile-app", headers={"If-None-Match": etag}
    )
    assert status == 304 and body is None and headers["ETag"] == etag
    status, headers, small = await clean.call(
        "GET", path + "?fields=id,name,open_orders", client="mobile-app"
    )
    assert status == 200 and set(small) == {"id", "name", "open_orders"}
    assert headers["ETag"] != etag
    status, headers, _ = await clean.call(
        "GET", path, client="mobile-app", headers={"If-None-Match": '"stale"'}
    )
    assert status == 200


@pytest.mark.parametrize("fields", ["id,password", "", ",,"])
async def test_mobile_unknown_field_is_400(clean: Gw, fields: str) -> None:
    status, headers, body = await clean.call(
        "GET",
        f"/experience/mobile/v1/customers/{PEOPLE[41].crm_contact_id}?fields={fields}",
        client="mobile-app",
    )
    assert_problem(status, headers, body, 400)
    assert body["errors"][0]["path"] == "query/fields"


# --- support ---------------------------------------------------------------------------------


async def test_support_agent_ticket_view(clean: Gw) -> None:
    ticket = (await clean.systems.support.tickets_page(limit=3)).items[1]
    status, _, body = await clean.call(
        "GET", f"/experience/support/v1/tickets/{ticket.id}", client="support-desk"
    )
    assert status == 200, body
    assert body["ticket"]["id"] == ticket.id
    assert body["customer"]["email"] and body["payment_status"] in {
        "none",
        "paid",
        "outstanding",
        "overdue",
    }
    status, headers, body = await clean.call(
        "GET", "/experience/support/v1/tickets/99999999", client="support-desk"
    )
    assert_problem(status, headers, body, 404)


# --- partner ---------------------------------------------------------------------------------


async def test_partner_sees_only_its_orders(clean: Gw) -> None:
    status, _, body = await clean.call(
        "GET", "/experience/partner/v1/orders?limit=50", client="partner-acme"
    )
    assert status == 200, body
    acme_ids = {o.number for o in ACME}
    assert body["items"] and {o["id"] for o in body["items"]} <= acme_ids
    assert body["next_cursor"]
    status, _, nxt = await clean.call(
        "GET",
        f"/experience/partner/v1/orders?limit=50&cursor={body['next_cursor']}",
        client="partner-acme",
    )
    assert status == 200 and {o["id"] for o in nxt["items"]} <= acme_ids
    text = str(body)
    assert not any(word in text for word in FORBIDDEN_IN_PARTNER)
    assert not values(body) & CRM_IDS  # no CRM id, whichever the CRM


async def test_other_partners_order_is_404_like_a_missing_one(clean: Gw) -> None:
    theirs = GLOBEX[0].number
    status, headers, body = await clean.call(
        "GET", f"/experience/partner/v1/orders/{theirs}", client="partner-acme"
    )
    assert_problem(status, headers, body, 404)
    status, headers, missing = await clean.call(
        "GET", "/experience/partner/v1/orders/4599999999", client="partner-acme"
    )
    assert_problem(status, headers, missing, 404)
    assert body["title"] == missing["title"]
    status, _, own = await clean.call(
        "GET", f"/experience/partner/v1/orders/{theirs}", client="partner-globex"
    )
    assert status == 200 and own["id"] == theirs


async def test_partner_order_masks_buyer_pii(clean: Gw) -> None:
    order = ACME[0]
    status, _, body = await clean.call(
        "GET", f"/experience/partner/v1/orders/{order.number}", client="partner-acme"
    )
    assert status == 200, body
    buyer = body["buyer"]
    person = order.person
    local, domain = person.email.split("@")
    assert buyer["email"] == f"{local[0]}***@{domain}"
    assert buyer["phone"].endswith(person.phone[-2:]) and person.phone not in str(body)
    assert buyer["name"] == f"{person.first_name[0]}. {person.last_name[0]}."
    assert not any(word in str(body) for word in FORBIDDEN_IN_PARTNER)
    assert not values(body) & CRM_IDS
    assert [ln["sku"] for ln in body["lines"]] == [ln.sku for ln in order.lines]


async def test_partner_catalog_keeps_product_names(clean: Gw) -> None:
    """Masking is for people's data: a product named like a person stays as it is."""
    for sku in seed.skus()[:5]:
        status, _, body = await clean.call(
            "GET", f"/experience/partner/v1/catalog/{sku.sku}", client="partner-acme"
        )
        assert status == 200, body
        assert body["name"] == sku.name and body["sku"] == sku.sku


async def test_partner_catalog_never_shows_cost(clean: Gw) -> None:
    sku = seed.skus()[3]
    status, _, body = await clean.call(
        "GET", f"/experience/partner/v1/catalog/{sku.sku}", client="partner-acme"
    )
    assert status == 200, body
    assert set(body) == {"sku", "name", "available", "unit_price"}
    assert str(sku.unit_cost) not in str(body)
    status, headers, body = await clean.call(
        "GET", "/experience/partner/v1/catalog/SKU-9999", client="partner-acme"
    )
    assert_problem(status, headers, body, 404)
