"""Through the assembled gateway over real HTTP: inbound webhooks, admin views, the DLQ API."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.app import Gateway, create_app
from gateway.events.records import DeliveryState, EventSummary
from system_apis.models import AccountCreate, ContactCreate
from system_apis.sandbox.billing import API_KEY, sign_payload
from tests.conftest import SandboxThread
from tests.events.helpers import Receiver, event, hook, receiver, write_outbox
from tests.eventually import eventually
from tests.gateway.helpers import test_settings, token
from tests.servers import serve

pytestmark = pytest.mark.slow  # a whole gateway, its bus delivering in real time


class Gw:
    def __init__(self, url: str, app: Gateway, admin: str, other: str, rec: Receiver) -> None:
        self.url, self.app, self.admin, self.other, self.rec = url, app, admin, other, rec

    async def call(
        self, method: str, path: str, tok: str | None = None, **kw: Any
    ) -> tuple[int, dict[str, str], Any]:
        headers = dict(kw.pop("headers", {}))
        if tok:
            headers["Authorization"] = f"Bearer {tok}"
        async with (
            aiohttp.ClientSession() as s,
            s.request(method, self.url + path, headers=headers, **kw) as r,
        ):
            raw = await r.read()
            return r.status, dict(r.headers), orjson.loads(raw) if raw else None

    async def outbox_ids(self) -> list[str]:
        return [
            e.id for e in await self.app.events.store.recent_events(None, None, 500, lambda t: [])
        ]


@pytest.fixture(scope="module")
async def gw(sandbox: SandboxThread, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gw]:
    tmp = tmp_path_factory.mktemp("events-gw")
    async with receiver() as rec:
        settings = test_settings(
            sandbox.base_port,
            tmp,
            events={
                "outbound_webhooks": {
                    "t": hook(rec.url, max_attempts=2, base_delay_s=0.2, attempt_timeout_s=5)
                }
            },
        )
        app = create_app(settings)
        async with serve(app) as url:
            yield Gw(url, app, await token(url, "ops-admin"), await token(url, "test-nothing"), rec)


def stripe_event(type_: str = "invoice.paid", obj: dict[str, Any] | None = None) -> bytes:
    obj = obj or {
        "id": f"in_{uuid.uuid4().hex[:12]}",
        "object": "invoice",
        "customer": "cus_x",
        "status": "paid",
        "currency": "usd",
        "total": 1000,
        "amount_due": 0,
        "amount_paid": 1000,
        "metadata": {},
        "created": int(time.time()),
    }
    return orjson.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex[:16]}",
            "object": "event",
            "type": type_,
            "created": int(time.time()),
            "data": {"object": obj},
        }
    )


async def post_hook(gw: Gw, body: bytes, signature: str | None, source: str = "billing") -> Any:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return await gw.call("POST", f"/webhooks/{source}", data=body, headers=headers)


def assert_problem(status: int, headers: dict[str, str], body: Any, expected: int) -> None:
    assert status == expected, body
    assert headers["Content-Type"].startswith("application/problem+json")
    assert body["status"] == expected and body["title"]


# --- inbound webhooks ------------------------------------------------------------------------


async def test_valid_signature_enqueues_a_domain_event(gw: Gw) -> None:
    body = stripe_event()
    status, _, answer = await post_hook(gw, body, sign_payload(body))
    assert status == 200, answer
    assert answer["duplicate"] is False and answer["event_id"]
    vendor = orjson.loads(body)
    [summary] = await gw.app.events.store.recent_events(
        "invoice.paid", vendor["data"]["object"]["id"], 10, lambda t: []
    )
    assert summary.id == answer["event_id"] == f"evt_billing_{vendor['id']}"


async def test_replayed_webhook_is_acknowledged_but_not_enqueued_twice(gw: Gw) -> None:
    body = stripe_event()
    sig = sign_payload(body)
    first = await post_hook(gw, body, sig)
    before = await gw.outbox_ids()
    status, _, answer = await post_hook(gw, body, sig)
    assert first[0] == 200 and status == 200
    assert answer == {"received": True, "duplicate": True, "event_id": None}
    assert await gw.outbox_ids() == before


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(lambda b: sign_payload(b, secret="whsec_wrong"), id="wrong-secret"),
        pytest.param(lambda b: sign_payload(b, timestamp=int(time.time()) - 3600), id="stale"),
        pytest.param(lambda b: sign_payload(b, timestamp=int(time.time()) + 3600), id="future"),
        pytest.param(lambda b: "garbage", id="malformed"),
        pytest.param(lambda b: "t=abc,v1=00", id="malformed-timestamp"),
        pytest.param(lambda b: sign_payload(b).split(",")[0], id="no-v1"),
        pytest.param(lambda b: sign_payload(b + b" "), id="other-body"),
        pytest.param(lambda b: None, id="missing"),
    ],
)
async def test_bad_signature_is_401_and_enqueues_nothing(gw: Gw, signature: Any) -> None:
    body = stripe_event()
    before = await gw.outbox_ids()
    status, headers, answer = await post_hook(gw, body, signature(body))
    assert_problem(status, headers, answer, 401)
    assert "whsec" not in str(answer)
    assert await gw.outbox_ids() == before


async def test_unknown_source_is_404(gw: Gw) -> None:
    body = stripe_event()
    status, headers, answer = await post_hook(gw, body, sign_payload(body), source="crm")
    assert_problem(status, headers, answer, 404)


async def test_oversized_body_is_413(gw: Gw) -> None:
    body = b"{" + b" " * 300_000 + b"}"
    status, headers, answer = await post_hook(gw, body, sign_payload(body))
    assert_problem(status, headers, answer, 413)


async def test_signed_but_not_an_event_is_400(gw: Gw) -> None:
    for body in (b"not json", b"[]", b'{"type": "invoice.paid"}'):
        status, headers, answer = await post_hook(gw, body, sign_payload(body))
        assert_problem(status, headers, answer, 400)


async def test_unmapped_vendor_type_is_acknowledged_without_event(gw: Gw) -> None:
    body = stripe_event("customer.updated", {"id": "cus_1", "object": "customer"})
    before = await gw.outbox_ids()
    status, _, answer = await post_hook(gw, body, sign_payload(body))
    assert status == 200 and answer["event_id"] is None
    assert await gw.outbox_ids() == before


async def test_billing_sandbox_sends_signed_invoice_paid(gw: Gw, sandbox: SandboxThread) -> None:
    """End to end: pay an invoice in billing; its signed webhook reaches the gateway, becomes
    invoice.paid, and the subscriber marks the customer's CRM account active."""
    systems = gw.app.systems
    account = await systems.crm.create_account(AccountCreate(name="Hook Co", status="Prospect"))
    email = f"hook-{uuid.uuid4().hex[:8]}@example.com"
    contact = await systems.crm.create_contact(
        ContactCreate(email=email, first_name="Hoo", last_name="K", account_id=account.id)
    )
    customer = await systems.billing.create_customer(email, "Hoo K", contact.id)
    invoice = await systems.billing.create_invoice(customer.id, [Decimal("12.50")])
    async with aiohttp.ClientSession() as s:
        async with s.post(
            sandbox.url("billing") + "/v1/webhook_endpoints",
            data={"url": f"{gw.url}/webhooks/billing", "enabled_events[0]": "invoice.paid"},
            headers={"Authorization": f"Bearer {API_KEY}"},
        ) as r:
            endpoint = await r.json()
            assert r.status == 200, endpoint
        try:
            await systems.billing.pay_invoice(invoice.id)

            async def delivered() -> list[EventSummary]:
                found = await gw.app.events.store.recent_events(
                    "invoice.paid", invoice.id, 5, gw.app.events.wants
                )
                if found and all(d.state is DeliveryState.DELIVERED for d in found[0].deliveries):
                    return found
                return []

            found = await eventually(delivered, interval=0.1, message="invoice.paid delivered")
            assert [d.subscriber for d in found[0].deliveries] == ["invoice-paid-crm-status"]
            assert (await systems.crm.get_account(account.id)).status == "Active"
        finally:
            async with s.delete(
                sandbox.url("billing") + f"/v1/webhook_endpoints/{endpoint['id']}",
                headers={"Authorization": f"Bearer {API_KEY}"},
            ) as r:
                assert r.status == 200


async def test_a_signed_claim_for_an_invoice_billing_lacks_is_dead_lettered(
    gw: Gw, sandbox: SandboxThread
) -> None:
    """A correctly signed invoice.paid for an invoice billing has never heard of (the signing
    secret leaked, or a test event sent to production) changes nothing in the CRM."""
    systems = gw.app.systems
    account = await systems.crm.create_account(AccountCreate(name="Churn Co", status="Churned"))
    email = f"churn-{uuid.uuid4().hex[:8]}@example.com"
    contact = await systems.crm.create_contact(
        ContactCreate(email=email, first_name="Chu", last_name="Rn", account_id=account.id)
    )
    customer = await systems.billing.create_customer(email, "Chu Rn", contact.id)
    forged = stripe_event(
        obj={
            "id": f"in_{uuid.uuid4().hex[:14]}",
            "object": "invoice",
            "customer": customer.id,
            "status": "paid",
            "currency": "usd",
            "total": 1000,
            "amount_due": 0,
            "amount_paid": 1000,
            "metadata": {},
            "created": int(time.time()),
        }
    )
    status, _, answer = await post_hook(gw, forged, sign_payload(forged))
    assert status == 200, answer  # the signature is right: the claim is accepted for checking
    invoice_id = orjson.loads(forged)["data"]["object"]["id"]

    async def dead() -> EventSummary:
        [summary] = await gw.app.events.store.recent_events(
            "invoice.paid", invoice_id, 5, gw.app.events.wants
        )
        [delivery] = summary.deliveries
        assert delivery.state is DeliveryState.DEAD_LETTERED, delivery
        return summary

    summary = await eventually(dead, interval=0.1, message="the forged claim dead-lettered")
    assert f"billing has no invoice {invoice_id}" in (summary.deliveries[0].last_error or "")
    assert (await systems.crm.get_account(account.id)).status == "Churned"


# --- admin views -------------------------------------------------------------------------------


async def test_admin_views_need_the_admin_scope(gw: Gw) -> None:
    for path in ("/admin/v1/events", "/admin/v1/dlq", "/admin/v1/dlq/dlq_x"):
        status, headers, body = await gw.call("GET", path)
        assert_problem(status, headers, body, 401)
        status, headers, body = await gw.call("GET", path, gw.other)
        assert_problem(status, headers, body, 403)
    status, headers, body = await gw.call(
        "POST", "/admin/v1/dlq/replay", gw.other, json={"ids": ["x"]}
    )
    assert_problem(status, headers, body, 403)


async def test_events_view_dlq_replay_and_discard(gw: Gw) -> None:
    data_dir = Path(gw.app.settings.gateway.data_dir)
    gw.rec.always_fail = True
    try:
        subject = f"sub-{uuid.uuid4().hex[:6]}"
        evs = [event(subject=subject), event(subject=subject)]
        write_outbox(data_dir, evs)

        async def both_letters() -> list[dict[str, Any]]:
            status, _, page = await gw.call("GET", "/admin/v1/dlq?type=test.happened", gw.admin)
            assert status == 200, page
            letters = [x for x in page["items"] if x["event_id"] in {e.id for e in evs}]
            return letters if len(letters) == 2 else []

        letters = await eventually(both_letters, interval=0.1, message="two dead letters")
        status, _, listing = await gw.call(
            "GET", f"/admin/v1/events?type=test.happened&subject={subject}", gw.admin
        )
        assert status == 200 and len(listing["items"]) == 2
        for item in listing["items"]:
            [d] = item["deliveries"]
            assert d["subscriber"] == "webhook:t" and d["state"] == "dead_lettered"
            assert d["attempts"] == 2 and d["dead_letter_id"]
        first, second = letters
        status, _, shown = await gw.call("GET", f"/admin/v1/dlq/{first['id']}", gw.admin)
        assert status == 200 and shown["attempts"] == 2 and len(shown["errors"]) == 2
        assert shown["trace_id"] and shown["event"]["id"] == first["event_id"]
        status, headers, body = await gw.call("GET", "/admin/v1/dlq/dlq_missing", gw.admin)
        assert_problem(status, headers, body, 404)
        status, _, filtered = await gw.call(
            "GET",
            "/admin/v1/dlq",
            gw.admin,
            params={
                "subscriber": "webhook:t",
                "since": "2000-01-01T00:00:00+00:00",
                "until": "2001-01-01T00:00:00Z",
            },
        )
        assert status == 200 and filtered["items"] == []
        status, headers, body = await gw.call("GET", "/admin/v1/dlq?since=yesterday", gw.admin)
        assert_problem(status, headers, body, 400)

        gw.rec.always_fail = False
        calls_before = len(gw.rec.requests)
        status, _, result = await gw.call(
            "POST", "/admin/v1/dlq/replay", gw.admin, json={"ids": [first["id"], "dlq_nope"]}
        )
        assert status == 200, result
        assert result["items"] == [
            {"id": first["id"], "outcome": "replayed"},
            {"id": "dlq_nope", "outcome": "not_found"},
        ]
        await gw.rec.wait_for(lambda r: r.event_ids()[first["event_id"]] == 1)
        await asyncio.sleep(0.4)  # the window a second, duplicate delivery would arrive in
        assert len(gw.rec.requests) == calls_before + 1

        status, headers, body = await gw.call(
            "POST", f"/admin/v1/dlq/{second['id']}/discard", gw.admin, json={}
        )
        assert_problem(status, headers, body, 422)
        status, _, discarded = await gw.call(
            "POST",
            f"/admin/v1/dlq/{second['id']}/discard",
            gw.admin,
            json={"reason": "test data"},
        )
        assert status == 200 and discarded["status"] == "discarded"
        assert discarded["reason"] == "test data"
        status, headers, body = await gw.call(
            "POST", f"/admin/v1/dlq/{second['id']}/discard", gw.admin, json={"reason": "again"}
        )
        assert_problem(status, headers, body, 409)
        status, _, listing = await gw.call("GET", f"/admin/v1/events?subject={subject}", gw.admin)
        states = {i["id"]: i["deliveries"][0]["state"] for i in listing["items"]}
        assert states == {first["event_id"]: "delivered", second["event_id"]: "discarded"}
    finally:
        gw.rec.always_fail = False
