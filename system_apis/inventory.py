"""The warehouse system: stock levels and stock reservations, mapped to canonical models.

The vendor pages by page number and announces the next page in an RFC 8288 ``Link`` header;
the opaque cursor we hand out is that next page's number.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .client import BackendClient, BackendResponse
from .errors import BadBackendData
from .ids import CursorSyntax, IdSyntax
from .models import OrderLine, Page, Reservation, ReservationStatus, StockLevel
from .pagination import next_link

BACKEND = "inventory"
MAX_PER_PAGE = 100

STOCK_INT_FIELDS: dict[str, str] = {
    "on_hand": "on_hand",
    "reserved": "reserved",
    "available": "available",
}
"""Vendor -> canonical renames of the integer stock counters (here names happen to agree)."""
STOCK_TEXT_FIELDS: dict[str, str] = {"name": "name", "warehouse": "warehouse"}
"""Optional text fields. ``unit_cost`` is internal to the warehouse and never mapped."""

# --- the vendor's id syntax -------------------------------------------------------------------
SKU = IdSyntax(BACKEND, "sku", r"SKU-[0-9]{4,10}")
RESERVATION_ID = IdSyntax(BACKEND, "reservation", r"res_[A-Za-z0-9]{1,40}")
CURSOR = CursorSyntax(r"[1-9][0-9]{0,8}")
"""The next page's number."""
_PAGE = re.compile(r"[1-9][0-9]{0,8}", re.ASCII)


# --- mapping: pure functions -----------------------------------------------------------------


def _bad(detail: str, record: str | None, field: str) -> BadBackendData:
    return BadBackendData(BACKEND, detail, record=record, field=field)


def _req_str(raw: dict[str, Any], key: str, record: str | None) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise _bad("missing or not a string" if value is None else "not a string", record, key)
    return value


def _opt_str(raw: dict[str, Any], key: str, record: str | None) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise _bad("not a string", record, key)
    return value


def _int(raw: dict[str, Any], key: str, record: str | None, minimum: int | None = None) -> int:
    value = raw.get(key)
    if value is None:
        raise _bad("missing", record, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"expected an integer, got {type(value).__name__}", record, key)
    if minimum is not None and value < minimum:
        raise _bad(f"must be at least {minimum}", record, key)
    return value


_CENT = Decimal("0.01")


def _decimal(raw: dict[str, Any], key: str, record: str | None) -> Decimal | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _bad(f"expected a number, got {type(value).__name__}", record, key)
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise _bad("not a number", record, key) from exc
    if not amount.is_finite():
        raise _bad("not a finite number", record, key)
    return amount.quantize(_CENT)


def stock_from_vendor(raw: Any) -> StockLevel:
    """One vendor SKU row -> ``StockLevel`` (``unit_cost`` is deliberately dropped)."""
    if not isinstance(raw, dict):
        raise _bad("a stock record is not an object", None, "data[]")
    sku = _req_str(raw, "sku", None)
    counts = {canon: _int(raw, key, sku, minimum=0) for key, canon in STOCK_INT_FIELDS.items()}
    texts = {canon: _opt_str(raw, vendor, sku) for vendor, canon in STOCK_TEXT_FIELDS.items()}
    return StockLevel(sku=sku, unit_price=_decimal(raw, "unit_price", sku), **counts, **texts)


def _datetime(raw: dict[str, Any], key: str, record: str | None) -> datetime | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad("expected an ISO 8601 string", record, key)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise _bad("not an ISO 8601 timestamp", record, key) from exc
    if parsed.tzinfo is None:
        raise _bad("timestamp has no time zone", record, key)
    return parsed


def reservation_from_vendor(raw: Any) -> Reservation:
    """A vendor reservation -> ``Reservation``; unknown statuses are bad data, not guesses."""
    if not isinstance(raw, dict):
        raise _bad("a reservation is not an object", None, "reservation")
    rid = _req_str(raw, "id", None)
    status_raw = _req_str(raw, "status", rid)
    try:
        status = ReservationStatus(status_raw)
    except ValueError as exc:
        raise _bad(f"unknown status {status_raw!r}", rid, "status") from exc
    lines_raw = raw.get("lines")
    if not isinstance(lines_raw, list):
        raise _bad("missing or not a list", rid, "lines")
    lines = []
    for i, line in enumerate(lines_raw):
        if not isinstance(line, dict):
            raise _bad("not an object", rid, f"lines[{i}]")
        sku = line.get("sku")
        if not isinstance(sku, str) or not sku:
            raise _bad("missing or not a string", rid, f"lines[{i}].sku")
        qty = line.get("quantity")
        if isinstance(qty, bool) or not isinstance(qty, int) or qty < 1:
            raise _bad("missing or not a positive integer", rid, f"lines[{i}].quantity")
        lines.append(OrderLine(sku=sku, quantity=qty))
    return Reservation(
        id=rid,
        status=status,
        lines=lines,
        reference=_opt_str(raw, "reference", rid),
        expires_at=_datetime(raw, "expires_at", rid),
    )


def reservation_request_to_vendor(
    lines: list[OrderLine], reference: str, ttl_s: int
) -> dict[str, Any]:
    """The vendor's reservation request body (prices are not the warehouse's business)."""
    return {
        "reference": reference,
        "lines": [{"sku": ln.sku, "quantity": ln.quantity} for ln in lines],
        "ttl_seconds": ttl_s,
    }


def _page_of(url: str) -> int:
    values = parse_qs(urlsplit(url).query).get("page")
    if not values or not _PAGE.fullmatch(values[0]):
        raise _bad("next link has no page number", None, "Link")
    return int(values[0])


# --- client ----------------------------------------------------------------------------------


class InventoryClient(BackendClient):
    """Typed calls to the warehouse system."""

    name = BACKEND

    async def get_stock(self, sku: str) -> StockLevel:
        resp = await self.request("GET", f"/v1/stock/{SKU(sku)}")
        return stock_from_vendor(resp.json_object())

    async def _skus(self, page: int, per_page: int) -> tuple[list[StockLevel], str | None]:
        resp = await self.request("GET", "/v1/skus", params={"page": page, "per_page": per_page})
        body = resp.json_object()
        data = body.get("data")
        if not isinstance(data, list):
            raise _bad("missing or not a list", f"page {page}", "data")
        return [stock_from_vendor(row) for row in data], next_link(resp.headers.get("Link"))

    async def stock_page(self, cursor: str | None = None, limit: int = 50) -> Page[StockLevel]:
        """One page; the cursor is the vendor's next page number for the same ``limit``."""
        page = int(CURSOR(cursor) or 1)
        items, nxt = await self._skus(page, min(max(limit, 1), MAX_PER_PAGE))
        return Page[StockLevel](
            items=items, next_cursor=str(_page_of(nxt)) if nxt is not None else None
        )

    async def iter_stock(self, per_page: int = MAX_PER_PAGE) -> AsyncIterator[StockLevel]:
        """Every SKU, following the ``Link: rel="next"`` header to the last page."""
        page: int | None = 1
        while page is not None:
            items, nxt = await self._skus(page, per_page)
            for item in items:
                yield item
            following = _page_of(nxt) if nxt is not None else None
            if following is not None and following <= page:
                raise _bad("next link does not advance", f"page {page}", "Link")
            page = following

    async def reserve(
        self,
        lines: list[OrderLine],
        reference: str,
        ttl_s: int = 900,
        idempotency_key: str | None = None,
    ) -> Reservation:
        """All or nothing; short stock raises ``BackendConflict`` naming the SKU."""
        resp = await self.request(
            "POST",
            "/v1/reservations",
            json=reservation_request_to_vendor(lines, reference, ttl_s),
            idempotency_key=idempotency_key,
        )
        return reservation_from_vendor(resp.json_object())

    async def get_reservation(self, reservation_id: str) -> Reservation:
        resp = await self.request("GET", f"/v1/reservations/{RESERVATION_ID(reservation_id)}")
        return reservation_from_vendor(resp.json_object())

    async def _transition(self, reservation_id: str, action: str) -> Reservation:
        # Release and commit are idempotent at the vendor, so a stable key makes retries safe.
        resp: BackendResponse = await self.request(
            "POST",
            f"/v1/reservations/{RESERVATION_ID(reservation_id)}/{action}",
            idempotency_key=f"{action}-{reservation_id}",
        )
        return reservation_from_vendor(resp.json_object())

    async def release(self, reservation_id: str) -> Reservation:
        return await self._transition(reservation_id, "release")

    async def commit(self, reservation_id: str) -> Reservation:
        return await self._transition(reservation_id, "commit")
