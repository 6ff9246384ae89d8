"""Orders: place one as a saga across warehouse, ERP, billing and CRM; read one back.

Steps, each undone in reverse if a later one fails: reserve stock (release) -> ERP sales order
(cancel) -> billing invoice (void) -> CRM activity (a logged fact: kept) -> record the result
and the ``order.placed`` event in one store transaction. Every backend call carries a reference
derived from the Idempotency-Key, so a retry after a crash reuses what the first try made.
"""

from __future__ import annotations

import asyncio
from typing import Any

from system_apis.errors import BackendError, BackendNotFound

from .contacts import get_contact
from .durable import RECOVERY, Journal, Recovery
from .errors import NotFound
from .idempotency import attempt_reference
from .models import (
    Activity,
    Contact,
    ErpCustomer,
    Invoice,
    Order,
    OrderDetail,
    OrderLine,
    Page,
    PlacedOrder,
    PlaceOrderRequest,
    Reservation,
    StockLevel,
    dump,
)
from .ports import DomainEvent, OperationRecord, Outcome, StoredResponse
from .saga import Saga
from .service import ProcessApis
from .tracing import step
from .web import InvalidInput
from .xrefs import billing_customer, known_ids

RESERVATION_TTL_S = 7 * 24 * 3600
"""Held until fulfilment commits it (a week, the warehouse's maximum)."""

ORDER_PREFIX = "order:"
"""Store entries ``order:<id>`` link an order to its reservation and invoice."""

__all__ = [
    "ORDER_PREFIX",
    "buyer",
    "get_contact_or_422",
    "get_order",
    "list_orders",
    "order_invoice",
    "place_order",
]


def _invalid(path: str, message: str) -> InvalidInput:
    return InvalidInput(message, [{"path": path, "message": message, "type": "value_error"}])


async def _prices(apis: ProcessApis, req: PlaceOrderRequest) -> list[OrderLine]:
    """Current list prices; an unknown SKU is the caller's mistake (422 naming the line)."""
    inventory = apis.systems.inventory

    async def one(i: int) -> StockLevel:
        try:
            return await inventory.get_stock(req.lines[i].sku)
        except BackendNotFound:
            raise _invalid(f"lines/{i}/sku", f"unknown sku {req.lines[i].sku}") from None

    with step("inventory.prices"):
        stock = await asyncio.gather(*(one(i) for i in range(len(req.lines))))
    priced = []
    for i, (line, level) in enumerate(zip(req.lines, stock, strict=True)):
        if level.unit_price is None:
            raise _invalid(f"lines/{i}/sku", f"sku {line.sku} has no price")
        priced.append(OrderLine(sku=line.sku, quantity=line.quantity, unit_price=level.unit_price))
    return priced


async def place_order(
    apis: ProcessApis, req: PlaceOrderRequest, key: str, journal: Journal | None = None
) -> StoredResponse:
    """Run the saga for an already-claimed Idempotency-Key and commit its answer under it.

    With a ``journal`` (the saga log's handle, ``durable.py``) the backends get the operation's
    own reference and every step is recorded, so a dead process's order is undone elsewhere."""
    contact = await get_contact_or_422(apis, req.customer_id)
    known = await known_ids(apis, contact)
    erp_number = known.get("erp")
    if erp_number is None:
        raise _invalid("customer_id", "the customer has no ERP account yet")
    with step("billing.find_customer"):
        bill_to = await billing_customer(apis, contact, known)
    if bill_to is None:
        raise _invalid("customer_id", "the customer has no billing account yet")
    lines = await _prices(apis, req)
    ref = journal.reference if journal is not None else await attempt_reference(apis.store, key)
    systems = apis.systems
    saga = Saga("order", journal)

    reservation = await saga.run(
        "inventory.reserve",
        lambda: systems.inventory.reserve(
            lines, ref, RESERVATION_TTL_S, idempotency_key=f"reserve-{ref}"
        ),
        lambda r: systems.inventory.release(r.id),
        intent={"reference": ref, "lines": [ln.model_dump(mode="json") for ln in lines]},
    )
    order = await saga.run(
        "erp.create_order",
        lambda: systems.erp.create_order(erp_number, lines, req.channel, reference=ref),
        lambda o: systems.erp.cancel_order(o.id, "order saga compensation"),
        intent={"customer_number": erp_number, "reference": ref},
    )
    invoice = await saga.run(
        "billing.create_invoice",
        lambda: systems.billing.create_invoice(
            bill_to.id,
            lines,
            order.currency,
            order_ref=order.id,
            idempotency_key=ref,
            description=f"Sales order {order.id}",
        ),
        lambda inv: systems.billing.void_invoice(inv.id, idempotency_key=ref),
        intent={"customer_id": bill_to.id, "order_ref": order.id, "reference": ref},
    )
    activity = await saga.run(
        "crm.log_activity",
        lambda: systems.crm.create_task(
            _activity(contact.id, order.id, invoice.id, str(order.total or ""))
        ),
        keep_reason="a CRM activity is a log entry; the cancelled order shows in ERP",
    )
    placed = PlacedOrder(
        id=order.id,
        customer_id=contact.id,
        channel=req.channel,
        status=order.status,
        currency=order.currency,
        total=order.total,
        lines=order.lines,
        reservation_id=reservation.id,
        invoice_id=invoice.id,
        activity_id=activity.id,
        created_at=order.created_at,
    )
    body = dump(placed)
    response = StoredResponse(201, body)
    event = DomainEvent(
        type="order.placed",
        subject=order.id,
        data={**body, "order_id": order.id, "crm_contact_id": contact.id, "email": contact.email},
    )

    async def publish(outcome: Outcome) -> StoredResponse:
        await apis.store.commit(outcome)
        return response  # recorded with the step: the answer survives a lost finish

    await saga.run(
        "publish",
        lambda: publish(
            Outcome(
                idempotency_key=key,
                response=response,
                xrefs={
                    contact.id: {"erp": erp_number, "billing": bill_to.id},
                    ORDER_PREFIX + order.id: {
                        "inventory.reservation": reservation.id,
                        "billing.invoice": invoice.id,
                        "crm.customer": contact.id,
                    },
                },
                events=[event],
            )
        ),
        intent={"order_id": order.id, "status": 201, "body": body},
        final=True,
    )
    return response


# --- recovery from the saga log alone (the process that ran the order is gone) ---------------


async def _find_reservation(
    apis: ProcessApis, op: OperationRecord, intent: dict[str, Any]
) -> dict[str, Any] | None:
    """The warehouse dedupes a reservation on its idempotency key: asking again with the same
    key answers the one the lost call made (or makes it, to be released at once)."""
    lines = [OrderLine.model_validate(ln) for ln in intent["lines"]]
    ref = intent["reference"]
    made = await apis.systems.inventory.reserve(
        lines, ref, RESERVATION_TTL_S, idempotency_key=f"reserve-{ref}"
    )
    return made.model_dump(mode="json")


async def _find_erp_order(
    apis: ProcessApis, op: OperationRecord, intent: dict[str, Any]
) -> dict[str, Any] | None:
    found = await apis.systems.erp.find_order_by_reference(
        intent["customer_number"], intent["reference"]
    )
    return None if found is None else found.model_dump(mode="json")


async def _find_invoice(
    apis: ProcessApis, op: OperationRecord, intent: dict[str, Any]
) -> dict[str, Any] | None:
    found = await apis.systems.billing.find_invoice_by_order_ref(
        intent["customer_id"], intent["order_ref"]
    )
    return None if found is None else found.model_dump(mode="json")


async def _published(
    apis: ProcessApis, op: OperationRecord, intent: dict[str, Any]
) -> dict[str, Any] | None:
    """The commit is one transaction: its order link exists exactly when it happened."""
    links = await apis.store.xrefs(ORDER_PREFIX + intent["order_id"])
    return {"status": intent["status"], "body": intent["body"]} if links else None


async def _release(apis: ProcessApis, op: OperationRecord, result: dict[str, Any]) -> None:
    await apis.systems.inventory.release(result["id"])


async def _cancel(apis: ProcessApis, op: OperationRecord, result: dict[str, Any]) -> None:
    order = await apis.systems.erp.get_order(result["id"])
    if order.status != "cancelled":
        await apis.systems.erp.cancel_order(result["id"], "order saga compensation")


async def _void(apis: ProcessApis, op: OperationRecord, result: dict[str, Any]) -> None:
    invoice = await apis.systems.billing.get_invoice(result["id"])
    if invoice.status != "void":
        await apis.systems.billing.void_invoice(result["id"], idempotency_key=op.reference)


RECOVERY["order"] = Recovery(
    undo={
        "inventory.reserve": _release,
        "erp.create_order": _cancel,
        "billing.create_invoice": _void,
    },
    lookup={
        "inventory.reserve": _find_reservation,
        "erp.create_order": _find_erp_order,
        "billing.create_invoice": _find_invoice,
        "publish": _published,
    },
)


def _activity(contact_id: str, order_id: str, invoice_id: str, total: str) -> Activity:
    return Activity(
        subject=f"Order {order_id} placed",
        contact_id=contact_id,
        status="completed",
        description=f"Sales order {order_id}, invoice {invoice_id}, total {total}",
    )


async def get_contact_or_422(apis: ProcessApis, customer_id: str) -> Contact:
    try:
        return await get_contact(apis, customer_id)
    except NotFound:
        raise _invalid("customer_id", "no such customer") from None


async def order_invoice(apis: ProcessApis, order: Order, links: dict[str, str]) -> Invoice | None:
    """The order's billing invoice: linked by the saga, else the customer's invoice that
    references the order (seed and ERP-born orders were never linked)."""
    systems = apis.systems
    if "billing.invoice" in links:
        return await systems.billing.get_invoice(links["billing.invoice"])
    customer_id = links.get("crm.customer") or await apis.store.customer_for(
        "erp", order.customer_number
    )
    billing_id = (await apis.store.xrefs(customer_id)).get("billing") if customer_id else None
    if billing_id is None:
        erp_customer = await systems.erp.get_customer(order.customer_number)
        if erp_customer.email is None:
            return None
        found = await systems.billing.find_customer_by_email(erp_customer.email)
        billing_id = found.id if found else None
    if billing_id is None:
        return None
    page = await systems.billing.invoices_page(limit=100, customer_id=billing_id)
    return next((i for i in page.items if i.order_ref == order.id), None)


async def get_order(apis: ProcessApis, order_id: str, channel: str | None = None) -> OrderDetail:
    """The ERP order with its invoice (billing) and reservation and stock (warehouse).

    ``channel`` restricts the lookup to one sales channel: another channel's order is answered
    exactly like a missing one, so a partner cannot probe for other partners' order ids.
    """
    systems = apis.systems
    with step("erp.get_order"):
        try:
            order = await systems.erp.get_order(order_id)
        except BackendNotFound:
            raise NotFound("order", order_id) from None
    if channel is not None and order.channel != channel:
        raise NotFound("order", order_id)
    links = await apis.store.xrefs(ORDER_PREFIX + order.id)
    unavailable: list[str] = []

    async def reservation() -> Reservation | None:
        if "inventory.reservation" not in links:
            return None
        return await systems.inventory.get_reservation(links["inventory.reservation"])

    async def stock() -> list[StockLevel]:
        return list(
            await asyncio.gather(*(systems.inventory.get_stock(ln.sku) for ln in order.lines))
        )

    async def guarded(name: str, coro: Any) -> Any:
        with step(f"{name}.order_status"):
            try:
                return await asyncio.wait_for(coro, apis.section_timeout_s)
            except (BackendError, TimeoutError):
                unavailable.append(name)
                return None

    inv, res, levels = await asyncio.gather(
        guarded("billing", order_invoice(apis, order, links)),
        guarded("inventory", reservation()),
        guarded("inventory", stock()),
    )
    return OrderDetail(
        order=order,
        invoice=inv,
        reservation=res,
        stock=levels or [],
        partial=bool(unavailable),
        unavailable=sorted(set(unavailable)),
    )


async def list_orders(
    apis: ProcessApis, cursor: str | None, limit: int, channel: str | None = None
) -> Page[Order]:
    """ERP orders, newest numbering last; ``channel`` keeps only one sales channel's."""
    with step("erp.orders_page"):  # a malformed cursor is a 400 before any call
        return await apis.systems.erp.orders_page(cursor, limit, channel=channel)


async def buyer(apis: ProcessApis, order: Order) -> ErpCustomer | None:
    """Who placed the order, as the ERP knows them (None if the ERP lost the record)."""
    with step("erp.get_customer"):
        try:
            return await apis.systems.erp.get_customer(order.customer_number)
        except BackendNotFound:
            return None
