"""The billing system API against the Stripe-like sandbox over real HTTP, plus its pure mapping."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import httpx
import orjson
import pytest
from aiohttp import web
from starlette.applications import Starlette

from system_apis.billing import (
    BillingClient,
    WebhookSignatureError,
    cents_to_decimal,
    customer_from_vendor,
    customer_to_vendor,
    decimal_to_cents,
    invoice_from_vendor,
    list_from_vendor,
    payment_from_vendor,
    to_form,
    verify_webhook_signature,
)
from system_apis.config import BackendConfig
from system_apis.errors import BackendAuthFailed, BackendNotFound, BackendRejected, BadBackendData
from system_apis.http.billing import routes
from system_apis.models import BillingCustomer, InvoiceStatus, OrderLine, PaymentStatus
from system_apis.sandbox import seed
from system_apis.sandbox.billing import API_KEY, WEBHOOK_SECRET, parse_form, sign_payload

SEED_INVOICES = sum(1 for o in seed.orders() if o.status in ("shipped", "invoiced"))


def config(key: str = API_KEY) -> BackendConfig:
    return BackendConfig.model_validate(
        {
            "sandbox": True,
            "auth": {"kind": "api_key", "header": "Authorization", "prefix": "Bearer ", "key": key},
            "retry": {"max_attempts": 3, "base_delay_s": 0.01, "max_delay_s": 0.05},
            "rate_limit": {"rate": 100, "period_s": 1},
        }
    )


@pytest.fixture
async def client(clean_sandbox: Any) -> AsyncIterator[BillingClient]:
    c = BillingClient(config(), base_url=clean_sandbox.url("billing"))
    await c.start()
    yield c
    await c.close()


def unique_email() -> str:
    return f"billing-{uuid.uuid4().hex[:10]}@test.example.com"


async def new_customer(client: BillingClient) -> BillingCustomer:
    return await client.create_customer(unique_email(), "Test Customer", crm_contact_id="003X")


def is_seed_invoice(invoice_id: str) -> bool:
    return int(invoice_id.removeprefix("in_TR")) <= seed.ORDERS


# --- money and forms -------------------------------------------------------------------------


def test_cents_both_ways_are_exact() -> None:
    assert cents_to_decimal(1999, "usd") == Decimal("19.99")
    assert isinstance(cents_to_decimal(1, "usd"), Decimal)
    assert decimal_to_cents(Decimal("19.99"), "USD") == 1999
    assert decimal_to_cents(Decimal("0.10"), "USD") == 10
    assert cents_to_decimal(500, "jpy") == Decimal(500)  # zero-decimal currency
    assert decimal_to_cents(Decimal("500"), "JPY") == 500
    with pytest.raises(ValueError, match="minor units"):
        decimal_to_cents(Decimal("1.005"), "USD")
    with pytest.raises(ValueError):
        decimal_to_cents(Decimal("1.5"), "JPY")


def test_form_encoding_round_trips_through_the_vendor_parser() -> None:
    data = {
        "customer": "cus_1",
        "metadata": {"order_ref": "45", "skip": None},
        "lines": [{"amount": 100}, {"unit_amount": 250, "quantity": 2}],
        "enabled_events": ["invoice.paid"],
    }
    pairs = to_form(data)
    assert ("metadata[order_ref]", "45") in pairs
    assert ("lines[1][quantity]", "2") in pairs
    assert parse_form(pairs) == {
        "customer": "cus_1",
        "metadata": {"order_ref": "45"},
        "lines": [{"amount": "100"}, {"unit_amount": "250", "quantity": "2"}],
        "enabled_events": ["invoice.paid"],
    }


# --- pure mapping ----------------------------------------------------------------------------

RAW_CUSTOMER = {
    "id": "cus_1",
    "object": "customer",
    "email": "a@b.example",
    "name": "Ada",
    "metadata": {"crm_contact_id": "003A", "erp_customer_number": "0000100001"},
}
RAW_INVOICE = {
    "id": "in_1",
    "object": "invoice",
    "customer": "cus_1",
    "status": "open",
    "currency": "usd",
    "total": 12345,
    "amount_due": 12345,
    "amount_paid": 0,
    "created": 1_767_225_600,
    "due_date": 1_769_817_600,
    "metadata": {"order_ref": "4500000001"},
}
RAW_PAYMENT = {
    "id": "pi_1",
    "object": "payment_intent",
    "customer": "cus_1",
    "invoice": "in_1",
    "amount": 12345,
    "currency": "eur",
    "status": "processing",
    "created": 1_767_225_600,
}


def test_customer_mapping_both_ways() -> None:
    c = customer_from_vendor(RAW_CUSTOMER)
    assert c == BillingCustomer(
        id="cus_1",
        email="a@b.example",
        name="Ada",
        crm_contact_id="003A",
        erp_customer_number="0000100001",
    )
    assert parse_form(customer_to_vendor(c)) == {
        "email": "a@b.example",
        "name": "Ada",
        "metadata": {"crm_contact_id": "003A", "erp_customer_number": "0000100001"},
    }


def test_invoice_mapping_converts_cents_and_status() -> None:
    inv = invoice_from_vendor(RAW_INVOICE)
    assert inv.total == Decimal("123.45") and inv.amount_due == Decimal("123.45")
    assert inv.amount_paid == Decimal(0)
    assert inv.currency == "USD" and inv.status is InvoiceStatus.OPEN
    assert inv.order_ref == "4500000001"
    assert inv.due_date is not None and inv.due_date.isoformat() == "2026-01-31"
    assert inv.created_at is not None and inv.created_at.year == 2026


def test_payment_mapping() -> None:
    p = payment_from_vendor(RAW_PAYMENT)
    assert p.amount == Decimal("123.45") and p.currency == "EUR"
    assert p.status is PaymentStatus.PENDING and p.invoice_id == "in_1"
    assert payment_from_vendor({**RAW_PAYMENT, "status": "canceled"}).status is PaymentStatus.FAILED


@pytest.mark.parametrize(
    ("mapper", "raw", "field"),
    [
        (customer_from_vendor, {**RAW_CUSTOMER, "email": None}, "email"),
        (customer_from_vendor, {**RAW_CUSTOMER, "metadata": ["x"]}, "metadata"),
        (
            customer_from_vendor,
            {**RAW_CUSTOMER, "metadata": {"crm_contact_id": 5}},
            "crm_contact_id",
        ),
        (invoice_from_vendor, {**RAW_INVOICE, "total": 123.45}, "total"),
        (invoice_from_vendor, {**RAW_INVOICE, "amount_due": "12345"}, "amount_due"),
        (
            invoice_from_vendor,
            {k: v for k, v in RAW_INVOICE.items() if k != "customer"},
            "customer",
        ),
        (invoice_from_vendor, {**RAW_INVOICE, "status": "overdue"}, "status"),
        (invoice_from_vendor, {**RAW_INVOICE, "currency": "dollars"}, "currency"),
        (invoice_from_vendor, {**RAW_INVOICE, "created": "yesterday"}, "created"),
        (payment_from_vendor, {**RAW_PAYMENT, "amount": True}, "amount"),
        (payment_from_vendor, {**RAW_PAYMENT, "status": "lost"}, "status"),
    ],
)
def test_bad_vendor_data_names_record_and_field(
    mapper: Any, raw: dict[str, Any], field: str
) -> None:
    with pytest.raises(BadBackendData) as info:
        mapper(raw)
    assert info.value.backend == "billing"
    assert info.value.record == raw["id"]
    assert info.value.field == field


def test_bad_vendor_data_without_an_id_or_object() -> None:
    with pytest.raises(BadBackendData) as info:
        invoice_from_vendor({"object": "invoice"})
    assert info.value.field == "id"
    with pytest.raises(BadBackendData):
        customer_from_vendor(["not", "an", "object"])
    with pytest.raises(BadBackendData) as info:
        list_from_vendor({"object": "list", "data": [], "has_more": "yes"}, customer_from_vendor)
    assert info.value.field == "has_more"


# --- webhook signatures ----------------------------------------------------------------------


def test_webhook_signature_verification() -> None:
    body = b'{"id":"evt_1","type":"invoice.paid"}'
    now = 1_800_000_000
    header = sign_payload(body, WEBHOOK_SECRET, now)
    verify_webhook_signature(body, header, WEBHOOK_SECRET, now=now + 10)
    # Several v1 signatures (a secret being rolled): one match is enough.
    verify_webhook_signature(body, header + ",v1=" + "0" * 64, WEBHOOK_SECRET, now=now)
    bad = [
        (body + b" ", header, now),  # tampered body
        (body, sign_payload(body, "whsec_other", now), now),  # wrong secret
        (body, header, now + 301),  # stale
        (body, "", now),  # missing
        (body, "t=abc,v1=00", now),  # malformed timestamp
        (body, f"t={now}", now),  # no signature
    ]
    for payload, hdr, at in bad:
        with pytest.raises(WebhookSignatureError):
            verify_webhook_signature(payload, hdr, WEBHOOK_SECRET, now=at)


# --- reads against the sandbox ---------------------------------------------------------------


async def test_get_seed_customer_maps_every_field(client: BillingClient) -> None:
    p = seed.people()[0]
    c = await client.get_customer(p.billing_customer_id)
    assert c == BillingCustomer(
        id=p.billing_customer_id,
        email=p.email,
        name=p.name,
        crm_contact_id=p.crm_contact_id,
        erp_customer_number=p.erp_customer_number,
    )
    found = await client.find_customer_by_email(p.email)
    assert found == c
    assert await client.find_customer_by_email(unique_email()) is None


async def test_iter_customers_walks_every_page(client: BillingClient) -> None:
    ids = [c.id async for c in client.iter_customers()]
    assert len(ids) == len(set(ids))
    seed_ids = {p.billing_customer_id for p in seed.people()}
    assert seed_ids <= set(ids)
    assert client.stats.calls >= len(ids) // 100


async def test_pages_chain_by_cursor_without_overlap(client: BillingClient) -> None:
    first = await client.customers_page(limit=3)
    assert len(first.items) == 3 and first.next_cursor == first.items[-1].id
    second = await client.customers_page(first.next_cursor, limit=3)
    assert len(second.items) == 3
    assert not {c.id for c in first.items} & {c.id for c in second.items}
    with pytest.raises(ValueError):
        await client.customers_page(limit=101)


async def test_iter_invoices_counts_the_seed(client: BillingClient) -> None:
    seen = [inv async for inv in client.iter_invoices() if is_seed_invoice(inv.id)]
    assert len(seen) == SEED_INVOICES
    assert {inv.status for inv in seen} >= {
        InvoiceStatus.PAID,
        InvoiceStatus.OPEN,
        InvoiceStatus.VOID,
    }
    refs = {o.number for o in seed.orders() if o.status in ("shipped", "invoiced")}
    assert {inv.order_ref for inv in seen} == refs
    paid = [inv async for inv in client.iter_invoices(status=InvoiceStatus.PAID)]
    assert paid and all(inv.status is InvoiceStatus.PAID for inv in paid)
    assert all(inv.amount_paid == inv.total for inv in paid)


async def test_seed_invoice_totals_match_the_erp_orders(client: BillingClient) -> None:
    order = next(o for o in seed.orders() if o.status == "invoiced")
    invoices = [
        inv async for inv in client.iter_invoices(customer_id=order.person.billing_customer_id)
    ]
    match = [inv for inv in invoices if inv.order_ref == order.number]
    assert len(match) == 1
    assert match[0].total == order.total
    assert match[0].customer_id == order.person.billing_customer_id


async def test_payments_of_a_customer(client: BillingClient) -> None:
    order = next(o for o in seed.orders() if o.status == "invoiced")
    payments = [p async for p in client.iter_payments(order.person.billing_customer_id)]
    assert all(p.customer_id == order.person.billing_customer_id for p in payments)


async def test_not_found_is_typed(client: BillingClient) -> None:
    with pytest.raises(BackendNotFound):
        await client.get_customer("cus_nope")
    with pytest.raises(BackendNotFound):
        await client.get_invoice("in_nope/../../v1/customers")


async def test_bad_credentials_are_a_typed_error(clean_sandbox: Any) -> None:
    c = BillingClient(config("sk_test_wrong"), base_url=clean_sandbox.url("billing"))
    await c.start()
    try:
        with pytest.raises(BackendAuthFailed) as info:
            await c.get_customer(seed.people()[0].billing_customer_id)
        assert info.value.backend == "billing"
    finally:
        await c.close()


async def test_malformed_body_is_bad_backend_data(
    client: BillingClient, clean_sandbox: Any
) -> None:
    await clean_sandbox.set_faults("billing", malformed_rate=1)
    with pytest.raises(BadBackendData):
        await client.get_customer(seed.people()[0].billing_customer_id)


# --- writes ----------------------------------------------------------------------------------


async def test_created_customer_is_visible(client: BillingClient) -> None:
    email = unique_email()
    c = await client.create_customer(email, "Grace Test", "003NEW", "0000999999")
    assert c.id.startswith("cus_") and c.email == email
    assert await client.get_customer(c.id) == c
    assert await client.find_customer_by_email(email) == c


async def test_customer_create_with_caller_key_is_idempotent(client: BillingClient) -> None:
    key, email = uuid.uuid4().hex, unique_email()
    a = await client.create_customer(email, "Once", idempotency_key=key)
    b = await client.create_customer(email, "Once", idempotency_key=key)
    assert a.id == b.id
    page = await client.customers_page(email=email, limit=10)
    assert [c.id for c in page.items] == [a.id]
    with pytest.raises(BackendRejected) as info:  # same key, different params
        await client.create_customer(email, "Twice", idempotency_key=key)
    assert info.value.upstream_status == 400


async def test_retried_create_makes_one_customer(client: BillingClient, clean_sandbox: Any) -> None:
    await clean_sandbox.set_faults("billing", fail_next=1, error_statuses=[503])
    email = unique_email()
    c = await client.create_customer(email, "Retried")
    assert client.stats.retries == 1
    page = await client.customers_page(email=email)
    assert [x.id for x in page.items] == [c.id]


async def test_vendor_idempotency_replay_and_mismatch(clean_sandbox: Any) -> None:
    url = clean_sandbox.url("billing") + "/v1/customers"
    headers = {"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": uuid.uuid4().hex}
    email = unique_email()
    async with aiohttp.ClientSession(headers=headers) as s:
        async with s.post(url, data={"email": email, "name": "A"}) as r1:
            first = await r1.json()
            assert r1.status == 200 and "Idempotent-Replayed" not in r1.headers
        async with s.post(url, data={"email": email, "name": "A"}) as r2:
            assert r2.status == 200 and r2.headers["Idempotent-Replayed"] == "true"
            assert (await r2.json())["id"] == first["id"]
        async with s.post(url, data={"email": email, "name": "B"}) as r3:
            assert r3.status == 400
            assert (await r3.json())["error"]["type"] == "idempotency_error"
        async with s.post(
            url, data={"email": "not-an-email"}, headers={"Idempotency-Key": uuid.uuid4().hex}
        ) as r4:
            err = (await r4.json())["error"]
            assert r4.status == 400 and err["param"] == "email"


async def test_invoice_lifecycle(client: BillingClient) -> None:
    customer = await new_customer(client)
    lines = [
        OrderLine(sku="SKU-0001", quantity=3, unit_price=Decimal("19.99")),
        OrderLine(sku="SKU-0002", quantity=1, unit_price=Decimal("0.01")),
    ]
    inv = await client.create_invoice(customer.id, lines, order_ref="4599999999")
    assert inv.status is InvoiceStatus.OPEN
    assert inv.total == Decimal("59.98") and inv.amount_due == Decimal("59.98")
    assert inv.order_ref == "4599999999" and inv.customer_id == customer.id
    listed = [i async for i in client.iter_invoices(customer_id=customer.id)]
    assert [i.id for i in listed] == [inv.id]

    paid = await client.pay_invoice(inv.id)
    assert paid.status is InvoiceStatus.PAID and paid.amount_paid == Decimal("59.98")
    assert (await client.get_invoice(inv.id)).status is InvoiceStatus.PAID
    payments = [p async for p in client.iter_payments(customer.id)]
    assert len(payments) == 1
    assert payments[0].invoice_id == inv.id and payments[0].amount == Decimal("59.98")
    assert payments[0].status is PaymentStatus.SUCCEEDED

    with pytest.raises(BackendRejected) as info:
        await client.void_invoice(inv.id)
    assert info.value.upstream_status == 400


async def test_void_an_open_invoice(client: BillingClient) -> None:
    customer = await new_customer(client)
    inv = await client.create_invoice(customer.id, [Decimal("10.00"), Decimal("2.50")])
    assert inv.total == Decimal("12.50")
    voided = await client.void_invoice(inv.id)
    assert voided.status is InvoiceStatus.VOID
    assert (await client.get_invoice(inv.id)).status is InvoiceStatus.VOID
    with pytest.raises(BackendRejected):
        await client.pay_invoice(inv.id)


async def test_create_invoice_with_same_key_makes_one_invoice(client: BillingClient) -> None:
    customer = await new_customer(client)
    key = uuid.uuid4().hex
    a = await client.create_invoice(customer.id, [Decimal("5.00")], idempotency_key=key)
    b = await client.create_invoice(customer.id, [Decimal("5.00")], idempotency_key=key)
    assert a.id == b.id
    assert len([i async for i in client.iter_invoices(customer_id=customer.id)]) == 1


async def test_create_invoice_for_unknown_customer(client: BillingClient) -> None:
    with pytest.raises(BackendNotFound):
        await client.create_invoice("cus_missing", [Decimal("1.00")])


async def test_paid_invoice_sends_a_signed_webhook(
    client: BillingClient, clean_sandbox: Any
) -> None:
    received: asyncio.Queue[tuple[bytes, str]] = asyncio.Queue()

    async def receive(request: web.Request) -> web.Response:
        await received.put((await request.read(), request.headers.get("Stripe-Signature", "")))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    endpoint = await client.request(
        "POST",
        "/v1/webhook_endpoints",
        data=f"url=http://127.0.0.1:{port}/hook&enabled_events[]=invoice.paid",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        idempotency_key=uuid.uuid4().hex,
    )
    endpoint_id = endpoint.json_object()["id"]
    try:
        customer = await new_customer(client)
        inv = await client.create_invoice(customer.id, [Decimal("42.00")])
        await client.pay_invoice(inv.id)
        while True:  # other tests' payments may reach this endpoint too: find ours
            body, signature = await asyncio.wait_for(received.get(), timeout=10)
            verify_webhook_signature(body, signature, WEBHOOK_SECRET, now=time.time())
            event = orjson.loads(body)
            if event["data"]["object"]["id"] == inv.id:
                break
        assert event["type"] == "invoice.paid" and event["id"].startswith("evt_")
        assert invoice_from_vendor(event["data"]["object"]).status is InvoiceStatus.PAID
        with pytest.raises(WebhookSignatureError):
            verify_webhook_signature(body + b"x", signature, WEBHOOK_SECRET)
    finally:
        await client.request("DELETE", f"/v1/webhook_endpoints/{endpoint_id}")
        await runner.cleanup()


# --- canonical HTTP views --------------------------------------------------------------------


async def test_http_views(client: BillingClient) -> None:
    app = Starlette(routes=routes(client))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:
        r = await http.get("/customers", params={"limit": 2})
        assert r.status_code == 200
        body = r.json()
        assert len(body["items"]) == 2 and body["next_cursor"] == body["items"][-1]["id"]
        r = await http.get("/customers", params={"limit": 2, "cursor": body["next_cursor"]})
        assert r.json()["items"][0]["id"] != body["items"][0]["id"]

        r = await http.post("/customers", json={"email": unique_email(), "name": "View"})
        assert r.status_code == 201
        cid = r.json()["id"]
        r = await http.post(
            "/invoices",
            json={
                "customer_id": cid,
                "order_ref": "4500000123",
                "lines": [{"sku": "SKU-0003", "quantity": 2, "unit_price": "7.25"}],
            },
        )
        assert r.status_code == 201 and r.json()["total"] == "14.50"
        iid = r.json()["id"]
        assert (await http.get(f"/invoices/{iid}")).json()["status"] == "open"
        r = await http.get("/invoices", params={"customer": cid, "status": "open"})
        assert [i["id"] for i in r.json()["items"]] == [iid]
        assert (await http.post(f"/invoices/{iid}/void")).json()["status"] == "void"
        assert (await http.get(f"/customers/{cid}")).json()["email"].startswith("billing-")
        r = await http.get(f"/customers/{seed.people()[0].billing_customer_id}/payments")
        assert r.status_code == 200 and "items" in r.json()


async def test_vendor_shapes_for_auth_and_list_params(clean_sandbox: Any) -> None:
    """The sandbox answers like Stripe: its 401 body and parameter errors naming ``param``."""
    base = clean_sandbox.url("billing") + "/v1"
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/customers", headers={"Authorization": "Bearer sk_x"}) as r:
            assert r.status == 401
            assert (await r.json())["error"]["type"] == "invalid_request_error"
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with s.get(f"{base}/invoices?limit=101", headers=headers) as r:
            assert r.status == 400 and (await r.json())["error"]["param"] == "limit"
        async with s.get(f"{base}/customers?starting_after=cus_gone", headers=headers) as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "resource_missing"
        async with s.post(f"{base}/invoices", headers=headers, data={"currency": "usd"}) as r:
            err = (await r.json())["error"]
            assert r.status == 400 and err["code"] == "parameter_missing"
            assert err["param"] == "customer"
