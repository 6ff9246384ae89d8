"""Cancelling an order through the whole gateway: every system's state checked after each case
(ERP order, billing invoice, warehouse reservation and stock, CRM activity, outbox)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from decimal import Decimal
from typing import Any

from process_apis.cancellation import activity_tag
from system_apis.models import InvoiceStatus, OrderStatus, ReservationStatus, Ticket
from system_apis.sandbox import seed
from tests.eventually import eventually
from tests.process.harness import Gw, assert_problem

PEOPLE = seed.people()
STOCKED = [s.sku for s in seed.skus() if s.on_hand >= 150]
_people = itertools.count(800)
_skus = itertools.cycle(reversed(STOCKED))
REASON = {"reason": "customer changed their mind"}


def key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


async def place(gw: Gw, quantity: int = 2) -> tuple[dict[str, Any], str]:
    """A fresh order (reservation, ERP order, open invoice) and its SKU."""
    p, sku = PEOPLE[next(_people)], next(_skus)
    req = {"customer_id": p.crm_contact_id, "lines": [{"sku": sku, "quantity": quantity}]}
    status, _, body = await gw.call("POST", "/process/v1/orders", json=req, headers=key())
    assert status == 201, body
    return body, sku


async def state(gw: Gw, order: dict[str, Any], sku: str) -> dict[str, Any]:
    s = gw.systems
    return {
        "order": (await s.erp.get_order(order["id"])).status,
        "invoice": (await s.billing.get_invoice(order["invoice_id"])).status,
        "reservation": (await s.inventory.get_reservation(order["reservation_id"])).status,
        "available": (await s.inventory.get_stock(sku)).available,
        "tasks": [
            t
            async for t in s.crm.iter_tasks(order["customer_id"])
            if activity_tag(order["id"]) in (t.description or "")
        ],
    }


def cancelled_events(gw: Gw, order_id: str) -> list[dict[str, Any]]:
    return [e for e in gw.outbox("order.cancelled") if e["subject"] == order_id]


async def test_cancel_undoes_the_order_everywhere(clean: Gw) -> None:
    order, sku = await place(clean, quantity=3)
    before = await state(clean, order, sku)
    path = f"/process/v1/orders/{order['id']}/cancel"
    status, headers, body = await clean.call("POST", path, json=REASON, headers=key())
    assert status == 200, body
    assert "Idempotent-Replayed" not in headers
    assert body["status"] == "cancelled" and body["refund_needed"] is False
    assert body["invoice_status"] == "void" and body["reservation_status"] == "released"
    after = await state(clean, order, sku)
    assert after["order"] is OrderStatus.CANCELLED
    assert after["invoice"] is InvoiceStatus.VOID
    assert after["reservation"] is ReservationStatus.RELEASED
    assert after["available"] == before["available"] + 3
    assert [t.id for t in after["tasks"]] == [body["activity_id"]]
    assert "customer changed their mind" in (after["tasks"][0].description or "")
    [event] = cancelled_events(clean, order["id"])
    assert event["data"]["order_id"] == order["id"]
    assert event["data"]["crm_contact_id"] == order["customer_id"]
    assert event["data"]["refund_needed"] is False
    # and the order reads back cancelled from every system
    status, _, detail = await clean.call("GET", f"/process/v1/orders/{order['id']}")
    assert status == 200 and detail["order"]["status"] == "cancelled"
    assert detail["invoice"]["status"] == "void" and detail["reservation"]["status"] == "released"


async def test_same_key_replays_without_second_effects(clean: Gw) -> None:
    order, sku = await place(clean)
    path, hdr = f"/process/v1/orders/{order['id']}/cancel", key()
    status, _, first = await clean.call("POST", path, json=REASON, headers=hdr)
    assert status == 200, first
    after_first = await state(clean, order, sku)
    # not CRM: the order.placed subscribers write there in the background meanwhile
    for name in ("erp", "billing", "inventory"):
        await clean.sandbox.reset_hits(name)
    for _ in range(2):
        status, headers, again = await clean.call("POST", path, json=REASON, headers=hdr)
        assert status == 200 and again == first
        assert headers["Idempotent-Replayed"] == "true"
    for name in ("erp", "billing", "inventory"):  # a replay touches no backend
        assert await clean.sandbox.hits(name) == {}, name
    assert await state(clean, order, sku) == after_first
    assert len(cancelled_events(clean, order["id"])) == 1
    # the same key for another order, or another reason, is the caller's bug
    other, _ = await place(clean)
    status, headers, body = await clean.call(
        "POST", f"/process/v1/orders/{other['id']}/cancel", json=REASON, headers=hdr
    )
    assert_problem(status, headers, body, 422)
    assert (await clean.systems.erp.get_order(other["id"])).status is OrderStatus.OPEN


async def test_a_new_key_for_a_cancelled_order_repeats_nothing(clean: Gw) -> None:
    order, sku = await place(clean)
    path = f"/process/v1/orders/{order['id']}/cancel"
    status, _, first = await clean.call("POST", path, json=REASON, headers=key())
    assert status == 200
    after_first = await state(clean, order, sku)
    status, _, second = await clean.call("POST", path, json=REASON, headers=key())
    assert status == 200 and second == first
    assert await state(clean, order, sku) == after_first
    assert len(cancelled_events(clean, order["id"])) == 1


async def test_concurrent_cancels_announce_once(clean: Gw) -> None:
    """Two cancellations of one order at the same moment, under different keys: only one
    publishes order.cancelled."""
    order, _ = await place(clean)
    path = f"/process/v1/orders/{order['id']}/cancel"
    results = await asyncio.gather(
        *(clean.call("POST", path, json=REASON, headers=key()) for _ in range(2))
    )
    assert [r[0] for r in results] == [200, 200]
    assert len(cancelled_events(clean, order["id"])) == 1


async def test_shipped_order_is_409_and_nothing_changes(clean: Gw) -> None:
    shipped = next(o for o in seed.orders() if o.status == "shipped")
    erp = clean.systems.erp
    before = await erp.get_order(shipped.number)
    invoices_before = await clean.systems.billing.invoices_page(
        limit=100, customer_id=shipped.person.billing_customer_id
    )
    status, headers, body = await clean.call(
        "POST", f"/process/v1/orders/{shipped.number}/cancel", json=REASON, headers=key()
    )
    assert_problem(status, headers, body, 409)
    assert "shipped" in body["detail"]
    assert await erp.get_order(shipped.number) == before
    invoices_after = await clean.systems.billing.invoices_page(
        limit=100, customer_id=shipped.person.billing_customer_id
    )
    assert invoices_after == invoices_before
    assert cancelled_events(clean, shipped.number) == []
    for name in ("billing", "inventory"):
        hits = await clean.sandbox.hits(name)
        assert not any(k.startswith("POST") for k in hits), (name, hits)
    tasks = [t async for t in clean.systems.crm.iter_tasks(shipped.person.crm_contact_id)]
    assert not any(activity_tag(shipped.number) in (t.description or "") for t in tasks)


async def test_unknown_order_is_404_and_bad_body_422(clean: Gw) -> None:
    status, headers, body = await clean.call(
        "POST", "/process/v1/orders/4599999999/cancel", json=REASON, headers=key()
    )
    assert_problem(status, headers, body, 404)
    status, headers, body = await clean.call(
        "POST", "/process/v1/orders/not-an-order/cancel", json=REASON, headers=key()
    )
    assert_problem(status, headers, body, 404)
    order, sku = await place(clean)
    before = await state(clean, order, sku)
    for bad in ({}, {"reason": ""}, {"reason": "x", "refund": True}):
        status, headers, body = await clean.call(
            "POST", f"/process/v1/orders/{order['id']}/cancel", json=bad, headers=key()
        )
        assert_problem(status, headers, body, 422)
    status, headers, body = await clean.call(
        "POST", f"/process/v1/orders/{order['id']}/cancel", json=REASON
    )
    assert_problem(status, headers, body, 400)
    assert await state(clean, order, sku) == before


async def test_billing_down_names_the_step_and_a_retry_finishes(clean: Gw) -> None:
    order, sku = await place(clean, quantity=4)
    before = await state(clean, order, sku)
    path, hdr = f"/process/v1/orders/{order['id']}/cancel", key()
    await clean.sandbox.set_faults("billing", error_rate=1)
    status, headers, body = await clean.call("POST", path, json=REASON, headers=hdr)
    await clean.sandbox.clear_faults()
    assert_problem(status, headers, body, 503)
    assert body["step"] == "billing.void_invoice" and body["resumable"] is True
    assert "erp.cancel_order" in body["not_undone"]
    # what was done is consistent: the ERP order is cancelled, nothing after it was touched
    half = await state(clean, order, sku)
    assert half["order"] is OrderStatus.CANCELLED
    assert half["invoice"] is InvoiceStatus.OPEN
    assert half["reservation"] is ReservationStatus.ACTIVE
    assert half["available"] == before["available"] and half["tasks"] == []
    assert cancelled_events(clean, order["id"]) == []
    # the same request after recovery finishes, once
    status, headers, done = await clean.call("POST", path, json=REASON, headers=hdr)
    assert status == 200, done
    assert "Idempotent-Replayed" not in headers
    after = await state(clean, order, sku)
    assert after["invoice"] is InvoiceStatus.VOID
    assert after["reservation"] is ReservationStatus.RELEASED
    assert after["available"] == before["available"] + 4
    assert len(after["tasks"]) == 1
    assert len(cancelled_events(clean, order["id"])) == 1


async def test_paid_invoice_is_kept_and_a_refund_ticket_opened(clean: Gw) -> None:
    order, _ = await place(clean)
    billing = clean.systems.billing
    await billing.pay_invoice(order["invoice_id"], idempotency_key=uuid.uuid4().hex)
    status, _, body = await clean.call(
        "POST", f"/process/v1/orders/{order['id']}/cancel", json=REASON, headers=key()
    )
    assert status == 200, body
    assert body["refund_needed"] is True and body["invoice_status"] == "paid"
    assert Decimal(body["refund_amount"]) == Decimal(order["total"])
    assert any("refund is needed" in n for n in body["notes"])
    assert (await billing.get_invoice(order["invoice_id"])).status is InvoiceStatus.PAID
    [event] = cancelled_events(clean, order["id"])
    # the order-cancelled-refund-ticket subscriber opens a refund ticket for the customer
    support = clean.systems.support
    person = next(p for p in PEOPLE if p.crm_contact_id == order["customer_id"])
    subject = f"Refund for cancelled order {order['id']}"

    async def refund_tickets() -> list[Ticket]:
        page = await support.user_tickets_page(str(person.support_user_id), limit=100)
        return [t for t in page.items if t.subject == subject]

    ours = await eventually(refund_tickets, timeout=20, interval=0.2, message="refund ticket")
    assert len(ours) == 1 and "refund" in ours[0].tags
    assert event["id"] in (ours[0].description or "")
