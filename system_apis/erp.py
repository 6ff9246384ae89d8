"""ERP system API (legacy SAP SD, XML only): customers, sales orders, billing documents.

SAP's abbreviated names are renamed declaratively (the ``*_FIELDS`` tables, vendor -> canonical);
statuses, amounts (``NETWR``), dates (``YYYYMMDD``) and items are converted in code. A record we
cannot read is ``BadBackendData`` naming its VBELN/KUNNR and the SAP field.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import TypeVar
from xml.etree.ElementTree import Element, SubElement, tostring

from pydantic import ValidationError

from .client import BackendClient, BackendResponse
from .errors import BackendError, BackendNotFound, BadBackendData
from .ids import CursorSyntax, IdSyntax
from .models import (
    ErpCustomer,
    ErpCustomerCreate,
    Invoice,
    InvoiceStatus,
    Order,
    OrderLine,
    OrderStatus,
    Page,
)

BACKEND = "erp"
BASE = "/sap/zsd/v1"
PAGE_SIZE = 500  # the ERP is slow per request, so iterate in big pages (its maximum is 1000)
XML_HEADERS = {"Content-Type": "application/xml", "Accept": "application/xml"}

T = TypeVar("T")

CUSTOMER_FIELDS: dict[str, str] = {
    "KUNNR": "customer_number",
    "NAME1": "name",
    "SMTP_ADDR": "email",
    "TELF1": "phone",
    "ORT01": "city",
    "LAND1": "country",
    "ZZCRMID": "crm_contact_id",
}

# (GBSTK overall status, Z-status) -> canonical; GBSTK alone cannot tell shipped from invoiced.
STATUS_FROM_VENDOR: dict[tuple[str, str], OrderStatus] = {
    ("A", "ZOPN"): OrderStatus.OPEN,
    ("B", "ZCNF"): OrderStatus.CONFIRMED,
    ("C", "ZSHP"): OrderStatus.SHIPPED,
    ("C", "ZINV"): OrderStatus.INVOICED,
    ("C", "ZCAN"): OrderStatus.CANCELLED,
}
STATUS_TO_VENDOR = {v: k for k, v in STATUS_FROM_VENDOR.items()}

# --- the vendor's id syntax: SAP numbers are up to 10 ASCII digits, never all zeros ----------
NUMBER_PATTERN = r"(?=[0-9]{1,10}\Z)0*[1-9][0-9]*"
_NUMBER = re.compile(NUMBER_PATTERN, re.ASCII)
CUSTOMER_NUMBER = IdSyntax(BACKEND, "customer", NUMBER_PATTERN)
_COUNT = re.compile(r"[0-9]{1,12}", re.ASCII)
CURSOR = CursorSyntax(r"0|[1-9][0-9]{0,8}")
"""The ``$skip`` of the next page."""


# --- pure mapping ---------------------------------------------------------------------------


def alpha(number: str) -> str:
    """SAP's ALPHA conversion: ``100001`` -> ``0000100001``; not a number -> ``ValueError``."""
    if not _NUMBER.fullmatch(number):
        raise ValueError(f"{number!r} is not an SAP document or customer number")
    return number.zfill(10)


def _text(el: Element, tag: str, record: str | None, required: bool = True) -> str | None:
    child = el.find(tag)
    text = (child.text or "").strip() if child is not None else ""
    if required and not text:
        raise BadBackendData(BACKEND, f"<{tag}> is missing or empty", record=record, field=tag)
    return text or None


def _req(el: Element, tag: str, record: str | None) -> str:
    value = _text(el, tag, record)
    assert value is not None  # _text raised otherwise
    return value


def _decimal(el: Element, tag: str, record: str | None) -> Decimal:
    raw = _req(el, tag, record)
    try:
        value = Decimal(raw)
    except InvalidOperation as exc:
        raise BadBackendData(
            BACKEND, f"{raw!r} is not an amount", record=record, field=tag
        ) from exc
    if not value.is_finite():
        raise BadBackendData(BACKEND, f"{raw!r} is not an amount", record=record, field=tag)
    return value


def _int(el: Element, tag: str, record: str | None) -> int:
    raw = _req(el, tag, record)
    try:
        return int(Decimal(raw).to_integral_exact())
    except (InvalidOperation, ValueError) as exc:
        raise BadBackendData(
            BACKEND, f"{raw!r} is not a whole number", record=record, field=tag
        ) from exc


def _date(el: Element, tag: str, record: str | None, required: bool = True) -> date | None:
    raw = _text(el, tag, record, required)
    if raw is None:
        return None
    try:
        return datetime.strptime(raw, "%Y%m%d").date()
    except ValueError as exc:
        raise BadBackendData(BACKEND, f"{raw!r} is not YYYYMMDD", record=record, field=tag) from exc


def _created_at(el: Element, record: str | None) -> datetime:
    """AUDAT (document date) plus ERZET (entry time, HHMMSS) as a UTC datetime."""
    day = _date(el, "AUDAT", record)
    assert day is not None
    raw = _text(el, "ERZET", record, required=False) or "000000"
    try:
        clock = datetime.strptime(raw, "%H%M%S").time()
    except ValueError as exc:
        raise BadBackendData(
            BACKEND, f"{raw!r} is not HHMMSS", record=record, field="ERZET"
        ) from exc
    return datetime.combine(day, clock, tzinfo=UTC)


def _model(build: Callable[[], T], record: str | None, kind: str) -> T:
    """Run a model constructor; a validation error still names the record."""
    try:
        return build()
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        fld = "/".join(str(p) for p in err["loc"])
        raise BadBackendData(
            BACKEND, f"{kind} is invalid: {err['msg']}", record=record, field=fld
        ) from exc


def customer_from_vendor(el: Element) -> ErpCustomer:
    kunnr = _req(el, "KUNNR", None)
    data = {canon: _text(el, sap, kunnr, required=False) for sap, canon in CUSTOMER_FIELDS.items()}
    data["name"] = _req(el, "NAME1", kunnr)
    return _model(lambda: ErpCustomer.model_validate(data), kunnr, "customer")


def customer_to_vendor(customer: ErpCustomerCreate | ErpCustomer) -> Element:
    root = Element("Customer")
    values = customer.model_dump()
    for sap, canon in CUSTOMER_FIELDS.items():
        if sap != "KUNNR" and values.get(canon) is not None:
            SubElement(root, sap).text = str(values[canon])
    return root


def order_from_vendor(el: Element) -> Order:
    vbeln = _req(el, "VBELN", None)
    gbstk, zstat = _req(el, "GBSTK", vbeln), _req(el, "ZZSTATUS", vbeln)
    status = STATUS_FROM_VENDOR.get((gbstk, zstat))
    if status is None:
        fld = "ZZSTATUS" if zstat not in {z for _, z in STATUS_FROM_VENDOR} else "GBSTK"
        raise BadBackendData(BACKEND, f"unknown status {gbstk}/{zstat}", record=vbeln, field=fld)
    lines = [_line(item, vbeln) for item in el.findall("ITEMS/ITEM")]
    return _model(
        lambda: Order(
            id=vbeln,
            customer_number=_req(el, "KUNNR", vbeln),
            channel=_text(el, "VTWEG", vbeln, required=False),
            status=status,
            currency=_req(el, "WAERK", vbeln),
            total=_decimal(el, "NETWR", vbeln),
            created_at=_created_at(el, vbeln),
            lines=lines,
        ),
        vbeln,
        "sales order",
    )


def _line(item: Element, vbeln: str) -> OrderLine:
    where = f"{vbeln} item {_text(item, 'POSNR', vbeln, required=False) or '?'}"
    sku = _req(item, "MATNR", where)
    qty = _int(item, "KWMENG", where)
    price = _decimal(item, "NETPR", where)
    return _model(lambda: OrderLine(sku=sku, quantity=qty, unit_price=price), where, "item")


def order_to_vendor(
    customer_number: str, lines: Sequence[OrderLine], channel: str, reference: str | None
) -> Element:
    root = Element("SalesOrder")
    SubElement(root, "KUNNR").text = customer_number
    SubElement(root, "VTWEG").text = channel
    if reference:
        SubElement(root, "BSTKD").text = reference
    items = SubElement(root, "ITEMS")
    for line in lines:
        item = SubElement(items, "ITEM")
        SubElement(item, "MATNR").text = line.sku
        SubElement(item, "KWMENG").text = str(line.quantity)
        if line.unit_price is not None:
            SubElement(item, "NETPR").text = str(line.unit_price)
    return root


def invoice_from_vendor(el: Element) -> Invoice:
    number = _req(el, "VBELN_VF", None)
    total = _decimal(el, "NETWR", number)
    cleared = _text(el, "ZZCLEARED", number, required=False)
    if cleared not in (None, "X"):
        raise BadBackendData(BACKEND, f"unknown flag {cleared!r}", record=number, field="ZZCLEARED")
    billed = _date(el, "FKDAT", number)
    assert billed is not None
    return _model(
        lambda: Invoice(
            id=number,
            customer_id=_req(el, "KUNNR", number),
            status=InvoiceStatus.PAID if cleared else InvoiceStatus.OPEN,
            currency=_req(el, "WAERK", number),
            total=total,
            amount_due=Decimal(0) if cleared else total,
            amount_paid=total if cleared else Decimal(0),
            order_ref=_text(el, "AUBEL", number, required=False),
            due_date=_date(el, "NETDT", number, required=False),
            created_at=datetime.combine(billed, time(0), tzinfo=UTC),
        ),
        number,
        "billing document",
    )


def _xml_body(root: Element) -> bytes:
    body: bytes = tostring(root, encoding="utf-8", xml_declaration=True)
    return body


# --- client ---------------------------------------------------------------------------------


class ErpClient(BackendClient):
    """Typed access to the ERP. Customer and document numbers are SAP's 10-digit keys."""

    name = "erp"

    def _client_error(self, resp: BackendResponse) -> BackendError:
        """Read SAP's ``<error><message>`` so a refusal says why (the base reads only JSON)."""
        err = super()._client_error(resp)
        try:
            message = resp.xml().findtext("message")
        except BadBackendData:
            message = None
        if message:
            err.detail = message[:200]
            err.args = (f"{self.name}: {err.detail}",)
        return err

    def _number(self, number: str, kind: str) -> str:
        """A caller's customer or document number in the ERP's form; outside the syntax it
        names nothing that can exist: ``BackendNotFound`` without a call."""
        try:
            return alpha(number)
        except ValueError as exc:
            raise BackendNotFound(self.name, f"{kind} {number[:40]!r} does not exist") from exc

    async def _page(
        self, path: str, item_tag: str, skip: int, top: int, params: dict[str, str]
    ) -> tuple[list[Element], int]:
        """One ``$skip``/``$top`` page: its records and the ERP's total count."""
        query: dict[str, str | int] = {**params, "$skip": skip, "$top": top}
        root = (
            await self.request("GET", f"{BASE}/{path}", params=query, headers=XML_HEADERS)
        ).xml()
        raw_count = root.findtext("TotalCount")
        if raw_count is None or not _COUNT.fullmatch(raw_count.strip()):
            raise BadBackendData(self.name, "list answer without a TotalCount", field="TotalCount")
        return root.findall(item_tag), int(raw_count)

    async def _iterate(
        self, path: str, item_tag: str, params: dict[str, str]
    ) -> AsyncIterator[Element]:
        skip = 0
        while True:
            rows, total = await self._page(path, item_tag, skip, PAGE_SIZE, params)
            for row in rows:
                yield row
            skip += len(rows)
            if not rows or skip >= total:
                return

    async def _paged(
        self, path: str, item_tag: str, cursor: str | None, limit: int, params: dict[str, str]
    ) -> tuple[list[Element], str | None]:
        """A page for the HTTP views; the opaque cursor is the ``$skip`` of the next page."""
        skip = int(CURSOR(cursor) or 0)
        rows, total = await self._page(path, item_tag, skip, limit, params)
        end = skip + len(rows)
        return rows, (str(end) if rows and end < total else None)

    @staticmethod
    def _filters(customer_number: str | None, channel: str | None) -> dict[str, str]:
        params = {}
        if customer_number is not None:
            params["KUNNR"] = alpha(customer_number)
        if channel is not None:
            params["VTWEG"] = channel
        return params

    # --- customers ----------------------------------------------------------------------

    async def get_customer(self, number: str) -> ErpCustomer:
        path = f"{BASE}/Customers/{self._number(number, 'customer')}"
        return customer_from_vendor((await self.request("GET", path, headers=XML_HEADERS)).xml())

    async def find_customer_by_email(self, email: str) -> ErpCustomer | None:
        rows, _ = await self._page("Customers", "Customer", 0, 1, {"SMTP_ADDR": email})
        return customer_from_vendor(rows[0]) if rows else None

    async def iter_customers(self) -> AsyncIterator[ErpCustomer]:
        async for row in self._iterate("Customers", "Customer", {}):
            yield customer_from_vendor(row)

    async def customers_page(self, cursor: str | None, limit: int) -> Page[ErpCustomer]:
        rows, nxt = await self._paged("Customers", "Customer", cursor, limit, {})
        return Page[ErpCustomer](items=[customer_from_vendor(r) for r in rows], next_cursor=nxt)

    async def create_customer(self, new: ErpCustomerCreate | ErpCustomer) -> ErpCustomer:
        resp = await self.request(
            "POST",
            f"{BASE}/Customers",
            data=_xml_body(customer_to_vendor(new)),
            headers=XML_HEADERS,
        )
        return customer_from_vendor(resp.xml())

    # --- sales orders -------------------------------------------------------------------

    async def get_order(self, number: str) -> Order:
        path = f"{BASE}/SalesOrders/{self._number(number, 'sales order')}"
        return order_from_vendor((await self.request("GET", path, headers=XML_HEADERS)).xml())

    async def iter_orders(
        self, customer_number: str | None = None, channel: str | None = None
    ) -> AsyncIterator[Order]:
        async for row in self._iterate(
            "SalesOrders", "SalesOrder", self._filters(customer_number, channel)
        ):
            yield order_from_vendor(row)

    async def orders_page(
        self,
        cursor: str | None,
        limit: int,
        customer_number: str | None = None,
        channel: str | None = None,
    ) -> Page[Order]:
        rows, nxt = await self._paged(
            "SalesOrders", "SalesOrder", cursor, limit, self._filters(customer_number, channel)
        )
        return Page[Order](items=[order_from_vendor(r) for r in rows], next_cursor=nxt)

    async def create_order(
        self,
        customer_number: str,
        lines: Sequence[OrderLine],
        channel: str,
        reference: str | None = None,
    ) -> Order:
        """Create a sales order. With a ``reference`` (customer PO, BSTKD) the ERP answers the
        existing order for a repeat, so the call is then safe to retry."""
        body = order_to_vendor(self._number(customer_number, "customer"), lines, channel, reference)
        resp = await self.request(
            "POST",
            f"{BASE}/SalesOrders",
            data=_xml_body(body),
            headers=XML_HEADERS,
            idempotency_key=f"{customer_number}:{reference}" if reference else None,
        )
        return order_from_vendor(resp.xml())

    async def find_order_by_reference(self, customer_number: str, reference: str) -> Order | None:
        """The customer's order carrying our ``reference`` (customer PO, BSTKD), if any: how a
        create whose answer was lost is found."""
        params = {**self._filters(customer_number, None), "BSTKD": reference}
        async for row in self._iterate("SalesOrders", "SalesOrder", params):
            if (row.findtext("BSTKD") or "") == reference:
                return order_from_vendor(row)
        return None

    async def cancel_order(self, number: str, reason: str) -> Order:
        """Cancel (reject) an order; shipped or invoiced ones are ``BackendConflict``.
        Cancelling twice answers the cancelled order, so retries are safe."""
        vbeln = self._number(number, "sales order")
        root = Element("Cancellation")
        SubElement(root, "REASON").text = reason
        resp = await self.request(
            "POST",
            f"{BASE}/SalesOrders/{vbeln}/cancel",
            data=_xml_body(root),
            headers=XML_HEADERS,
            idempotency_key=f"cancel:{vbeln}",
        )
        return order_from_vendor(resp.xml())

    # --- billing documents --------------------------------------------------------------

    async def iter_invoices(self, customer_number: str) -> AsyncIterator[Invoice]:
        kunnr = self._number(customer_number, "customer")
        async for row in self._iterate("BillingDocuments", "BillingDocument", {"KUNNR": kunnr}):
            yield invoice_from_vendor(row)
