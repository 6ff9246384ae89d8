"""The 360 remembers the keys its lookups found (cross-reference store), so the next view of
the customer skips every lookup and runs in one concurrent round; stale keys never give a
wrong answer."""

from __future__ import annotations

from typing import Any

from process_apis.customer360 import ACCOUNT_KEY, MARKETING_EMAIL_KEY
from process_apis.ports import Outcome
from system_apis.config import BACKEND_NAMES
from system_apis.sandbox import seed
from tests.process.harness import Gw, assert_problem

PEOPLE = seed.people()
LOOKUPS = {
    "billing": "GET /v1/customers",  # search by email
    "support": "GET /api/v2/users/search.json",
    "marketing": "POST /crm/v3/objects/contacts/search",
}


async def view(gw: Gw, customer_id: str) -> tuple[dict[str, Any], dict[str, dict[str, int]]]:
    """One 360 and the calls each backend received for it (token fetches left out)."""
    for name in BACKEND_NAMES:
        await gw.sandbox.reset_hits(name)
    status, _, body = await gw.call("GET", f"/process/v1/customers/{customer_id}")
    assert status == 200, body
    hits = {
        name: {k: v for k, v in (await gw.sandbox.hits(name)).items() if "token" not in k}
        for name in BACKEND_NAMES
    }
    return body, hits


def total(hits: dict[str, dict[str, int]]) -> int:
    return sum(sum(h.values()) for h in hits.values())


async def test_second_view_skips_the_lookups(clean: Gw) -> None:
    p = PEOPLE[871]
    first, first_hits = await view(clean, p.crm_contact_id)
    for name, path in LOOKUPS.items():
        assert first_hits[name].get(path) == 1, (name, first_hits[name])
    known = await clean.process.store.xrefs(p.crm_contact_id)
    assert known["billing"] == p.billing_customer_id
    assert known["support"] == str(p.support_user_id)
    assert known["marketing"] == str(p.marketing_contact_id)
    assert known["erp"] == p.erp_customer_number
    assert known[ACCOUNT_KEY] == p.account.crm_id and known[MARKETING_EMAIL_KEY] == p.email
    second, second_hits = await view(clean, p.crm_contact_id)
    for name, path in LOOKUPS.items():
        assert path not in second_hits[name], (name, second_hits[name])
    # each lookup is a read by id, started in the same round as the CRM contact: no more
    # calls in all, and none of them waits for another
    assert total(second_hits) <= total(first_hits)
    assert second == first
    assert second["customer"]["system_ids"] == {
        "crm": p.crm_contact_id,
        "erp": p.erp_customer_number,
        "billing": p.billing_customer_id,
        "support": str(p.support_user_id),
        "marketing": str(p.marketing_contact_id),
    }


async def test_stale_keys_are_corrected_not_shown(clean: Gw) -> None:
    p, other = PEOPLE[872], PEOPLE[873]
    await view(clean, p.crm_contact_id)
    store = clean.process.store
    await store.commit(
        Outcome(
            xrefs={
                p.crm_contact_id: {
                    "billing": "cus_TR99999999",
                    "support": "369999999",
                    "marketing": "999999",
                    ACCOUNT_KEY: other.account.crm_id,
                    MARKETING_EMAIL_KEY: other.email,
                }
            }
        )
    )
    body, _ = await view(clean, p.crm_contact_id)
    assert body["partial"] is False, body
    assert body["billing"]["customer"]["id"] == p.billing_customer_id
    assert body["support"]["user"]["id"] == str(p.support_user_id)
    assert body["marketing"]["contact"]["id"] == str(p.marketing_contact_id)
    assert body["account"]["id"] == p.account.crm_id
    known = await store.xrefs(p.crm_contact_id)
    assert known["billing"] == p.billing_customer_id
    assert known["support"] == str(p.support_user_id)
    assert known[ACCOUNT_KEY] == p.account.crm_id and known[MARKETING_EMAIL_KEY] == p.email


async def test_known_keys_keep_crm_critical_and_others_partial(clean: Gw) -> None:
    p = PEOPLE[874]
    await view(clean, p.crm_contact_id)
    await clean.sandbox.set_faults("crm", error_rate=1)
    status, headers, body = await clean.call("GET", f"/process/v1/customers/{p.crm_contact_id}")
    assert_problem(status, headers, body, 503)
    assert body["backend"] == "crm"
    await clean.sandbox.clear_faults()
    await clean.sandbox.set_faults("support", error_rate=1)
    status, _, body = await clean.call("GET", f"/process/v1/customers/{p.crm_contact_id}")
    assert status == 200 and body["unavailable"] == ["support"] and body["support"] is None
    assert body["billing"]["customer"]["id"] == p.billing_customer_id
