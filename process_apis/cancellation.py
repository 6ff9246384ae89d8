"""Cancel an order everywhere it lives: ERP order, billing invoice, warehouse reservation, CRM.

A cancellation cannot be rolled back (the ERP has no "uncancel"), so instead of compensating,
every step looks at the state first and acts only if needed: a failure names its step, what
was done stays done, and repeating the request (same Idempotency-Key) finishes the rest
without doing anything twice. The ERP goes first because it is the one that may refuse
(shipped, invoiced); when it refuses, nothing else has been touched. A paid invoice is not
voided: the answer says a refund is needed (billing offers us no refund API).
"""

from __future__ import annotations

import asyncio
import weakref

from system_apis.errors import BackendNotFound

from .durable import RECOVERY, Recovery
from .errors import NotFound, OrderNotCancellable
from .models import (
    Activity,
    CancelledOrder,
    CancelOrderRequest,
    Invoice,
    InvoiceStatus,
    Order,
    OrderStatus,
    Reservation,
    ReservationStatus,
    dump,
)
from .orders import ORDER_PREFIX, order_invoice
from .ports import DomainEvent, Outcome, StoredResponse
from .saga import Saga
from .service import ProcessApis
from .tracing import step

CANCELLED_MARKER = "_cancelled"
"""Entry in ``order:<id>``: the id of the ``order.cancelled`` event, so it is published once."""
KEPT = "a cancellation is not undone; repeat the same request to finish the other steps"
NOT_CANCELLABLE = frozenset({OrderStatus.SHIPPED, OrderStatus.INVOICED})
VOIDABLE = frozenset({InvoiceStatus.DRAFT, InvoiceStatus.OPEN})

__all__ = ["CANCELLED_MARKER", "activity_tag", "cancel_order"]


def activity_tag(order_id: str) -> str:
    """Written into the CRM activity, so a repeated cancellation finds it instead of adding one."""
    return f"[trellis-cancel:{order_id}]"


async def _erp_order(apis: ProcessApis, order_id: str) -> Order:
    with step("erp.get_order"):
        try:
            return await apis.systems.erp.get_order(order_id)
        except BackendNotFound:
            raise NotFound("order", order_id) from None


async def _void(apis: ProcessApis, order: Order, links: dict[str, str]) -> Invoice | None:
    invoice = await order_invoice(apis, order, links)
    if invoice is None or invoice.status not in VOIDABLE:
        return invoice  # none, already void, or paid (a refund, not a void)
    return await apis.systems.billing.void_invoice(invoice.id, idempotency_key=f"cancel:{order.id}")


async def _release(apis: ProcessApis, links: dict[str, str]) -> Reservation | None:
    reservation_id = links.get("inventory.reservation")
    if reservation_id is None:
        return None
    inventory = apis.systems.inventory
    reservation = await inventory.get_reservation(reservation_id)
    if reservation.status is not ReservationStatus.ACTIVE:
        return reservation  # released, expired, or consumed by fulfilment
    return await inventory.release(reservation_id)


async def _customer_of(apis: ProcessApis, order: Order, links: dict[str, str]) -> str | None:
    """The canonical customer (CRM contact) id: the saga's link, the store, else the ERP."""
    known = links.get("crm.customer") or await apis.store.customer_for("erp", order.customer_number)
    if known is not None:
        return known
    try:
        return (await apis.systems.erp.get_customer(order.customer_number)).crm_contact_id
    except BackendNotFound:
        return None


async def _log_activity(
    apis: ProcessApis, contact_id: str | None, order: Order, reason: str, notes: list[str]
) -> Activity | None:
    if contact_id is None:
        return None
    crm, tag = apis.systems.crm, activity_tag(order.id)
    async for task in crm.iter_tasks(contact_id):
        if task.description and tag in task.description:
            return task
    detail = "; ".join([reason, *notes])
    return await crm.create_task(
        Activity(
            subject=f"Order {order.id} cancelled",
            contact_id=contact_id,
            status="completed",
            description=f"Sales order {order.id} cancelled: {detail} {tag}",
        )
    )


def _notes(invoice: Invoice | None, reservation: Reservation | None) -> list[str]:
    notes = []
    if invoice is not None and invoice.status is InvoiceStatus.PAID:
        notes.append(
            f"invoice {invoice.id} is paid ({invoice.amount_paid} {invoice.currency}): "
            "a refund is needed; issue it in billing (Trellis cannot refund)"
        )
    if reservation is not None and reservation.status is ReservationStatus.CONSUMED:
        notes.append(f"reservation {reservation.id} was already consumed by fulfilment")
    return notes


_order_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


async def cancel_order(
    apis: ProcessApis, order_id: str, req: CancelOrderRequest, key: str
) -> StoredResponse:
    """Run the cancellation for an already-claimed Idempotency-Key and commit its answer.

    Two cancellations of one order (different keys) run one after the other in this process,
    so the second sees the first's "announced" marker and the event is published once.
    Across processes (Redis mode) that guard is the marker alone: see the closing notes.
    """
    lock = _order_locks.get(order_id)
    if lock is None:
        lock = _order_locks[order_id] = asyncio.Lock()
    async with lock:
        return await _cancel_order(apis, order_id, req, key)


async def _cancel_order(
    apis: ProcessApis, order_id: str, req: CancelOrderRequest, key: str
) -> StoredResponse:
    systems = apis.systems
    order = await _erp_order(apis, order_id)
    if order.status in NOT_CANCELLABLE:
        raise OrderNotCancellable(order.id, order.status.value)
    links = await apis.store.xrefs(ORDER_PREFIX + order.id)
    saga = Saga("cancel")
    if order.status is not OrderStatus.CANCELLED:
        order = await saga.run(
            "erp.cancel_order",
            lambda: systems.erp.cancel_order(order.id, req.reason),
            keep_reason=KEPT,
            resumable=True,
        )
    invoice = await saga.run(
        "billing.void_invoice", lambda: _void(apis, order, links), keep_reason=KEPT, resumable=True
    )
    reservation = await saga.run(
        "inventory.release", lambda: _release(apis, links), keep_reason=KEPT, resumable=True
    )
    notes = _notes(invoice, reservation)
    contact_id = await saga.run(
        "crm.find_customer", lambda: _customer_of(apis, order, links), resumable=True
    )
    activity = await saga.run(
        "crm.log_activity",
        lambda: _log_activity(apis, contact_id, order, req.reason, notes),
        keep_reason=KEPT,
        resumable=True,
    )
    refund = invoice is not None and invoice.status is InvoiceStatus.PAID
    result = CancelledOrder(
        id=order.id,
        customer_id=contact_id,
        status=order.status,
        reason=req.reason,
        invoice_id=invoice.id if invoice else None,
        invoice_status=invoice.status if invoice else None,
        reservation_id=reservation.id if reservation else None,
        reservation_status=reservation.status if reservation else None,
        refund_needed=refund,
        refund_amount=invoice.amount_paid if refund and invoice else None,
        activity_id=activity.id if activity else None,
        notes=notes,
    )
    body = dump(result)
    response = StoredResponse(200, body)
    events: list[DomainEvent] = []
    if CANCELLED_MARKER not in links:  # a cancellation is announced once per order
        data = {**body, "order_id": order.id, "currency": order.currency}
        if contact_id is not None:
            data["crm_contact_id"] = contact_id
        if order.total is not None:
            data["total"] = str(order.total)
        events.append(DomainEvent(type="order.cancelled", subject=order.id, data=data))
    marker = events[0].id if events else links[CANCELLED_MARKER]
    await saga.run(
        "publish",
        lambda: apis.store.commit(
            Outcome(
                idempotency_key=key,
                response=response,
                xrefs={ORDER_PREFIX + order.id: {CANCELLED_MARKER: marker}},
                events=events,
            )
        ),
        resumable=True,
    )
    return response


RECOVERY["cancel"] = Recovery(undo={}, lookup={}, resumable=True)
"""Interrupted, it is finished by the same request: each step skips what is already done."""
