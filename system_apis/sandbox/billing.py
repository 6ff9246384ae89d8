"""Sandbox billing backend imitating Stripe: form-encoded requests, cents, idempotency, webhooks.

Stripe's shape is kept where a client could notice it: ``{"error": {...}}`` bodies, bracket
notation in forms, ``has_more``/``starting_after`` lists (newest first), ``Idempotency-Key``
replays, ``Stripe-Signature`` signed webhooks, ``Stripe-Version`` pinning, and a parameter the
endpoint does not take refused with ``400 parameter_unknown``. Invoices follow API version
2024-06-20: a draft is created bare and its lines are invoice items (``/v1/invoiceitems`` with
``invoice=``); ``pending_invoice_items_behavior`` defaults to ``exclude``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import orjson
from aiohttp import web

from . import seed

API_KEY = "sk_test_trellis_sandbox"
WEBHOOK_SECRET = "whsec_trellis_sandbox"  # noqa: S105 - the sandbox's published signing secret
IDEMPOTENCY_TTL_S = 24 * 3600
WEBHOOK_TIMEOUT_S = 5.0
MAX_LIMIT = 100
API_VERSION = "2024-06-20"
"""The account's default version, answered when a request pins none."""
API_VERSIONS = frozenset({"2023-10-16", "2024-04-10", "2024-06-20"})
"""Versions whose invoice and invoice item shapes are the ones imitated here."""
MAX_INVOICE_ITEMS = 250

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Json = dict[str, Any]


class StripeError(Exception):
    """An error answered in Stripe's ``{"error": {...}}`` shape.

    ``validation`` errors happen before the endpoint runs, so (as at Stripe) their result is not
    stored under the request's idempotency key.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        validation: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: Json = {"type": type_, "message": message}
        if code:
            self.body["code"] = code
        if param:
            self.body["param"] = param
        self.validation = validation

    def response(self) -> web.Response:
        return _json({"error": self.body}, self.status)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, headers=headers, content_type="application/json"
    )


def _missing(kind: str, ident: str, param: str = "id") -> StripeError:
    return StripeError(404, f"No such {kind}: '{ident}'", code="resource_missing", param=param)


def _invalid(message: str, param: str) -> StripeError:
    return StripeError(400, message, code="parameter_invalid", param=param, validation=True)


def _required(param: str) -> StripeError:
    return StripeError(
        400,
        f"Missing required param: {param}.",
        code="parameter_missing",
        param=param,
        validation=True,
    )


def _known(params: Any, allowed: frozenset[str], prefix: str = "") -> None:
    """Refuse the first parameter the endpoint does not take, as Stripe does."""
    for key in params:
        if key not in allowed:
            name = f"{prefix}[{key}]" if prefix else key
            raise StripeError(
                400,
                f"Received unknown parameter: {name}",
                code="parameter_unknown",
                param=name,
                validation=True,
            )


def _params(*names: str) -> frozenset[str]:
    return frozenset(("expand", *names))


LIST_PARAMS = _params("limit", "starting_after", "ending_before", "created")
CUSTOMER_CREATE = _params("email", "name", "description", "metadata", "phone")
CUSTOMER_LIST = LIST_PARAMS | {"email"}
INVOICE_CREATE = _params(
    "customer",
    "currency",
    "description",
    "metadata",
    "auto_advance",
    "collection_method",
    "days_until_due",
    "due_date",
    "footer",
    "pending_invoice_items_behavior",
)
INVOICE_LIST = LIST_PARAMS | {"customer", "status", "collection_method", "due_date"}
INVOICE_ITEM_CREATE = _params(
    "customer",
    "invoice",
    "amount",
    "currency",
    "description",
    "metadata",
    "quantity",
    "unit_amount",
    "unit_amount_decimal",
)
INVOICE_ITEM_LIST = LIST_PARAMS | {"customer", "invoice", "pending"}
FINALIZE = _params("auto_advance")
PAY = _params("forgive", "mandate", "off_session", "paid_out_of_band", "payment_method", "source")
VOID = _params()
PAYMENT_LIST = LIST_PARAMS | {"customer"}
WEBHOOK_CREATE = _params("url", "enabled_events", "description", "metadata", "api_version")
RETRIEVE = _params()


# --- signing ---------------------------------------------------------------------------------


def sign_payload(payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header value: ``t=<unix>,v1=<hmac-sha256 of "t.payload">``."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


# --- form decoding ---------------------------------------------------------------------------

_KEY = re.compile(r"^([A-Za-z0-9_]+)((?:\[[A-Za-z0-9_]*\])*)$")


def parse_form(pairs: list[tuple[str, str]]) -> Json:
    """Stripe's bracket notation to nested data: ``a[b]=1`` a dict, ``a[0][c]``/``a[]`` a list."""
    root: Json = {}
    for key, value in pairs:
        m = _KEY.match(key)
        if m is None:
            raise _invalid(f"Invalid parameter name: {key}", key)
        parts = [m.group(1), *re.findall(r"\[([A-Za-z0-9_]*)\]", m.group(2))]
        node: Json = root
        for i, part in enumerate(parts):
            if part == "":
                part = str(len(node))
            if i == len(parts) - 1:
                if part in node:
                    raise _invalid(f"Received duplicate parameter: {key}", key)
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise _invalid(f"Invalid parameter: {key}", key)
                node = child
    return _listify(root)


def _listify(node: Json) -> Json:
    out: Json = {}
    for k, v in node.items():
        if isinstance(v, dict):
            v = _listify(v)
            if v and all(key.isdigit() for key in v):
                v = [v[key] for key in sorted(v, key=int)]
        out[k] = v
    return out


def _int_param(raw: Any, param: str, lo: int | None = None, hi: int | None = None) -> int:
    if not isinstance(raw, str) or not re.fullmatch(r"-?\d{1,15}", raw):
        raise _invalid(f"Invalid integer: {raw}", param)
    value = int(raw)
    if lo is not None and value < lo:
        raise _invalid(f"This value must be greater than or equal to {lo}.", param)
    if hi is not None and value > hi:
        raise _invalid(f"This value must be less than or equal to {hi}.", param)
    return value


def _str_param(raw: Any, param: str, max_len: int = 5000) -> str:
    if not isinstance(raw, str) or len(raw) > max_len:
        raise _invalid(f"Invalid string: {param}", param)
    return raw


def _metadata(raw: Any) -> dict[str, str]:
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, dict) or len(raw) > 50:
        raise _invalid("Invalid hash", "metadata")
    out: dict[str, str] = {}
    for k, v in raw.items():
        if not isinstance(v, str) or len(k) > 40 or len(v) > 500:
            raise _invalid(f"Invalid metadata value for key {k}", f"metadata[{k}]")
        out[k] = v
    return out


# --- state -----------------------------------------------------------------------------------


@dataclass
class Collection:
    """Objects of one kind in creation order; Stripe lists them newest first."""

    objects: dict[str, Json] = field(default_factory=dict)
    _order: list[str] = field(default_factory=list)
    _pos: dict[str, int] = field(default_factory=dict)

    def add(self, obj: Json) -> Json:
        self._pos[obj["id"]] = len(self._order)
        self._order.append(obj["id"])
        self.objects[obj["id"]] = obj
        return obj

    def newest_first(self, starting_after: str | None) -> Iterator[Json]:
        start = len(self._order) - 1
        if starting_after is not None:
            start = self._pos[starting_after] - 1
        for i in range(start, -1, -1):
            yield self.objects[self._order[i]]


@dataclass
class IdempotentResult:
    fingerprint: bytes
    created: float
    status: int = 0
    body: bytes = b""
    done: bool = False


@dataclass
class BillingState:
    customers: Collection = field(default_factory=Collection)
    invoices: Collection = field(default_factory=Collection)
    invoice_items: Collection = field(default_factory=Collection)
    payments: Collection = field(default_factory=Collection)
    webhooks: Collection = field(default_factory=Collection)
    idempotency: dict[str, IdempotentResult] = field(default_factory=dict)
    deliveries: list[Json] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    session: aiohttp.ClientSession | None = None
    counter: Iterator[int] = field(default_factory=lambda: itertools.count(90_000_001))

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_TR{next(self.counter):08d}"


BILLING = web.AppKey("billing", BillingState)


def _cents(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value())


def _unix(day: str, seconds: int) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()) + seconds


def _customer(p: seed.Person) -> Json:
    return {
        "id": p.billing_customer_id,
        "object": "customer",
        "created": 1_735_689_600 + p.index * 3_600,  # 2025-01-01 onwards
        "currency": "usd",
        "delinquent": False,
        "description": None,
        "email": p.email,
        "livemode": False,
        "metadata": {
            "crm_contact_id": p.crm_contact_id,
            "erp_customer_number": p.erp_customer_number,
        },
        "name": p.name,
        "phone": p.phone,
    }


def _invoice(
    ident: str,
    customer: str,
    currency: str,
    lines: list[Json],
    created: int,
    metadata: dict[str, str],
    description: str | None = None,
) -> Json:
    total = sum(int(line["amount"]) for line in lines)
    return {
        "id": ident,
        "object": "invoice",
        "amount_due": total,
        "amount_paid": 0,
        "amount_remaining": total,
        "collection_method": "send_invoice",
        "created": created,
        "currency": currency,
        "customer": customer,
        "description": description,
        "due_date": created + 30 * 86_400,
        "lines": {
            "object": "list",
            "data": lines,
            "has_more": False,
            "url": f"/v1/invoices/{ident}/lines",
        },
        "livemode": False,
        "metadata": metadata,
        "number": None,
        "payment_intent": None,
        "status": "draft",
        "status_transitions": {"finalized_at": None, "paid_at": None, "voided_at": None},
        "subtotal": total,
        "total": total,
    }


def _line(ident: str, currency: str, amount: int, quantity: int, description: str) -> Json:
    return {
        "id": ident,
        "object": "line_item",
        "amount": amount,
        "currency": currency,
        "description": description,
        "quantity": quantity,
    }


def _payment(ident: str, invoice: Json, status: str, created: int) -> Json:
    received = invoice["total"] if status == "succeeded" else 0
    return {
        "id": ident,
        "object": "payment_intent",
        "amount": invoice["total"],
        "amount_received": received,
        "created": created,
        "currency": invoice["currency"],
        "customer": invoice["customer"],
        "invoice": invoice["id"],
        "livemode": False,
        "metadata": {},
        "status": status,
    }


def _finalize(inv: Json, at: int) -> None:
    inv["status"] = "open"
    inv["number"] = f"TR-{inv['id'][-8:]}"
    inv["status_transitions"]["finalized_at"] = at


def _mark_paid(state: BillingState, inv: Json, at: int, payment_id: str) -> Json:
    inv["status"] = "paid"
    inv["amount_paid"] = inv["total"]
    inv["amount_remaining"] = 0
    inv["status_transitions"]["paid_at"] = at
    inv["payment_intent"] = payment_id
    return state.payments.add(_payment(payment_id, inv, "succeeded", at))


def seed_state() -> BillingState:
    """Every seed person as a customer; one invoice per shipped or invoiced ERP order."""
    state = BillingState()
    for p in seed.people():
        state.customers.add(_customer(p))
    r = seed.rng("billing")
    for n, order in enumerate(seed.orders(), start=1):
        if order.status not in ("shipped", "invoiced"):
            continue
        created = _unix(order.created, r.randrange(8 * 3600, 18 * 3600))
        ident = f"in_TR{n:08d}"
        lines = [
            _line(
                f"il_TR{n:08d}{i}", "usd", _cents(ln.unit_price) * ln.quantity, ln.quantity, ln.sku
            )
            for i, ln in enumerate(order.lines)
        ]
        inv = _invoice(
            ident,
            order.person.billing_customer_id,
            "usd",
            lines,
            created,
            {"order_ref": order.number},
        )
        _finalize(inv, created)
        roll = r.random()
        if roll < 0.78:
            _mark_paid(state, inv, created + r.randrange(3600, 20 * 86_400), f"pi_TR{n:08d}")
        elif roll < 0.90:
            if r.random() < 0.4:  # a failed card attempt left behind
                inv["payment_intent"] = f"pi_TR{n:08d}"
                state.payments.add(
                    _payment(inv["payment_intent"], inv, "requires_payment_method", created + 60)
                )
        elif roll < 0.97:
            inv["status"] = "void"
            inv["amount_remaining"] = 0
            inv["status_transitions"]["voided_at"] = created + 86_400
        else:
            inv["status"] = "uncollectible"
        state.invoices.add(inv)
    # A few payments still in flight (e.g. bank debits), on open invoices.
    for inv in itertools.islice(
        (
            i
            for i in state.invoices.objects.values()
            if i["status"] == "open" and i["payment_intent"] is None
        ),
        0,
        40,
        4,
    ):
        inv["payment_intent"] = inv["id"].replace("in_", "pi_")
        state.payments.add(_payment(inv["payment_intent"], inv, "processing", inv["created"]))
    return state


# --- middleware ------------------------------------------------------------------------------


@web.middleware
async def stripe_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Auth first (as at Stripe), then every StripeError rendered in the vendor's shape."""
    if request.path.startswith("/__"):
        return await handler(request)
    auth = request.headers.get("Authorization", "")
    if not hmac.compare_digest(auth.encode(), f"Bearer {API_KEY}".encode()):
        return _json(
            {"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}},
            401,
        )
    version = request.headers.get("Stripe-Version", API_VERSION)
    resp: web.StreamResponse
    if version not in API_VERSIONS:
        resp = StripeError(400, f"Invalid Stripe API version: {version[:40]}").response()
    else:
        try:
            resp = await handler(request)
        except StripeError as exc:
            resp = exc.response()
    resp.headers["Stripe-Version"] = version if version in API_VERSIONS else API_VERSION
    resp.headers["Request-Id"] = f"req_{secrets.token_hex(7)}"
    return resp


def _query(request: web.Request, allowed: frozenset[str]) -> Json:
    """The query string as Stripe reads it (bracket notation), unknown parameters refused."""
    params = parse_form(list(request.query.items()))
    _known(params, allowed)
    return params


def _state(request: web.Request) -> BillingState:
    state: BillingState = request.app[BILLING]
    return state


async def _form(request: web.Request) -> tuple[Json, bytes]:
    """The parsed form and a fingerprint of it (for idempotency comparisons)."""
    raw = await request.read()
    try:
        pairs = parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as exc:
        raise _invalid("Request body is not valid UTF-8", "body") from exc
    fingerprint = hashlib.sha256(
        f"{request.method} {request.path}\n".encode() + orjson.dumps(sorted(pairs))
    ).digest()
    return parse_form(pairs), fingerprint


PostHandler = Callable[[web.Request, Json], Awaitable[web.Response]]


def idempotent(handler: PostHandler) -> Handler:
    """Honour ``Idempotency-Key``: replay the first result, refuse a key reused with new params."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        params, fingerprint = await _form(request)
        key = request.headers.get("Idempotency-Key")
        if not key:
            return (await _run(handler, request, params))[0]
        if len(key) > 255:
            raise _invalid("Idempotency-Key must be at most 255 characters", "Idempotency-Key")
        state = _state(request)
        now = time.monotonic()
        for old in [k for k, v in state.idempotency.items() if now - v.created > IDEMPOTENCY_TTL_S]:
            del state.idempotency[old]
        seen = state.idempotency.get(key)
        if seen is not None:
            if seen.fingerprint != fingerprint:
                raise StripeError(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with. Try using a key other than "
                    f"'{key}' if you meant to execute a different request.",
                    type_="idempotency_error",
                )
            if not seen.done:
                raise StripeError(
                    409,
                    "There is currently another in-progress request using this Idempotent Key.",
                    type_="idempotency_error",
                    code="idempotency_key_in_use",
                )
            return web.Response(
                body=seen.body,
                status=seen.status,
                content_type="application/json",
                headers={"Idempotent-Replayed": "true", "Idempotency-Key": key},
            )
        entry = IdempotentResult(fingerprint, now)
        state.idempotency[key] = entry
        try:
            resp, validation = await _run(handler, request, params)
        except BaseException:
            del state.idempotency[key]
            raise
        if resp.status >= 500 or resp.status == 429 or validation:
            del state.idempotency[key]
        else:
            body = resp.body if isinstance(resp.body, bytes) else b""
            entry.status, entry.body, entry.done = resp.status, body, True
        resp.headers["Idempotency-Key"] = key
        return resp

    return wrapped


async def _run(
    handler: PostHandler, request: web.Request, params: Json
) -> tuple[web.Response, bool]:
    """The handler's response, and whether it was a validation error (never stored)."""
    try:
        return await handler(request, params), False
    except StripeError as exc:
        return exc.response(), exc.validation


# --- lists -----------------------------------------------------------------------------------


def _list(
    request: web.Request,
    coll: Collection,
    kind: str,
    match: Callable[[Json], bool],
    allowed: frozenset[str] = LIST_PARAMS,
) -> web.Response:
    q = _query(request, allowed)
    limit = _int_param(q.get("limit", "10"), "limit", 1, MAX_LIMIT)
    after = q.get("starting_after") or None
    if after is not None and after not in coll.objects:
        raise _missing(kind, after, "starting_after")
    data: list[Json] = []
    has_more = False
    for obj in coll.newest_first(after):
        if match(obj):
            if len(data) == limit:
                has_more = True
                break
            data.append(obj)
    return _json({"object": "list", "data": data, "has_more": has_more, "url": request.path})


def _get(coll: Collection, kind: str, ident: str) -> Json:
    obj = coll.objects.get(ident)
    if obj is None:
        raise _missing(kind, ident)
    return obj


# --- customers -------------------------------------------------------------------------------


async def list_customers(request: web.Request) -> web.Response:
    email = request.query.get("email")
    return _list(
        request,
        _state(request).customers,
        "customer",
        lambda c: email is None or c["email"] == email,
        CUSTOMER_LIST,
    )


async def get_customer(request: web.Request) -> web.Response:
    _query(request, RETRIEVE)
    return _json(_get(_state(request).customers, "customer", request.match_info["id"]))


async def create_customer(request: web.Request, params: Json) -> web.Response:
    _known(params, CUSTOMER_CREATE)
    state = _state(request)
    email = params.get("email")
    if email is not None:
        email = _str_param(email, "email", 512)
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
            raise _invalid(f"Invalid email address: {email}", "email")
    name = _str_param(params["name"], "name", 256) if "name" in params else None
    customer = {
        "id": state.new_id("cus"),
        "object": "customer",
        "created": int(time.time()),
        "currency": None,
        "delinquent": False,
        "description": params.get("description"),
        "email": email,
        "livemode": False,
        "metadata": _metadata(params.get("metadata")),
        "name": name,
        "phone": params.get("phone"),
    }
    return _json(state.customers.add(customer))


# --- invoices --------------------------------------------------------------------------------

INVOICE_STATUSES = ("draft", "open", "paid", "void", "uncollectible")


async def list_invoices(request: web.Request) -> web.Response:
    customer = request.query.get("customer")
    status = request.query.get("status")
    if status is not None and status not in INVOICE_STATUSES:
        raise _invalid(f"Invalid status: must be one of {', '.join(INVOICE_STATUSES)}", "status")
    return _list(
        request,
        _state(request).invoices,
        "invoice",
        lambda i: (
            (customer is None or i["customer"] == customer)
            and (status is None or i["status"] == status)
        ),
        INVOICE_LIST,
    )


async def get_invoice(request: web.Request) -> web.Response:
    _query(request, RETRIEVE)
    return _json(_get(_state(request).invoices, "invoice", request.match_info["id"]))


def _currency(raw: Any, param: str) -> str:
    currency = _str_param(raw, param).lower()
    if not re.fullmatch(r"[a-z]{3}", currency):
        raise _invalid(f"Invalid currency: {currency}", param)
    return currency


def _choice(params: Json, param: str, choices: tuple[str, ...]) -> str | None:
    value = params.get(param)
    if value is not None and value not in choices:
        raise _invalid(f"Invalid {param}: must be one of {', '.join(choices)}", param)
    return value


def _bool_param(params: Json, param: str) -> bool | None:
    value = params.get(param)
    if value is None:
        return None
    if value not in ("true", "false"):
        raise _invalid(f"Invalid boolean: {value}", param)
    return bool(value == "true")


async def create_invoice(request: web.Request, params: Json) -> web.Response:
    _known(params, INVOICE_CREATE)
    state = _state(request)
    if "customer" not in params:
        raise _required("customer")
    customer = _str_param(params["customer"], "customer")
    if customer not in state.customers.objects:
        raise _missing("customer", customer, "customer")
    default_currency = state.customers.objects[customer].get("currency") or "usd"
    currency = _currency(params.get("currency", default_currency), "currency")
    method = _choice(params, "collection_method", ("charge_automatically", "send_invoice"))
    method = method or "charge_automatically"
    pending = _choice(params, "pending_invoice_items_behavior", ("exclude", "include"))
    auto_advance = _bool_param(params, "auto_advance")
    now = int(time.time())
    due_date: int | None = None
    if "days_until_due" in params:
        due_date = now + 86_400 * _int_param(params["days_until_due"], "days_until_due", 0, 730)
    if "due_date" in params:
        if due_date is not None:
            raise _invalid("You may only specify one of days_until_due and due_date.", "due_date")
        due_date = _int_param(params["due_date"], "due_date", now)
    if method == "send_invoice" and due_date is None:
        raise _invalid(
            "Invoices with collection_method=send_invoice must have either a due_date or "
            "days_until_due set.",
            "days_until_due",
        )
    if method == "charge_automatically" and due_date is not None:
        raise _invalid(
            "days_until_due and due_date can only be set when collection_method is send_invoice.",
            "days_until_due" if "days_until_due" in params else "due_date",
        )
    ident = state.new_id("in")
    description = params.get("description")
    inv = _invoice(
        ident,
        customer,
        currency,
        [],
        now,
        _metadata(params.get("metadata")),
        _str_param(description, "description") if description is not None else None,
    )
    inv.update(collection_method=method, due_date=due_date, auto_advance=bool(auto_advance))
    state.invoices.add(inv)
    if pending == "include":  # the customer's pending items in its currency join the draft
        for item in list(state.invoice_items.newest_first(None))[::-1]:
            if item["invoice"] is None and item["customer"] == customer:
                if item["currency"] == currency:
                    _attach(inv, item)
    return _json(inv)


def _attach(inv: Json, item: Json) -> None:
    """An invoice item becomes a line of a draft invoice; the totals follow."""
    if len(inv["lines"]["data"]) >= MAX_INVOICE_ITEMS:
        raise _invalid(f"An invoice can have at most {MAX_INVOICE_ITEMS} items.", "invoice")
    item["invoice"] = inv["id"]
    line = _line(
        f"il_{item['id'][3:]}",
        item["currency"],
        item["amount"],
        item["quantity"],
        item["description"] or "",
    )
    line.update(invoice_item=item["id"], type="invoiceitem", metadata=item["metadata"])
    inv["lines"]["data"].append(line)
    total = sum(int(ln["amount"]) for ln in inv["lines"]["data"])
    inv.update(amount_due=total, amount_remaining=total, subtotal=total, total=total)


def _unit_amount(params: Json) -> Decimal | None:
    """``unit_amount`` (integer cents) or ``unit_amount_decimal`` (cents, 12 places at most)."""
    if "unit_amount" in params and "unit_amount_decimal" in params:
        raise _invalid(
            "You may only specify one of these parameters: unit_amount, unit_amount_decimal.",
            "unit_amount_decimal",
        )
    if "unit_amount" in params:
        return Decimal(_int_param(params["unit_amount"], "unit_amount", 0))
    raw = params.get("unit_amount_decimal")
    if raw is None:
        return None
    if not isinstance(raw, str) or not re.fullmatch(r"\d{1,15}(\.\d{1,12})?", raw):
        raise _invalid(f"Invalid decimal: {raw}", "unit_amount_decimal")
    return Decimal(raw)


async def create_invoice_item(request: web.Request, params: Json) -> web.Response:
    _known(params, INVOICE_ITEM_CREATE)
    state = _state(request)
    if "customer" not in params:
        raise _required("customer")
    customer = _str_param(params["customer"], "customer")
    if customer not in state.customers.objects:
        raise _missing("customer", customer, "customer")
    inv: Json | None = None
    if "invoice" in params:
        inv = _get(state.invoices, "invoice", _str_param(params["invoice"], "invoice"))
        if inv["customer"] != customer:
            raise _invalid(
                "The invoice's customer does not match the invoice item's customer.", "invoice"
            )
        if inv["status"] != "draft":
            raise StripeError(
                400,
                "You can only add invoice items to draft invoices.",
                code="invoice_not_editable",
                param="invoice",
            )
    default_currency = inv["currency"] if inv else "usd"
    currency = _currency(params.get("currency", default_currency), "currency")
    if inv is not None and currency != inv["currency"]:
        raise _invalid(
            f"The currency of the invoice item ({currency}) must match the invoice's "
            f"({inv['currency']}).",
            "currency",
        )
    quantity = _int_param(params.get("quantity", "1"), "quantity", 0)
    unit = _unit_amount(params)
    if "amount" in params:
        if unit is not None:
            raise _invalid(
                "You may only specify one of these parameters: amount, unit_amount.", "amount"
            )
        amount = _int_param(params["amount"], "amount")
    elif unit is not None:
        amount = int((unit * quantity).to_integral_value())
    else:
        raise _required("amount")
    description = params.get("description")
    item: Json = {
        "id": state.new_id("ii"),
        "object": "invoiceitem",
        "amount": amount,
        "currency": currency,
        "customer": customer,
        "date": int(time.time()),
        "description": (
            _str_param(description, "description") if description is not None else None
        ),
        "discountable": amount >= 0,
        "invoice": None,
        "livemode": False,
        "metadata": _metadata(params.get("metadata")),
        "proration": False,
        "quantity": quantity,
        "unit_amount": int(unit) if unit is not None and unit == int(unit) else None,
        "unit_amount_decimal": str(unit) if unit is not None else str(amount),
    }
    if inv is not None:
        _attach(inv, item)
    return _json(state.invoice_items.add(item))


async def list_invoice_items(request: web.Request) -> web.Response:
    q = request.query
    customer, invoice = q.get("customer"), q.get("invoice")
    pending = q.get("pending")
    return _list(
        request,
        _state(request).invoice_items,
        "invoiceitem",
        lambda i: (
            (customer is None or i["customer"] == customer)
            and (invoice is None or i["invoice"] == invoice)
            and (pending is None or (i["invoice"] is None) == (pending == "true"))
        ),
        INVOICE_ITEM_LIST,
    )


async def get_invoice_item(request: web.Request) -> web.Response:
    _query(request, RETRIEVE)
    return _json(_get(_state(request).invoice_items, "invoiceitem", request.match_info["id"]))


async def list_invoice_lines(request: web.Request) -> web.Response:
    q = _query(request, LIST_PARAMS)
    inv = _get(_state(request).invoices, "invoice", request.match_info["id"])
    limit = _int_param(q.get("limit", "10"), "limit", 1, MAX_LIMIT)
    lines: list[Json] = inv["lines"]["data"]
    start = 0
    if after := q.get("starting_after"):
        ids = [ln["id"] for ln in lines]
        if after not in ids:
            raise _missing("line_item", after, "starting_after")
        start = ids.index(after) + 1
    data = lines[start : start + limit]
    return _json(
        {
            "object": "list",
            "data": data,
            "has_more": start + limit < len(lines),
            "url": request.path,
        }
    )


def _transition(request: web.Request) -> tuple[BillingState, Json, int]:
    state = _state(request)
    return state, _get(state.invoices, "invoice", request.match_info["id"]), int(time.time())


async def finalize_invoice(request: web.Request, params: Json) -> web.Response:
    _known(params, FINALIZE)
    _, inv, now = _transition(request)
    if inv["status"] != "draft":
        raise StripeError(
            400,
            "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
            code="invoice_not_editable",
        )
    _finalize(inv, now)
    if inv["amount_due"] == 0:  # Stripe marks a finalized invoice with nothing due paid
        inv["status"] = "paid"
        inv["status_transitions"]["paid_at"] = now
    return _json(inv)


async def pay_invoice(request: web.Request, params: Json) -> web.Response:
    _known(params, PAY)
    state, inv, now = _transition(request)
    if inv["status"] == "draft":
        _finalize(inv, now)  # Stripe finalizes a draft it is asked to pay
    if inv["status"] == "paid":
        raise StripeError(400, "Invoice is already paid", code="invoice_already_paid")
    if inv["status"] != "open":
        raise StripeError(
            400,
            f"You cannot pay an invoice with status {inv['status']}.",
            code="invoice_not_payable",
        )
    if inv["payment_intent"] and inv["payment_intent"] in state.payments.objects:
        pi = state.payments.objects[inv["payment_intent"]]
        pi.update(status="succeeded", amount_received=inv["total"])
        inv.update(status="paid", amount_paid=inv["total"], amount_remaining=0)
        inv["status_transitions"]["paid_at"] = now
    else:
        _mark_paid(state, inv, now, state.new_id("pi"))
    _emit(request.app, "invoice.paid", inv)
    return _json(inv)


async def void_invoice(request: web.Request, params: Json) -> web.Response:
    _known(params, VOID)
    state, inv, now = _transition(request)
    if inv["status"] not in ("draft", "open"):
        raise StripeError(
            400,
            f"You can only void an open or draft invoice; this one is {inv['status']}.",
            code="invoice_not_voidable",
        )
    inv.update(status="void", amount_remaining=0)
    inv["status_transitions"]["voided_at"] = now
    pi = state.payments.objects.get(inv["payment_intent"] or "")
    if pi is not None and pi["status"] != "succeeded":
        pi["status"] = "canceled"
    return _json(inv)


async def mark_uncollectible(request: web.Request, params: Json) -> web.Response:
    _known(params, RETRIEVE)
    _, inv, _ = _transition(request)
    if inv["status"] != "open":
        raise StripeError(
            400, "You can only mark an open invoice uncollectible.", code="invoice_not_open"
        )
    inv["status"] = "uncollectible"
    return _json(inv)


# --- payment intents -------------------------------------------------------------------------


async def list_payments(request: web.Request) -> web.Response:
    customer = request.query.get("customer")
    return _list(
        request,
        _state(request).payments,
        "payment_intent",
        lambda p: customer is None or p["customer"] == customer,
        PAYMENT_LIST,
    )


async def get_payment(request: web.Request) -> web.Response:
    _query(request, RETRIEVE)
    return _json(_get(_state(request).payments, "payment_intent", request.match_info["id"]))


# --- webhooks --------------------------------------------------------------------------------


async def create_webhook_endpoint(request: web.Request, params: Json) -> web.Response:
    _known(params, WEBHOOK_CREATE)
    state = _state(request)
    url = _str_param(params.get("url"), "url", 2048)
    if not re.match(r"^https?://", url):
        raise _invalid("Invalid URL: must start with http:// or https://", "url")
    events = params.get("enabled_events")
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        raise StripeError(
            400,
            "Missing required param: enabled_events.",
            code="parameter_missing",
            param="enabled_events",
            validation=True,
        )
    endpoint = {
        "id": state.new_id("we"),
        "object": "webhook_endpoint",
        "created": int(time.time()),
        "enabled_events": events,
        "livemode": False,
        "metadata": _metadata(params.get("metadata")),
        "secret": WEBHOOK_SECRET,
        "status": "enabled",
        "url": url,
    }
    return _json(state.webhooks.add(endpoint))


async def list_webhook_endpoints(request: web.Request) -> web.Response:
    return _list(request, _state(request).webhooks, "webhook_endpoint", lambda w: True)


async def delete_webhook_endpoint(request: web.Request) -> web.Response:
    _query(request, RETRIEVE)
    state = _state(request)
    endpoint = _get(state.webhooks, "webhook_endpoint", request.match_info["id"])
    endpoint["status"] = "disabled"
    return _json({"id": endpoint["id"], "object": "webhook_endpoint", "deleted": True})


def _emit(app: web.Application, event_type: str, obj: Json) -> None:
    """Queue the event to every enabled endpoint; delivery runs in the background."""
    state: BillingState = app[BILLING]
    now = int(time.time())
    event_id = state.new_id("evt")
    event = {
        "id": event_id,
        "object": "event",
        "api_version": API_VERSION,
        "created": now,
        "livemode": False,
        "type": event_type,
        "data": {"object": obj},
    }
    payload = orjson.dumps(event)  # a snapshot: later changes to obj are not in this event
    for ep in state.webhooks.objects.values():
        if ep["status"] == "enabled" and (
            event_type in ep["enabled_events"] or "*" in ep["enabled_events"]
        ):
            task = asyncio.create_task(_deliver(state, ep["url"], event_id, payload))
            state.tasks.add(task)
            task.add_done_callback(state.tasks.discard)


async def _deliver(state: BillingState, url: str, event_id: str, payload: bytes) -> None:
    if state.session is None:
        state.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S)
        )
    record: Json = {"event": event_id, "url": url, "status": None, "error": None}
    state.deliveries.append(record)
    headers = {"Content-Type": "application/json", "Stripe-Signature": sign_payload(payload)}
    try:
        async with state.session.post(url, data=payload, headers=headers) as resp:
            await resp.read()
            record["status"] = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        record["error"] = type(exc).__name__


async def webhook_deliveries(request: web.Request) -> web.Response:
    """Control endpoint: what the sandbox tried to deliver, for tests and demos."""
    return _json({"deliveries": _state(request).deliveries[-200:]})


async def _close(app: web.Application) -> None:
    state: BillingState = app[BILLING]
    for task in list(state.tasks):
        task.cancel()
    if state.tasks:
        await asyncio.gather(*state.tasks, return_exceptions=True)
    if state.session is not None:
        await state.session.close()


def create_app() -> web.Application:
    app = web.Application(middlewares=[stripe_errors])
    app[BILLING] = seed_state()
    app.on_cleanup.append(_close)
    app.add_routes(
        [
            web.get("/v1/customers", list_customers),
            web.post("/v1/customers", idempotent(create_customer)),
            web.get("/v1/customers/{id}", get_customer),
            web.get("/v1/invoices", list_invoices),
            web.post("/v1/invoices", idempotent(create_invoice)),
            web.get("/v1/invoices/{id}", get_invoice),
            web.post("/v1/invoices/{id}/finalize", idempotent(finalize_invoice)),
            web.post("/v1/invoices/{id}/pay", idempotent(pay_invoice)),
            web.post("/v1/invoices/{id}/void", idempotent(void_invoice)),
            web.post("/v1/invoices/{id}/mark_uncollectible", idempotent(mark_uncollectible)),
            web.get("/v1/invoices/{id}/lines", list_invoice_lines),
            web.get("/v1/invoiceitems", list_invoice_items),
            web.post("/v1/invoiceitems", idempotent(create_invoice_item)),
            web.get("/v1/invoiceitems/{id}", get_invoice_item),
            web.get("/v1/payment_intents", list_payments),
            web.get("/v1/payment_intents/{id}", get_payment),
            web.get("/v1/webhook_endpoints", list_webhook_endpoints),
            web.post("/v1/webhook_endpoints", idempotent(create_webhook_endpoint)),
            web.delete("/v1/webhook_endpoints/{id}", delete_webhook_endpoint),
            web.get("/__webhooks", webhook_deliveries),
        ]
    )
    return app
