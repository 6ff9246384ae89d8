"""The order saga through the whole gateway: happy path, idempotency, failure at every step
with the compensation checked in the backends themselves."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from decimal import Decimal
from typing import Any

import pytest

from system_apis.models import InvoiceStatus, OrderStatus, ReservationStatus
from system_apis.sandbox import seed
from tests import crm_swap
from tests.process.harness import Gw, assert_problem

PEOPLE = seed.people()
STOCKED = [s.sku for s in seed.skus() if s.on_hand >= 150]
_people = itertools.count(100)
_skus = itertools.cycle(STOCKED)


def person() -> seed.Person:
    return PEOPLE[next(_people)]


def key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


async def snapshot(gw: Gw, p: seed.Person, skus: list[str]) -> dict[str, Any]:
    """What the saga may touch: the customer's ERP orders and invoices, and stock levels."""
    s = gw.systems
    orders = await s.erp.orders_page(None, 1000, customer_number=p.erp_customer_number)
    invoices = await s.billing.invoices_page(limit=100, customer_id=p.billing_customer_id)
    stock = {sku: (await s.inventory.get_stock(sku)).available for sku in skus}
    return {
        "orders": {o.id: o for o in orders.items},
        "invoices": {i.id: i for i in invoices.items},
        "stock": stock,
    }


async def test_place_order_runs_every_step(clean: Gw) -> None:
    p, sku = person(), next(_skus)
    before = await snapshot(clean, p, [sku])
    req = {"customer_id": p.crm_contact_id, "lines": [{"sku": sku, "quantity": 3}]}
    status, headers, body = await clean.call("POST", "/process/v1/orders", json=req, headers=key())
    assert status == 201, body
    assert "Idempotent-Replayed" not in headers
    s = clean.systems
    order = await s.erp.get_order(body["id"])
    assert order.customer_number == p.erp_customer_number and order.channel == "sales"
    assert [(ln.sku, ln.quantity) for ln in order.lines] == [(sku, 3)]
    invoice = await s.billing.get_invoice(body["invoice_id"])
    assert invoice.status is InvoiceStatus.OPEN and invoice.order_ref == order.id
    assert invoice.total == order.total == Decimal(body["total"])
    reservation = await s.inventory.get_reservation(body["reservation_id"])
    assert reservation.status is ReservationStatus.ACTIVE
    assert (await s.inventory.get_stock(sku)).available == before["stock"][sku] - 3
    tasks = [t async for t in s.crm.iter_tasks(p.crm_contact_id)]
    assert any(order.id in t.subject for t in tasks)
    events = [e for e in clean.outbox("order.placed") if e["subject"] == order.id]
    assert len(events) == 1 and events[0]["data"]["invoice_id"] == invoice.id
    assert events[0]["specversion"] == "1.0"
    # and the order reads back with its status from every system
    status, _, detail = await clean.call("GET", f"/process/v1/orders/{order.id}")
    assert status == 200, detail
    assert detail["invoice"]["id"] == invoice.id
    assert detail["reservation"]["id"] == reservation.id
    assert detail["stock"][0]["sku"] == sku


async def test_get_seed_order_and_unknown_order(clean: Gw) -> None:
    o = seed.orders()[5]
    status, _, body = await clean.call("GET", f"/process/v1/orders/{o.number}")
    assert status == 200 and body["order"]["id"] == o.number
    status, headers, body = await clean.call("GET", "/process/v1/orders/4599999999")
    assert_problem(status, headers, body, 404)


async def test_same_key_replays_without_side_effects(clean: Gw) -> None:
    p, sku = person(), next(_skus)
    req = {"customer_id": p.crm_contact_id, "lines": [{"sku": sku, "quantity": 2}]}
    hdr = key()
    status, _, first = await clean.call("POST", "/process/v1/orders", json=req, headers=hdr)
    assert status == 201, first
    after_first = await snapshot(clean, p, [sku])
    for _ in range(2):
        status, headers, again = await clean.call(
            "POST", "/process/v1/orders", json=req, headers=hdr
        )
        assert status == 201 and again == first
        assert headers["Idempotent-Replayed"] == "true"
    after = await snapshot(clean, p, [sku])
    assert after["orders"].keys() == after_first["orders"].keys()
    assert after["invoices"].keys() == after_first["invoices"].keys()
    assert after["stock"] == after_first["stock"]
    assert len([e for e in clean.outbox("order.placed") if e["subject"] == first["id"]]) == 1


async def test_same_key_different_body_is_422(clean: Gw) -> None:
    p, sku = person(), next(_skus)
    hdr = key()
    req = {"customer_id": p.crm_contact_id, "lines": [{"sku": sku, "quantity": 1}]}
    status, _, _ = await clean.call("POST", "/process/v1/orders", json=req, headers=hdr)
    assert status == 201
    before = await snapshot(clean, p, [sku])
    req["lines"][0]["quantity"] = 5
    status, headers, body = await clean.call("POST", "/process/v1/orders", json=req, headers=hdr)
    assert_problem(status, headers, body, 422)
    assert body["errors"][0]["path"] == "header/Idempotency-Key"
    assert await snapshot(clean, p, [sku]) == before


async def test_same_key_concurrently_places_one_order(clean: Gw) -> None:
    p, sku = person(), next(_skus)
    before = await snapshot(clean, p, [sku])
    req = {"customer_id": p.crm_contact_id, "lines": [{"sku": sku, "quantity": 4}]}
    hdr = key()
    results = await asyncio.gather(
        *(clean.call("POST", "/process/v1/orders", json=req, headers=hdr) for _ in range(6))
    )
    statuses = sorted(r[0] for r in results)
    assert set(statuses) <= {201, 409}, results
    fresh = [r for r in results if r[0] == 201 and "Idempotent-Replayed" not in r[1]]
    assert len(fresh) == 1
    for status, headers, body in results:
        if status == 409:
            assert_problem(status, headers, body, 409)
    # the late ones retry and get the first answer
    status, headers, replay = await clean.call("POST", "/process/v1/orders", json=req, headers=hdr)
    assert status == 201 and replay == fresh[0][2] and headers["Idempotent-Replayed"] == "true"
    after = await snapshot(clean, p, [sku])
    assert len(after["orders"].keys() - before["orders"].keys()) == 1
    assert len(after["invoices"].keys() - before["invoices"].keys()) == 1
    assert after["stock"][sku] == before["stock"][sku] - 4  # exactly one reservation


SAGA_FAULTS = [
    ("inventory.reserve", "inventory", ["/v1/reservations"]),
    ("erp.create_order", "erp", ["/sap/zsd/v1/SalesOrders"]),
    ("billing.create_invoice", "billing", ["/v1/invoices"]),
    ("crm.log_activity", "crm", [crm_swap.crm().tasks_path]),
]


@pytest.mark.parametrize(
    ("step", "backend", "paths"), SAGA_FAULTS, ids=[s for s, _, _ in SAGA_FAULTS]
)
async def test_saga_failure_is_compensated(
    clean: Gw, step: str, backend: str, paths: list[str]
) -> None:
    p, skus = person(), [next(_skus), next(_skus)]
    before = await snapshot(clean, p, skus)
    req = {
        "customer_id": p.crm_contact_id,
        "lines": [{"sku": skus[0], "quantity": 2}, {"sku": skus[1], "quantity": 1}],
    }
    hdr = key()
    await clean.sandbox.set_faults(backend, error_rate=1, paths=paths)
    status, headers, body = await clean.call("POST", "/process/v1/orders", json=req, headers=hdr)
    await clean.sandbox.clear_faults()
    assert_problem(status, headers, body, 503)
    assert f"step {step} failed" in body["detail"], body
    after = await snapshot(clean, p, skus)
    # stock: every reservation released
    assert after["stock"] == before["stock"]
    # ERP: any order the saga made is cancelled
    for number in after["orders"].keys() - before["orders"].keys():
        assert after["orders"][number].status is OrderStatus.CANCELLED
    # billing: any invoice the saga made is void
    for inv in after["invoices"].keys() - before["invoices"].keys():
        assert after["invoices"][inv].status is InvoiceStatus.VOID
    made = {
        "inventory.reserve": (0, 0),
        "erp.create_order": (0, 0),
        "billing.create_invoice": (1, 0),
        "crm.log_activity": (1, 1),
    }[step]
    assert len(after["orders"].keys() - before["orders"].keys()) == made[0]
    assert len(after["invoices"].keys() - before["invoices"].keys()) == made[1]
    # the same key answers the same problem: never a 201 for what was undone
    status, headers, again = await clean.call("POST", "/process/v1/orders", json=req, headers=hdr)
    assert_problem(status, headers, again, 503)
    assert again["detail"] == body["detail"] and again["step"] == step
    # a new key places the order once the backend is back
    status, _, ok = await clean.call("POST", "/process/v1/orders", json=req, headers=key())
    assert status == 201, ok
    order = await clean.systems.erp.get_order(ok["id"])
    assert order.status is OrderStatus.OPEN


async def test_lost_answer_is_settled_then_undone_and_retry_makes_one_order(clean: Gw) -> None:
    """The ERP creates the order but every answer to our tries is cut off: the saga replays the
    step by its reference to learn what was made, undoes it with the rest; a retry with the
    same key answers that failure again and makes nothing, and a new key makes one order."""
    p, skus = person(), [next(_skus)]
    before = await snapshot(clean, p, skus)
    req = {"customer_id": p.crm_contact_id, "lines": [{"sku": skus[0], "quantity": 1}]}
    hdr = key()
    attempts = clean.systems.erp.config.retry.max_attempts
    await clean.sandbox.set_faults("erp", truncate_next=attempts, paths=["/sap/zsd/v1/SalesOrders"])
    status, headers, body = await clean.call("POST", "/process/v1/orders", json=req, headers=hdr)
    await clean.sandbox.clear_faults()
    assert_problem(status, headers, body, 503)
    assert "erp.create_order" in body["detail"]
    mid = await snapshot(clean, p, skus)
    made = mid["orders"].keys() - before["orders"].keys()
    assert len(made) == 1  # the order the lost answers hid...
    assert all(mid["orders"][n].status is OrderStatus.CANCELLED for n in made)  # ...is undone
    assert mid["stock"] == before["stock"]
    status, headers, again = await clean.call("POST", "/process/v1/orders", json=req, headers=hdr)
    assert_problem(status, headers, again, 503)
    assert again["detail"] == body["detail"]
    assert (await snapshot(clean, p, skus))["orders"] == mid["orders"]
    status, _, ok = await clean.call("POST", "/process/v1/orders", json=req, headers=key())
    assert status == 201, ok
    after = await snapshot(clean, p, skus)
    new = after["orders"].keys() - before["orders"].keys()
    open_orders = [n for n in new if after["orders"][n].status is OrderStatus.OPEN]
    assert open_orders == [ok["id"]]


async def test_insufficient_stock_is_409_and_nothing_is_kept(clean: Gw) -> None:
    p, sku = person(), next(_skus)
    before = await snapshot(clean, p, [sku])
    req = {
        "customer_id": p.crm_contact_id,
        "lines": [{"sku": sku, "quantity": before["stock"][sku] + 1}],
    }
    status, headers, body = await clean.call("POST", "/process/v1/orders", json=req, headers=key())
    assert_problem(status, headers, body, 409)
    assert "inventory.reserve" in body["detail"]
    assert await snapshot(clean, p, [sku]) == before


BAD_ORDERS: list[tuple[str, Any, int, str]] = [
    ("malformed", b'{"customer_id": ', 400, ""),
    ("no-lines", {"lines": []}, 422, "lines"),
    ("zero-quantity", {"lines": [{"sku": "SKU-0001", "quantity": 0}]}, 422, "lines/0/quantity"),
    ("unknown-sku", {"lines": [{"sku": "SKU-9999", "quantity": 1}]}, 422, "lines/0/sku"),
    (
        "duplicate-sku",
        {"lines": [{"sku": "SKU-0001", "quantity": 1}, {"sku": "SKU-0001", "quantity": 1}]},
        422,
        "lines",
    ),
    ("unknown-customer", {"customer_id": seed.crm_ids().missing_contact}, 422, "customer_id"),
    *[  # a contact id of another CRM than the one configured: refused before any call
        (f"{ids.connector}-id", {"customer_id": ids.contact(1)}, 422, "customer_id")
        for ids in seed.CRM_IDS.values()
        if ids is not seed.crm_ids()
    ],
    ("bad-channel", {"channel": "partner-"}, 422, "channel"),
    ("extra-field", {"discount": 99}, 422, "discount"),
]


@pytest.mark.parametrize(
    ("case", "patch", "expected", "path"), BAD_ORDERS, ids=[c for c, *_ in BAD_ORDERS]
)
async def test_bad_orders_create_nothing(
    clean: Gw, case: str, patch: Any, expected: int, path: str
) -> None:
    p, sku = person(), next(_skus)
    before = await snapshot(clean, p, [sku, "SKU-0001"])
    if isinstance(patch, dict):
        req = {"customer_id": p.crm_contact_id, "lines": [{"sku": sku, "quantity": 1}], **patch}
        kw: dict[str, Any] = {"json": req}
    else:
        kw = {"data": patch, "headers": {"Content-Type": "application/json"}}
    kw["headers"] = {**kw.get("headers", {}), **key()}
    status, headers, body = await clean.call("POST", "/process/v1/orders", **kw)
    assert_problem(status, headers, body, expected)
    if path:
        assert path in [e["path"] for e in body["errors"]], body
    assert await snapshot(clean, p, [sku, "SKU-0001"]) == before
    hits = await clean.sandbox.hits("inventory")
    assert not any(k.startswith("POST") for k in hits), hits


async def test_missing_idempotency_key_is_400(clean: Gw) -> None:
    p = person()
    req = {"customer_id": p.crm_contact_id, "lines": [{"sku": STOCKED[0], "quantity": 1}]}
    status, headers, body = await clean.call("POST", "/process/v1/orders", json=req)
    assert_problem(status, headers, body, 400)
    assert body["errors"][0]["path"] == "header/Idempotency-Key"


async def test_keys_are_scoped_per_caller(clean: Gw) -> None:
    """Another client reusing a key string does not get this client's order."""
    p, sku = person(), next(_skus)
    hdr = key()
    req = {"customer_id": p.crm_contact_id, "lines": [{"sku": sku, "quantity": 1}]}
    status, _, first = await clean.call("POST", "/process/v1/orders", json=req, headers=hdr)
    assert status == 201
    store = clean.process.store
    assert await store.xrefs("order:" + first["id"])
