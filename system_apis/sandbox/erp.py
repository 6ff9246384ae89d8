"""Sandbox ERP imitating a legacy SAP SD system: XML only, SAP field names, and slow.

Resources under ``/sap/zsd/v1``: Customers (KNA1), SalesOrders (VBAK/VBAP), BillingDocuments
(VBRK). Lists page OData-style with ``$skip``/``$top`` and carry a ``<TotalCount>``. Every
request waits a uniform 20-150 ms like the real thing; ``POST /__latency`` changes that.
"""

from __future__ import annotations

import asyncio
import random
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from xml.etree.ElementTree import Element, SubElement, tostring

import orjson
from aiohttp import web
from defusedxml import ElementTree as SafeET

from . import seed

BASE = "/sap/zsd/v1"
API_KEY = "erp-sandbox-key"
DEFAULT_TOP = 100
MAX_TOP = 1000
XML = "application/xml"

# Overall status GBSTK (A not yet / B partly / C completely processed) plus our Z-status.
STATUS_CODES: dict[str, tuple[str, str]] = {
    "open": ("A", "ZOPN"),
    "confirmed": ("B", "ZCNF"),
    "shipped": ("C", "ZSHP"),
    "invoiced": ("C", "ZINV"),
    "cancelled": ("C", "ZCAN"),
}
_MATNR = re.compile(r"^SKU-\d{4}$")
_CHANNEL = re.compile(r"^(web|sales|partner-[a-z0-9-]{1,40})$")


class SapError(Exception):
    """An ERP error answer: ``<error><code/><message/></error>`` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> web.Response:
        root = Element("error")
        SubElement(root, "code").text = self.code
        SubElement(root, "message").text = self.message
        return _xml(root, self.status)


@dataclass
class ErpState:
    customers: dict[str, dict[str, str]] = field(default_factory=dict)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, dict[str, str]] = field(default_factory=dict)
    latency_ms: tuple[float, float] = (20.0, 150.0)
    next_customer: int = 50_001
    next_order: int = 4_500_100_001
    next_invoice: int = 9_000_100_001
    rng: random.Random = field(default_factory=lambda: seed.rng("erp-latency"))


def _d(value: date) -> str:
    return value.strftime("%Y%m%d")


def _money(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01'))}"


def seed_state(latency_ms: tuple[float, float]) -> ErpState:
    """Every seed person a customer, every seed order a sales order, invoiced ones billed."""
    state = ErpState(latency_ms=latency_ms)
    r = seed.rng("erp")
    for p in seed.people():
        state.customers[p.erp_customer_number] = {
            "KUNNR": p.erp_customer_number,
            "NAME1": p.name[:35],
            "NAME2": p.account.name[:35],
            "ORT01": p.city,
            "LAND1": p.country,
            "SMTP_ADDR": p.email,
            "TELF1": p.phone,
            "ZZCRMID": p.crm_contact_id,
        }
    billed = 0
    for o in seed.orders():
        created = date.fromisoformat(o.created)
        gbstk, zstat = STATUS_CODES[o.status]
        items = [
            {
                "POSNR": f"{(i + 1) * 10:06d}",
                "MATNR": ln.sku,
                "KWMENG": str(ln.quantity),
                "NETPR": _money(ln.unit_price),
            }
            for i, ln in enumerate(o.lines)
        ]
        state.orders[o.number] = {
            "VBELN": o.number,
            "KUNNR": o.person.erp_customer_number,
            "AUDAT": _d(created),
            "ERZET": f"{r.randint(7, 18):02d}{r.randint(0, 59):02d}{r.randint(0, 59):02d}",
            "VTWEG": o.channel,
            "GBSTK": gbstk,
            "ZZSTATUS": zstat,
            "NETWR": _money(o.total),
            "WAERK": "USD",
            "BSTKD": "",
            "ABGRU": "",
            "ITEMS": items,
        }
        if o.status == "invoiced":
            billed += 1
            fkdat = created + timedelta(days=r.randint(3, 20))
            number = f"{9_000_000_000 + billed}"
            state.invoices[number] = {
                "VBELN_VF": number,
                "KUNNR": o.person.erp_customer_number,
                "AUBEL": o.number,
                "FKDAT": _d(fkdat),
                "NETDT": _d(fkdat + timedelta(days=30)),
                "NETWR": _money(o.total),
                "WAERK": "USD",
                "ZTERM": "NT30",
                "ZZCLEARED": "X" if r.random() < 0.7 else "",
            }
    return state


# --- XML helpers ----------------------------------------------------------------------------


def _xml(root: Element, status: int = 200) -> web.Response:
    body = b'<?xml version="1.0" encoding="utf-8"?>' + tostring(root, encoding="unicode").encode()
    return web.Response(body=body, status=status, content_type=XML, charset="utf-8")


def _record(tag: str, values: dict[str, Any]) -> Element:
    el = Element(tag)
    for name, value in values.items():
        if name == "ITEMS":
            items = SubElement(el, "ITEMS")
            for item in value:
                items.append(_record("ITEM", item))
        else:
            SubElement(el, name).text = str(value)
    return el


def _list(tag: str, item_tag: str, rows: list[dict[str, Any]], request: web.Request) -> Element:
    skip = _query_int(request, "$skip", 0, 0, 10**9)
    top = _query_int(request, "$top", DEFAULT_TOP, 1, MAX_TOP)
    root = Element(tag)
    SubElement(root, "TotalCount").text = str(len(rows))
    for row in rows[skip : skip + top]:
        root.append(_record(item_tag, row))
    return root


def _query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise SapError(400, "INVALID_PARAMETER", f"{name} must be an integer in {lo}..{hi}")
    return int(raw)


async def _read_xml(request: web.Request, root_tag: str) -> Element:
    ctype = request.content_type
    if ctype not in (XML, "text/xml"):
        raise SapError(415, "UNSUPPORTED_MEDIA_TYPE", "only application/xml is accepted")
    try:
        root: Element = SafeET.fromstring(await request.read())
    except Exception as exc:  # ParseError and defusedxml's refusals alike
        raise SapError(400, "SD_MALFORMED_XML", "the request body is not well-formed XML") from exc
    if root.tag != root_tag:
        raise SapError(400, "SD_MALFORMED_XML", f"expected a <{root_tag}> document")
    return root


def _field(el: Element, tag: str, required: bool = True, max_len: int = 241) -> str:
    text = (el.findtext(tag) or "").strip()
    if required and not text:
        raise SapError(400, "SD_MISSING_FIELD", f"required field {tag} is missing")
    if len(text) > max_len:
        raise SapError(400, "SD_FIELD_TOO_LONG", f"{tag} is longer than {max_len} characters")
    return text


def _alpha(number: str) -> str:
    """SAP's ALPHA conversion: numeric keys are stored zero-padded to 10 digits."""
    return number.zfill(10) if number.isdigit() and len(number) <= 10 else number


# --- handlers -------------------------------------------------------------------------------


def _routes(state: ErpState) -> list[web.RouteDef]:
    async def list_customers(request: web.Request) -> web.Response:
        rows: Iterable[dict[str, str]] = state.customers.values()
        email = request.query.get("SMTP_ADDR")
        if email:
            rows = (c for c in rows if c["SMTP_ADDR"].lower() == email.lower())
        return _xml(_list("Customers", "Customer", sorted(rows, key=lambda c: c["KUNNR"]), request))

    async def get_customer(request: web.Request) -> web.Response:
        number = _alpha(request.match_info["kunnr"])
        customer = state.customers.get(number)
        if customer is None:
            raise SapError(404, "CUSTOMER_NOT_FOUND", f"customer {number} does not exist")
        return _xml(_record("Customer", customer))

    async def create_customer(request: web.Request) -> web.Response:
        body = await _read_xml(request, "Customer")
        land1 = _field(body, "LAND1", required=False, max_len=3).upper()
        if land1 and not re.fullmatch(r"[A-Z]{2}", land1):
            raise SapError(400, "SD_INVALID_COUNTRY", f"country key {land1} is not defined")
        email = _field(body, "SMTP_ADDR", required=False)
        if email and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
            raise SapError(400, "SD_INVALID_EMAIL", "SMTP_ADDR is not a valid e-mail address")
        number = f"{100_000 + state.next_customer:010d}"
        state.next_customer += 1
        customer = {
            "KUNNR": number,
            "NAME1": _field(body, "NAME1", max_len=35),
            "NAME2": _field(body, "NAME2", required=False, max_len=35),
            "ORT01": _field(body, "ORT01", required=False, max_len=35),
            "LAND1": land1,
            "SMTP_ADDR": email,
            "TELF1": _field(body, "TELF1", required=False, max_len=30),
            "ZZCRMID": _field(body, "ZZCRMID", required=False, max_len=18),
        }
        state.customers[number] = customer
        return _xml(_record("Customer", customer), 201)

    async def list_orders(request: web.Request) -> web.Response:
        kunnr = request.query.get("KUNNR")
        vtweg = request.query.get("VTWEG")
        bstkd = request.query.get("BSTKD")  # customer PO (PurchaseOrderByCustomer)
        rows = [
            o
            for o in state.orders.values()
            if (not kunnr or o["KUNNR"] == _alpha(kunnr))
            and (not vtweg or o["VTWEG"] == vtweg)
            and (not bstkd or o["BSTKD"] == bstkd)
        ]
        rows.sort(key=lambda o: o["VBELN"])
        return _xml(_list("SalesOrders", "SalesOrder", rows, request))

    def _order(request: web.Request) -> dict[str, Any]:
        number = _alpha(request.match_info["vbeln"])
        order = state.orders.get(number)
        if order is None:
            raise SapError(404, "ORDER_NOT_FOUND", f"sales document {number} does not exist")
        return order

    async def get_order(request: web.Request) -> web.Response:
        return _xml(_record("SalesOrder", _order(request)))

    async def create_order(request: web.Request) -> web.Response:
        body = await _read_xml(request, "SalesOrder")
        kunnr = _alpha(_field(body, "KUNNR", max_len=10))
        if kunnr not in state.customers:
            raise SapError(400, "SD_CUSTOMER_NOT_FOUND", f"sold-to party {kunnr} does not exist")
        vtweg = _field(body, "VTWEG", max_len=48)
        if not _CHANNEL.match(vtweg):
            raise SapError(400, "SD_INVALID_CHANNEL", f"distribution channel {vtweg} not defined")
        bstkd = _field(body, "BSTKD", required=False, max_len=35)
        if bstkd:  # the same customer PO twice is the same order: a retried create is harmless
            for existing in state.orders.values():
                if existing["KUNNR"] == kunnr and existing["BSTKD"] == bstkd:
                    return _xml(_record("SalesOrder", existing), 200)
        items = _items(body)
        total = sum((Decimal(i["NETPR"]) * int(i["KWMENG"]) for i in items), Decimal(0))
        number = str(state.next_order)
        state.next_order += 1
        now = datetime.now(UTC)
        order: dict[str, Any] = {
            "VBELN": number,
            "KUNNR": kunnr,
            "AUDAT": _d(now.date()),
            "ERZET": now.strftime("%H%M%S"),
            "VTWEG": vtweg,
            "GBSTK": "A",
            "ZZSTATUS": "ZOPN",
            "NETWR": _money(total),
            "WAERK": _field(body, "WAERK", required=False) or "USD",
            "BSTKD": bstkd,
            "ABGRU": "",
            "ITEMS": items,
        }
        state.orders[number] = order
        return _xml(_record("SalesOrder", order), 201)

    async def cancel_order(request: web.Request) -> web.Response:
        order = _order(request)
        body = await _read_xml(request, "Cancellation")
        reason = _field(body, "REASON", max_len=120)
        if order["ZZSTATUS"] == "ZCAN":
            return _xml(_record("SalesOrder", order))  # already cancelled: same answer again
        if order["ZZSTATUS"] in ("ZSHP", "ZINV"):
            raise SapError(
                409,
                "SD_NOT_CANCELLABLE",
                f"sales document {order['VBELN']} is already delivered or billed",
            )
        order.update(GBSTK="C", ZZSTATUS="ZCAN", ABGRU=f"Z1 {reason}")
        return _xml(_record("SalesOrder", order))

    async def list_invoices(request: web.Request) -> web.Response:
        kunnr = request.query.get("KUNNR")
        rows = [i for i in state.invoices.values() if not kunnr or i["KUNNR"] == _alpha(kunnr)]
        rows.sort(key=lambda i: i["VBELN_VF"])
        return _xml(_list("BillingDocuments", "BillingDocument", rows, request))

    async def get_latency(request: web.Request) -> web.Response:
        lo, hi = state.latency_ms
        return web.json_response({"min_ms": lo, "max_ms": hi})

    async def set_latency(request: web.Request) -> web.Response:
        try:
            data = orjson.loads(await request.read())
            lo, hi = float(data["min_ms"]), float(data["max_ms"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return web.json_response({"error": "body must be {min_ms, max_ms}"}, status=400)
        if not 0 <= lo <= hi:
            return web.json_response({"error": "need 0 <= min_ms <= max_ms"}, status=400)
        state.latency_ms = (lo, hi)
        return await get_latency(request)

    return [
        web.get(f"{BASE}/Customers", list_customers),
        web.post(f"{BASE}/Customers", create_customer),
        web.get(f"{BASE}/Customers/{{kunnr}}", get_customer),
        web.get(f"{BASE}/SalesOrders", list_orders),
        web.post(f"{BASE}/SalesOrders", create_order),
        web.get(f"{BASE}/SalesOrders/{{vbeln}}", get_order),
        web.post(f"{BASE}/SalesOrders/{{vbeln}}/cancel", cancel_order),
        web.get(f"{BASE}/BillingDocuments", list_invoices),
        web.get("/__latency", get_latency),
        web.post("/__latency", set_latency),
    ]


def _items(body: Element) -> list[dict[str, str]]:
    """Validate the order items the way SD would: material format, quantity, pricing."""
    prices = {s.sku: s.unit_price for s in seed.skus()}
    out = []
    for n, item in enumerate(body.findall("ITEMS/ITEM"), start=1):
        matnr = _field(item, "MATNR", max_len=18)
        if not _MATNR.match(matnr):
            raise SapError(400, "SD_INVALID_MATERIAL", f"material {matnr} has an invalid format")
        qty = _field(item, "KWMENG")
        if not qty.isdigit() or int(qty) <= 0:
            raise SapError(400, "SD_INVALID_QUANTITY", f"item {n * 10}: KWMENG must be above 0")
        netpr = _field(item, "NETPR", required=False)
        try:
            price = Decimal(netpr) if netpr else prices[matnr]
        except KeyError as exc:
            raise SapError(400, "SD_PRICING_ERROR", f"no price for material {matnr}") from exc
        except InvalidOperation as exc:
            raise SapError(400, "SD_INVALID_PRICE", f"item {n * 10}: NETPR not numeric") from exc
        if not price.is_finite() or price < 0:
            raise SapError(400, "SD_INVALID_PRICE", f"item {n * 10}: NETPR must not be negative")
        out.append(
            {"POSNR": f"{n * 10:06d}", "MATNR": matnr, "KWMENG": qty, "NETPR": _money(price)}
        )
    if not out:
        raise SapError(400, "SD_NO_ITEMS", "a sales order needs at least one item")
    return out


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _middleware(state: ErpState) -> Any:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Legacy latency, the API key, and SapError as the XML error body."""
        if request.path.startswith("/__"):
            return await handler(request)
        lo, hi = state.latency_ms
        if hi > 0:
            await asyncio.sleep(state.rng.uniform(lo, hi) / 1000)
        key = request.headers.get("X-SAP-API-Key", "")
        if not secrets.compare_digest(key.encode(), API_KEY.encode()):
            return SapError(401, "UNAUTHORIZED", "missing or invalid X-SAP-API-Key").response()
        try:
            return await handler(request)
        except SapError as exc:
            return exc.response()

    return guard


STATE = web.AppKey("erp", ErpState)
"""The app's live state, for tests and control endpoints."""


def create_app(latency_ms: tuple[float, float] = (20.0, 150.0)) -> web.Application:
    state = seed_state(latency_ms)
    app = web.Application(middlewares=[_middleware(state)])
    app[STATE] = state
    app.add_routes(_routes(state))
    return app
