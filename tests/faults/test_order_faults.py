"""Faults in the middle of an order or an onboarding, with the records left in the backends
and the stores checked: a store held locked mid-saga, an ERP that answers too late, an undo
that keeps failing. A retry with the same key gets the operation's one outcome."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from system_apis.models import InvoiceStatus, OrderStatus
from system_apis.sandbox import seed
from tests.eventually import eventually
from tests.gateway.helpers import token
from tests.process.harness import Gw, assert_problem

PEOPLE = seed.people()
_people = itertools.count(600)
_skus = itertools.cycle([s.sku for s in seed.skus() if s.on_hand >= 150][5:])
ORDERS_PATH = "/sap/zsd/v1/SalesOrders"
STUCK_SERIES = 'trellis_operations_stuck_total{kind="order"}'


def key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


async def records(gw: Gw, p: seed.Person, sku: str) -> dict[str, Any]:
    s = gw.systems
    orders = await s.erp.orders_page(None, 1000, customer_number=p.erp_customer_number)
    invoices = await s.billing.invoices_page(limit=100, customer_id=p.billing_customer_id)
    tasks = [t async for t in s.crm.iter_tasks(p.crm_contact_id)]
    return {
        "orders": {o.id: o for o in orders.items},
        "invoices": {i.id: i for i in invoices.items},
        "stock": (await s.inventory.get_stock(sku)).available,
        "tasks": len(tasks),
    }


def assert_nothing_kept(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Every order the saga made is cancelled, every invoice void, every unit back in stock."""
    assert after["stock"] == before["stock"]
    for number in after["orders"].keys() - before["orders"].keys():
        assert after["orders"][number].status is OrderStatus.CANCELLED, number
    for inv in after["invoices"].keys() - before["invoices"].keys():
        assert after["invoices"][inv].status is InvoiceStatus.VOID, inv


@contextlib.contextmanager
def locked(db: Path) -> Iterator[threading.Event]:
    """Hold ``db`` with BEGIN EXCLUSIVE (another process's long write) until the block ends."""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with contextlib.closing(sqlite3.connect(db, timeout=10, isolation_level=None)) as conn:
            conn.execute("BEGIN EXCLUSIVE")
            taken.set()
            release.wait(60)
            conn.execute("ROLLBACK")

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    try:
        assert taken.wait(10)
        yield taken
    finally:
        release.set()
        thread.join(10)


def store_db(gw: Gw) -> Path:
    return Path(gw.settings.gateway.data_dir) / "trellis.db"


async def test_store_outage_mid_order_never_answers_201_for_what_was_undone(clean: Gw) -> None:
    p, sku = PEOPLE[next(_people)], next(_skus)
    before = await records(clean, p, sku)
    req = {"customer_id": p.crm_contact_id, "lines": [{"sku": sku, "quantity": 1}]}
    hdr = key()
    await clean.sandbox.set_faults("billing", response_ms=1500, paths=["/v1/invoices"])
    placing = asyncio.create_task(clean.call("POST", "/process/v1/orders", json=req, headers=hdr))

    async def erp_order_made() -> bool:
        orders = await clean.systems.erp.orders_page(
            None, 1000, customer_number=p.erp_customer_number
        )
        return len(orders.items) > len(before["orders"])

    await eventually(erp_order_made)
    with locked(store_db(clean)):  # the store stays locked past its own 5 s busy timeout
        status, headers, body = await placing
    await clean.sandbox.clear_faults()
    assert_problem(status, headers, body, 503)  # a problem naming the step, not a 500
    assert body["step"] == "publish", body
    after = await records(clean, p, sku)
    assert_nothing_kept(before, after)
    assert len(after["orders"].keys() - before["orders"].keys()) == 1
    # the retry with the same key, the store back: the same problem, not the undone order
    status, headers, again = await clean.call("POST", "/process/v1/orders", json=req, headers=hdr)
    assert_problem(status, headers, again, 503)
    assert again["step"] == "publish" and again["detail"] == body["detail"]
    assert (await records(clean, p, sku))["orders"] == after["orders"]
    placed = {e["subject"] for e in clean.outbox("order.placed")}
    assert not placed & (after["orders"].keys() - before["orders"].keys())


async def test_onboarding_interrupted_by_the_store_completes_on_retry(clean: Gw) -> None:
    email = f"faults-{uuid.uuid4().hex[:10]}@example.org"
    req = {"email": email, "first_name": "Ada", "last_name": "Faults"}
    with locked(store_db(clean)):
        status, headers, body = await clean.call("POST", "/process/v1/customers", json=req)
    assert_problem(status, headers, body, 503)
    assert body["resumable"] is True, body
    contact = await clean.systems.crm.find_contact_by_email(email)
    assert contact is not None  # made in the CRM before the store failed
    status, _, customer = await clean.call("POST", "/process/v1/customers", json=req)
    assert status in (200, 201), customer
    assert customer["id"] == contact.id
    assert set(customer["system_ids"]) >= {"crm", "erp", "billing", "marketing"}
    assert await clean.systems.erp.find_customer_by_email(email) is not None
    assert await clean.systems.billing.find_customer_by_email(email) is not None
    created = [e for e in clean.outbox("customer.created") if e["subject"] == contact.id]
    assert len(created) == 1
    # and now it is complete, so another onboarding of that email is a duplicate
    status, headers, dup = await clean.call("POST", "/process/v1/customers", json=req)
    assert_problem(status, headers, dup, 409)


async def test_erp_slower_than_the_timeout_leaves_no_second_order(clean: Gw) -> None:
    """The ERP makes the order but answers after our timeout: the outcome is unknown. The
    retry with the same key makes no second order, and the one made is found by its reference
    and cancelled."""
    p, sku = PEOPLE[next(_people)], next(_skus)
    before = await records(clean, p, sku)
    req = {"customer_id": p.crm_contact_id, "lines": [{"sku": sku, "quantity": 1}]}
    hdr = key()
    await clean.sandbox.set_faults("erp", response_ms=3500, paths=[ORDERS_PATH])
    status, headers, body = await clean.call("POST", "/process/v1/orders", json=req, headers=hdr)
    await clean.sandbox.clear_faults()
    assert_problem(status, headers, body, 504)
    assert body["step"] == "erp.create_order"
    status, headers, again = await clean.call("POST", "/process/v1/orders", json=req, headers=hdr)
    assert_problem(status, headers, again, 504)

    async def reconciled() -> dict[str, Any] | None:
        now = await records(clean, p, sku)
        made = now["orders"].keys() - before["orders"].keys()
        done = made and all(now["orders"][n].status is OrderStatus.CANCELLED for n in made)
        return now if done else None

    after = await eventually(reconciled)
    assert len(after["orders"].keys() - before["orders"].keys()) == 1  # one, never two
    assert_nothing_kept(before, after)


async def test_invoice_slower_than_the_timeout_leaves_no_live_draft(clean: Gw) -> None:
    """Billing makes the invoice but answers after our timeout: the draft it made is found by
    the order it names (``metadata.order_ref``) and voided, with the order undone."""
    p, sku = PEOPLE[next(_people)], next(_skus)
    before = await records(clean, p, sku)
    req = {"customer_id": p.crm_contact_id, "lines": [{"sku": sku, "quantity": 1}]}
    await clean.sandbox.set_faults("billing", response_ms=3500, paths=["/v1/invoices"])
    status, headers, body = await clean.call("POST", "/process/v1/orders", json=req, headers=key())
    await clean.sandbox.clear_faults()
    assert_problem(status, headers, body, 504)
    assert body["step"] == "billing.create_invoice"

    async def reconciled() -> dict[str, Any] | None:
        now = await records(clean, p, sku)
        made = now["invoices"].keys() - before["invoices"].keys()
        done = made and all(now["invoices"][i].status is InvoiceStatus.VOID for i in made)
        return now if done else None

    after = await eventually(reconciled)
    assert len(after["invoices"].keys() - before["invoices"].keys()) == 1
    assert_nothing_kept(before, after)


async def test_failed_undo_becomes_a_stuck_operation_an_operator_retries(clean: Gw) -> None:
    p, sku = PEOPLE[next(_people)], next(_skus)
    before = await records(clean, p, sku)
    req = {"customer_id": p.crm_contact_id, "lines": [{"sku": sku, "quantity": 1}]}
    hdr = key()
    await clean.sandbox.set_faults("billing", error_rate=1, paths=["/v1/invoices"])
    # the order's own URL (cancel, read) fails; creating it (the collection) works
    await clean.sandbox.set_faults("erp", error_rate=1, paths=[ORDERS_PATH + "/"])
    status, headers, body = await clean.call("POST", "/process/v1/orders", json=req, headers=hdr)
    assert_problem(status, headers, body, 503)
    assert "erp.create_order" in body["not_undone"], body
    admin = {"Authorization": f"Bearer {await token(clean.url, 'test-everything')}"}

    async def stuck() -> list[dict[str, Any]]:
        _, _, listing = await clean.call(
            "GET", "/admin/v1/operations?state=stuck", client=None, headers=admin
        )
        return [op for op in listing["items"] if op["status"] == 503 and op["kind"] == "order"]

    (op,) = await eventually(stuck)
    async with clean.session.get(f"{clean.url}/metrics", headers=admin) as r:
        exposition = await r.text()
    (line,) = [ln for ln in exposition.splitlines() if ln.startswith(STUCK_SERIES)]
    assert float(line.split()[-1]) >= 1  # the alert's series
    status, _, detail = await clean.call(
        "GET", f"/admin/v1/operations/{op['id']}", client=None, headers=admin
    )
    assert status == 200
    steps = {s["name"]: s["state"] for s in detail["steps"]}
    assert steps["erp.create_order"] == "undo_failed" and steps["inventory.reserve"] == "undone"
    # the retry with the same key answers the failure, never a 201
    status, headers, again = await clean.call("POST", "/process/v1/orders", json=req, headers=hdr)
    assert_problem(status, headers, again, 503)
    # the operator fixes the ERP and retries the undo
    await clean.sandbox.clear_faults()
    status, _, retried = await clean.call(
        "POST", f"/admin/v1/operations/{op['id']}/retry", client=None, headers=admin
    )
    assert status == 200, retried
    assert retried["state"] == "failed"
    assert_nothing_kept(before, await records(clean, p, sku))
    status, _, listing = await clean.call(
        "GET", "/admin/v1/operations?state=stuck", client=None, headers=admin
    )
    assert op["id"] not in {o["id"] for o in listing["items"]}


async def test_operations_admin_needs_the_admin_scope(clean: Gw) -> None:
    status, headers, body = await clean.call("GET", "/admin/v1/operations")
    assert_problem(status, headers, body, 403)
    status, headers, body = await clean.call("GET", "/admin/v1/operations/op_x", client=None)
    assert_problem(status, headers, body, 401)
