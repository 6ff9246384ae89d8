"""The billing system (Stripe-like): customers, invoices and payments, mapped to canonical models.

The vendor speaks form-encoded requests with bracket notation and answers JSON with integer
minor units ("cents"); lists page newest first with ``has_more``/``starting_after``, and the
opaque cursor we hand out is the last id of a page. Every write carries an ``Idempotency-Key``
so the client base may retry it safely.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import urlencode

from .client import BackendClient
from .errors import BadBackendData
from .ids import CursorSyntax, IdSyntax
from .mapping import build_model
from .models import (
    BillingCustomer,
    Invoice,
    InvoiceStatus,
    OrderLine,
    Page,
    Payment,
    PaymentStatus,
)
from .pagination import walk_pages

BACKEND = "billing"

# --- the vendor's id syntax: ``<prefix>_<alphanumerics>`` ------------------------------------
CUSTOMER_ID = IdSyntax(BACKEND, "customer", r"cus_[A-Za-z0-9]{1,64}")
INVOICE_ID = IdSyntax(BACKEND, "invoice", r"in_[A-Za-z0-9]{1,64}")
CURSOR = CursorSyntax(r"[a-z]{2,8}_[A-Za-z0-9]{1,64}")
"""``starting_after``: the id of the last object of the previous page."""
MAX_LIMIT = 100
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

ZERO_DECIMAL_CURRENCIES = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()
)
"""Currencies Stripe counts in whole units, not hundredths."""

CUSTOMER_FIELDS: dict[str, str] = {"id": "id", "email": "email", "name": "name"}
CUSTOMER_METADATA: dict[str, str] = {
    "crm_contact_id": "crm_contact_id",
    "erp_customer_number": "erp_customer_number",
}
"""Vendor ``metadata`` keys -> canonical names (Stripe keeps our cross-references there)."""
INVOICE_FIELDS: dict[str, str] = {"id": "id", "customer": "customer_id"}
INVOICE_CENTS: dict[str, str] = {
    "total": "total",
    "amount_due": "amount_due",
    "amount_paid": "amount_paid",
}
PAYMENT_FIELDS: dict[str, str] = {"id": "id", "customer": "customer_id"}

INVOICE_STATUS: dict[str, InvoiceStatus] = {s.value: s for s in InvoiceStatus}
PAYMENT_STATUS: dict[str, PaymentStatus] = {
    "succeeded": PaymentStatus.SUCCEEDED,
    "processing": PaymentStatus.PENDING,
    "requires_confirmation": PaymentStatus.PENDING,
    "requires_action": PaymentStatus.PENDING,
    "requires_capture": PaymentStatus.PENDING,
    "requires_payment_method": PaymentStatus.FAILED,  # the last attempt failed (or none yet)
    "canceled": PaymentStatus.FAILED,
}

M = TypeVar("M")


# --- money -----------------------------------------------------------------------------------


def _exponent(currency: str) -> int:
    return 0 if currency.lower() in ZERO_DECIMAL_CURRENCIES else 2


def cents_to_decimal(cents: int, currency: str) -> Decimal:
    """Minor units to a Decimal amount in major units (exact: no float on the way)."""
    return Decimal(cents).scaleb(-_exponent(currency))


def decimal_to_cents(amount: Decimal, currency: str) -> int:
    """A Decimal amount to minor units; refuses amounts finer than the currency's minor unit."""
    scaled = amount.scaleb(_exponent(currency))
    if not scaled.is_finite() or scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} {currency.upper()} is not a whole number of minor units")
    return int(scaled)


# --- form encoding ---------------------------------------------------------------------------


def to_form(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested data to Stripe's bracket notation; ``None`` values are left out."""
    out: list[tuple[str, str]] = []
    for key, value in data.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if value is None:
            continue
        if isinstance(value, Mapping):
            out.extend(to_form(value, name))
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                if isinstance(item, Mapping):
                    out.extend(to_form(item, f"{name}[{i}]"))
                else:
                    out.append((f"{name}[{i}]", str(item)))
        elif isinstance(value, bool):
            out.append((name, "true" if value else "false"))
        else:
            out.append((name, str(value)))
    return out


# --- webhook signatures ----------------------------------------------------------------------


class WebhookSignatureError(ValueError):
    """An inbound webhook's ``Stripe-Signature`` is missing, malformed, wrong or too old."""


def verify_webhook_signature(
    payload: bytes, header: str, secret: str, tolerance_s: int = 300, now: float | None = None
) -> None:
    """Check ``t=<unix>,v1=<hex>`` against HMAC-SHA256 of ``"<t>.<payload>"`` (constant time)."""
    if not header:
        raise WebhookSignatureError("no Stripe-Signature header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError as exc:
                raise WebhookSignatureError("signature timestamp is not an integer") from exc
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise WebhookSignatureError("signature header lacks t= or v1=")
    expected = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256
    ).hexdigest()
    # Compare against every v1 (Stripe sends several while a secret is being rolled).
    if not any(hmac.compare_digest(expected.encode(), c.encode()) for c in candidates):
        raise WebhookSignatureError("signature does not match the payload")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise WebhookSignatureError("signature timestamp outside the tolerance")


# --- mapping: pure functions -----------------------------------------------------------------


def _bad(detail: str, record: str | None, field: str) -> BadBackendData:
    return BadBackendData(BACKEND, detail, record=record, field=field)


def _record_id(raw: Any, kind: str) -> str:
    if not isinstance(raw, dict):
        raise BadBackendData(BACKEND, f"{kind} is not a JSON object")
    ident = raw.get("id")
    if not isinstance(ident, str) or not ident:
        raise _bad(f"{kind} has no id", None, "id")
    return ident


def _str(raw: Mapping[str, Any], key: str, record: str, required: bool = True) -> str | None:
    value = raw.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise _bad("missing" if value is None else "not a non-empty string", record, key)
    return value


def _cents(raw: Mapping[str, Any], key: str, record: str, currency: str) -> Decimal:
    value = raw.get(key)
    if value is None:
        raise _bad("missing", record, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"expected integer cents, got {type(value).__name__}", record, key)
    return cents_to_decimal(value, currency)


def _timestamp(raw: Mapping[str, Any], key: str, record: str) -> datetime | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad("expected unix seconds", record, key)
    return datetime.fromtimestamp(value, UTC)


def _currency(raw: Mapping[str, Any], record: str) -> str:
    value = _str(raw, "currency", record)
    assert value is not None
    if len(value) != 3 or not value.isalpha():
        raise _bad("not an ISO currency code", record, "currency")
    return value.upper()


def _metadata(raw: Mapping[str, Any], record: str) -> Mapping[str, Any]:
    meta = raw.get("metadata") or {}
    if not isinstance(meta, dict):
        raise _bad("not an object", record, "metadata")
    return meta


def customer_from_vendor(raw: Any) -> BillingCustomer:
    record = _record_id(raw, "customer")
    fields: dict[str, Any] = {
        canon: _str(raw, vendor, record, required=vendor != "name")
        for vendor, canon in CUSTOMER_FIELDS.items()
    }
    meta = _metadata(raw, record)
    for vendor, canon in CUSTOMER_METADATA.items():
        fields[canon] = _str(meta, vendor, record, required=False)
    return build_model(BACKEND, BillingCustomer, fields, record)


def customer_to_vendor(c: BillingCustomer) -> list[tuple[str, str]]:
    """A canonical customer as Stripe form params (the id is the vendor's to assign)."""
    data: dict[str, Any] = {
        vendor: getattr(c, canon) for vendor, canon in CUSTOMER_FIELDS.items() if vendor != "id"
    }
    data["metadata"] = {vendor: getattr(c, canon) for vendor, canon in CUSTOMER_METADATA.items()}
    return to_form(data)


def invoice_from_vendor(raw: Any) -> Invoice:
    record = _record_id(raw, "invoice")
    fields: dict[str, Any] = {
        canon: _str(raw, vendor, record) for vendor, canon in INVOICE_FIELDS.items()
    }
    status = raw.get("status")
    if status not in INVOICE_STATUS:
        raise _bad(f"unknown status {str(status)[:40]!r}", record, "status")
    fields["status"] = INVOICE_STATUS[status]
    currency = _currency(raw, record)
    fields["currency"] = currency
    for vendor, canon in INVOICE_CENTS.items():
        fields[canon] = _cents(raw, vendor, record, currency)
    fields["order_ref"] = _str(_metadata(raw, record), "order_ref", record, required=False)
    due = _timestamp(raw, "due_date", record)
    fields["due_date"] = due.date() if due else None
    fields["created_at"] = _timestamp(raw, "created", record)
    return build_model(BACKEND, Invoice, fields, record)


def invoice_lines_to_vendor(
    lines: Sequence[OrderLine | Decimal], currency: str
) -> list[dict[str, Any]]:
    """Order lines (or bare amounts) as Stripe line params in minor units."""
    out: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if isinstance(line, OrderLine):
            if line.unit_price is None:
                raise ValueError(f"line {i} ({line.sku}) has no unit_price")
            out.append(
                {
                    "description": line.sku,
                    "quantity": line.quantity,
                    "unit_amount": decimal_to_cents(line.unit_price, currency),
                }
            )
        else:
            out.append({"amount": decimal_to_cents(line, currency)})
    return out


def payment_from_vendor(raw: Any) -> Payment:
    record = _record_id(raw, "payment_intent")
    fields: dict[str, Any] = {
        canon: _str(raw, vendor, record) for vendor, canon in PAYMENT_FIELDS.items()
    }
    status = raw.get("status")
    if status not in PAYMENT_STATUS:
        raise _bad(f"unknown status {str(status)[:40]!r}", record, "status")
    fields["status"] = PAYMENT_STATUS[status]
    currency = _currency(raw, record)
    fields["currency"] = currency
    fields["amount"] = _cents(raw, "amount", record, currency)
    fields["invoice_id"] = _str(raw, "invoice", record, required=False)
    fields["created_at"] = _timestamp(raw, "created", record)
    return build_model(BACKEND, Payment, fields, record)


def list_from_vendor(body: Any, item: Callable[[Any], M]) -> tuple[list[M], str | None]:
    """A Stripe list: its mapped items and, if ``has_more``, the cursor for the next page."""
    if not isinstance(body, dict) or body.get("object") != "list":
        raise BadBackendData(BACKEND, "expected a list object", field="object")
    data, has_more = body.get("data"), body.get("has_more")
    if not isinstance(data, list):
        raise _bad("not an array", None, "data")
    if not isinstance(has_more, bool):
        raise _bad("not a boolean", None, "has_more")
    items = [item(raw) for raw in data]
    if has_more and not data:
        raise _bad("has_more on an empty page", None, "has_more")
    return items, (data[-1]["id"] if has_more else None)


# --- the client ------------------------------------------------------------------------------


def _derive_key(caller_key: str | None, step: str) -> str:
    """One Idempotency-Key per logical step, stable for a given caller key (so its retry
    replays), random otherwise (so the client base may still retry this one call)."""
    base = caller_key if caller_key is not None else uuid.uuid4().hex
    digest = hashlib.sha256(base.encode()).hexdigest()[:40]
    return f"trellis-{step}-{digest}"


class BillingClient(BackendClient):
    name = BACKEND

    # --- plumbing ---------------------------------------------------------------------------

    async def _get(self, path: str, params: Mapping[str, str | int] | None = None) -> Any:
        return (await self.request("GET", path, params=params)).json()

    async def _post(self, path: str, form: list[tuple[str, str]], idempotency_key: str) -> Any:
        resp = await self.request(
            "POST", path, data=urlencode(form), headers=FORM, idempotency_key=idempotency_key
        )
        return resp.json()

    async def _page(
        self,
        path: str,
        item: Callable[[Any], M],
        cursor: str | None,
        limit: int,
        filters: Mapping[str, str | None],
    ) -> Page[M]:
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
        params: dict[str, str | int] = {k: v for k, v in filters.items() if v is not None}
        params["limit"] = limit
        if cursor := CURSOR(cursor):
            params["starting_after"] = cursor
        items, next_cursor = list_from_vendor(await self._get(path, params), item)
        return Page[Any](items=items, next_cursor=next_cursor)

    # --- customers --------------------------------------------------------------------------

    async def get_customer(self, customer_id: str) -> BillingCustomer:
        return customer_from_vendor(await self._get(f"/v1/customers/{CUSTOMER_ID(customer_id)}"))

    async def find_customer_by_email(self, email: str) -> BillingCustomer | None:
        """Stripe's email filter is exact and case-sensitive, as the vendor's is."""
        page = await self.customers_page(limit=1, email=email)
        return page.items[0] if page.items else None

    async def create_customer(
        self,
        email: str,
        name: str,
        crm_contact_id: str | None = None,
        erp_customer_number: str | None = None,
        idempotency_key: str | None = None,
    ) -> BillingCustomer:
        form = customer_to_vendor(
            BillingCustomer(
                id="new",
                email=email,
                name=name,
                crm_contact_id=crm_contact_id,
                erp_customer_number=erp_customer_number,
            )
        )
        raw = await self._post("/v1/customers", form, _derive_key(idempotency_key, "customer"))
        return customer_from_vendor(raw)

    async def customers_page(
        self, cursor: str | None = None, limit: int = 10, email: str | None = None
    ) -> Page[BillingCustomer]:
        return await self._page(
            "/v1/customers", customer_from_vendor, cursor, limit, {"email": email}
        )

    def iter_customers(self, page_size: int = MAX_LIMIT) -> AsyncIterator[BillingCustomer]:
        return walk_pages(self.name, lambda c: self.customers_page(c, page_size))

    # --- invoices ---------------------------------------------------------------------------

    async def get_invoice(self, invoice_id: str) -> Invoice:
        return invoice_from_vendor(await self._get(f"/v1/invoices/{INVOICE_ID(invoice_id)}"))

    async def invoices_page(
        self,
        cursor: str | None = None,
        limit: int = 10,
        customer_id: str | None = None,
        status: InvoiceStatus | None = None,
    ) -> Page[Invoice]:
        filters = {"customer": customer_id, "status": status.value if status else None}
        return await self._page("/v1/invoices", invoice_from_vendor, cursor, limit, filters)

    def iter_invoices(
        self,
        customer_id: str | None = None,
        status: InvoiceStatus | None = None,
        page_size: int = MAX_LIMIT,
    ) -> AsyncIterator[Invoice]:
        return walk_pages(
            self.name, lambda c: self.invoices_page(c, page_size, customer_id, status)
        )

    async def find_invoice_by_order_ref(self, customer_id: str, order_ref: str) -> Invoice | None:
        """The customer's invoice whose metadata names ``order_ref``: how a create whose answer
        was lost is found (the same idempotency key would replay it only for 24 hours)."""
        async for invoice in self.iter_invoices(customer_id):
            if invoice.order_ref == order_ref:
                return invoice
        return None

    async def create_invoice(
        self,
        customer_id: str,
        lines: Sequence[OrderLine | Decimal],
        currency: str = "USD",
        order_ref: str | None = None,
        idempotency_key: str | None = None,
        description: str | None = None,
    ) -> Invoice:
        """Create a draft and finalize it (-> open). A retry with the same ``idempotency_key``
        replays both steps, so a failure between them never makes a second invoice."""
        if not lines:
            raise ValueError("an invoice needs at least one line")
        base = idempotency_key if idempotency_key is not None else uuid.uuid4().hex
        form = to_form(
            {
                "customer": customer_id,
                "currency": currency.lower(),
                "description": description,
                "metadata": {"order_ref": order_ref},
                "lines": invoice_lines_to_vendor(lines, currency),
            }
        )
        draft = invoice_from_vendor(
            await self._post("/v1/invoices", form, _derive_key(base, "invoice"))
        )
        if draft.status is not InvoiceStatus.DRAFT:  # a replay of an already-finalized call
            return await self.get_invoice(draft.id)
        raw = await self._post(
            f"/v1/invoices/{self.segment(draft.id)}/finalize", [], _derive_key(base, "finalize")
        )
        return invoice_from_vendor(raw)

    async def _transition(self, invoice_id: str, action: str, key: str | None) -> Invoice:
        path = f"/v1/invoices/{INVOICE_ID(invoice_id)}/{action}"
        return invoice_from_vendor(await self._post(path, [], _derive_key(key, action)))

    async def void_invoice(self, invoice_id: str, idempotency_key: str | None = None) -> Invoice:
        return await self._transition(invoice_id, "void", idempotency_key)

    async def pay_invoice(self, invoice_id: str, idempotency_key: str | None = None) -> Invoice:
        return await self._transition(invoice_id, "pay", idempotency_key)

    # --- payments ---------------------------------------------------------------------------

    async def payments_page(
        self, customer_id: str | None = None, cursor: str | None = None, limit: int = 10
    ) -> Page[Payment]:
        if customer_id is not None:
            CUSTOMER_ID(customer_id)
        return await self._page(
            "/v1/payment_intents", payment_from_vendor, cursor, limit, {"customer": customer_id}
        )

    def iter_payments(
        self, customer_id: str | None = None, page_size: int = MAX_LIMIT
    ) -> AsyncIterator[Payment]:
        return walk_pages(self.name, lambda c: self.payments_page(customer_id, c, page_size))
