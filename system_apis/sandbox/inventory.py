"""Sandbox of the warehouse system: SKUs, stock levels and time-limited stock reservations.

Imitates a typical warehouse REST API: ``X-Api-Key`` auth, snake_case JSON, page-number
pagination with an RFC 8288 ``Link`` header, ``Idempotency-Key`` on POSTs, and reservations
that expire (checked lazily on every request and by a background sweep). It is strict, as
such APIs are: a query parameter or a body field an endpoint does not take is refused
(``400 invalid_parameter``, ``422 validation_error``), never ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from . import seed

API_KEY = "inv-sandbox-key"
MAX_PER_PAGE = 100
DEFAULT_TTL_S = 900
MAX_TTL_S = 7 * 24 * 3600
SWEEP_INTERVAL_S = 0.25
SKU_PATTERN = re.compile(r"^SKU-\d{4}$")
WAREHOUSES = ("WH-BER-1", "WH-AUS-1", "WH-LDS-1")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class SkuState:
    sku: str
    name: str
    unit_price: Decimal
    unit_cost: Decimal
    warehouse: str
    on_hand: int
    reserved: int = 0

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved

    def to_json(self) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "name": self.name,
            "unit_price": float(self.unit_price),
            "unit_cost": float(self.unit_cost),
            "warehouse": self.warehouse,
            "on_hand": self.on_hand,
            "reserved": self.reserved,
            "available": self.available,
        }


@dataclass(slots=True)
class ReservationState:
    id: str
    reference: str
    lines: list[tuple[str, int]]
    expires_at: float
    created_at: float
    status: str = "active"
    closed_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "reference": self.reference,
            "lines": [{"sku": s, "quantity": q} for s, q in self.lines],
            "expires_at": _iso(self.expires_at),
            "created_at": _iso(self.created_at),
            "closed_at": _iso(self.closed_at) if self.closed_at is not None else None,
        }


@dataclass(slots=True)
class Stored:
    """A response remembered under an Idempotency-Key, with the request it answered."""

    fingerprint: bytes
    status: int
    body: dict[str, Any]


@dataclass
class Warehouse:
    """All state of the sandbox: stock, reservations, idempotency keys."""

    skus: dict[str, SkuState] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    reservations: dict[str, ReservationState] = field(default_factory=dict)
    idempotency: dict[str, Stored] = field(default_factory=dict)
    deadlines: list[tuple[float, str]] = field(default_factory=list)  # heap of active ones

    @classmethod
    def seeded(cls) -> Warehouse:
        r = seed.rng("inventory")
        wh = cls()
        for s in seed.skus():
            wh.skus[s.sku] = SkuState(
                s.sku, s.name, s.unit_price, s.unit_cost, r.choice(WAREHOUSES), s.on_hand
            )
            wh.order.append(s.sku)
        return wh

    def expire(self, now: float | None = None) -> None:
        """Turn every active reservation past its deadline into ``expired``, returning stock."""
        now = time.time() if now is None else now
        while self.deadlines and self.deadlines[0][0] <= now:
            _, res_id = heapq.heappop(self.deadlines)
            res = self.reservations[res_id]
            if res.status == "active" and res.expires_at <= now:
                self._unreserve(res)
                res.status = "expired"
                res.closed_at = now
            elif res.status == "active":  # deadline moved later: keep watching it
                heapq.heappush(self.deadlines, (res.expires_at, res.id))

    def add(self, res: ReservationState) -> None:
        self.reservations[res.id] = res
        heapq.heappush(self.deadlines, (res.expires_at, res.id))

    def _unreserve(self, res: ReservationState) -> None:
        for sku, qty in res.lines:
            self.skus[sku].reserved -= qty


WAREHOUSE = web.AppKey("warehouse", Warehouse)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error(status: int, error: str, message: str, **extra: Any) -> web.Response:
    return _json({"error": error, "message": message, **extra}, status)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, headers=headers, content_type="application/json"
    )


def _wh(request: web.Request) -> Warehouse:
    return request.app[WAREHOUSE]


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/__"):
        return await handler(request)
    if request.headers.get("X-Api-Key") != API_KEY:
        return _json({"error": "unauthorized"}, 401)
    resource = request.match_info.route.resource
    allowed = QUERY_PARAMS.get(resource.canonical if resource else "", frozenset())
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        return _error(400, "invalid_parameter", f"unknown query parameter {unknown[0]!r}")
    _wh(request).expire()  # lazy expiry: every read sees the truth
    return await handler(request)


def _int_param(request: web.Request, name: str, default: int, hi: int) -> int | web.Response:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= hi:
        return _error(400, "invalid_parameter", f"{name} must be an integer between 1 and {hi}")
    return int(raw)


async def list_skus(request: web.Request) -> web.Response:
    wh = _wh(request)
    page = _int_param(request, "page", 1, 10**6)
    if isinstance(page, web.Response):
        return page
    per_page = _int_param(request, "per_page", 50, MAX_PER_PAGE)
    if isinstance(per_page, web.Response):
        return per_page
    total = len(wh.order)
    total_pages = max(1, -(-total // per_page))
    start = (page - 1) * per_page
    data = [wh.skus[s].to_json() for s in wh.order[start : start + per_page]]
    links = []
    base = request.url.with_query(None)
    if page < total_pages:
        links.append(f'<{base.with_query(page=page + 1, per_page=per_page)}>; rel="next"')
    if page > 1:
        links.append(f'<{base.with_query(page=page - 1, per_page=per_page)}>; rel="prev"')
    links.append(f'<{base.with_query(page=1, per_page=per_page)}>; rel="first"')
    links.append(f'<{base.with_query(page=total_pages, per_page=per_page)}>; rel="last"')
    body = {
        "data": data,
        "page": page,
        "per_page": per_page,
        "total": total,
        "total_pages": total_pages,
    }
    return _json(body, headers={"Link": ", ".join(links)})


async def get_stock(request: web.Request) -> web.Response:
    sku = request.match_info["sku"]
    if not SKU_PATTERN.match(sku):
        return _error(400, "invalid_sku", f"malformed sku {sku!r}: expected SKU-NNNN")
    state = _wh(request).skus.get(sku)
    if state is None:
        return _error(404, "not_found", f"sku {sku} not found")
    return _json(state.to_json())


QUERY_PARAMS: dict[str, frozenset[str]] = {"/v1/skus": frozenset({"page", "per_page"})}
"""The query parameters each route takes; every other route takes none."""
RESERVATION_FIELDS = frozenset({"reference", "ttl_seconds", "lines"})
LINE_FIELDS = frozenset({"sku", "quantity"})


def _validate_reservation(body: Any) -> tuple[str, list[tuple[str, int]], int] | str:
    """The reservation request, or a message saying what is wrong with it."""
    if not isinstance(body, dict):
        return "body must be a JSON object"
    if unknown := sorted(set(body) - RESERVATION_FIELDS):
        return f"unknown field {unknown[0]!r}"
    reference = body.get("reference")
    if not isinstance(reference, str) or not reference:
        return "reference must be a non-empty string"
    ttl = body.get("ttl_seconds", DEFAULT_TTL_S)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= MAX_TTL_S:
        return f"ttl_seconds must be an integer between 1 and {MAX_TTL_S}"
    lines = body.get("lines")
    if not isinstance(lines, list) or not lines:
        return "lines must be a non-empty array"
    out: list[tuple[str, int]] = []
    for i, line in enumerate(lines):
        if not isinstance(line, dict):
            return f"lines[{i}] must be an object"
        if unknown := sorted(set(line) - LINE_FIELDS):
            return f"lines[{i}]: unknown field {unknown[0]!r}"
        sku, qty = line.get("sku"), line.get("quantity")
        if not isinstance(sku, str):
            return f"lines[{i}].sku must be a string"
        if isinstance(qty, bool) or not isinstance(qty, int) or qty < 1:
            return f"lines[{i}].quantity must be a positive integer"
        out.append((sku, qty))
    return reference, out, ttl


def _create_reservation(wh: Warehouse, body: Any) -> tuple[int, dict[str, Any]]:
    """All or nothing: either every line is reserved, or nothing is."""
    parsed = _validate_reservation(body)
    if isinstance(parsed, str):
        return 422, {"error": "validation_error", "message": parsed}
    reference, lines, ttl = parsed
    wanted: dict[str, int] = {}
    for sku, qty in lines:
        if sku not in wh.skus:
            return 422, {"error": "unknown_sku", "message": f"unknown sku {sku}", "sku": sku}
        wanted[sku] = wanted.get(sku, 0) + qty
    for sku, qty in wanted.items():
        available = wh.skus[sku].available
        if qty > available:
            return 409, {
                "error": "insufficient_stock",
                "message": f"insufficient stock for {sku}: requested {qty}, available {available}",
                "sku": sku,
                "requested": qty,
                "available": available,
            }
    for sku, qty in wanted.items():
        wh.skus[sku].reserved += qty
    now = time.time()
    res = ReservationState(f"res_{uuid.uuid4().hex[:20]}", reference, lines, now + ttl, now)
    wh.add(res)
    return 201, res.to_json()


def _transition(wh: Warehouse, res_id: str, action: str) -> tuple[int, dict[str, Any]]:
    res = wh.reservations.get(res_id)
    if res is None:
        return 404, {"error": "not_found", "message": f"reservation {res_id} not found"}
    done = "released" if action == "release" else "consumed"
    if res.status == done:
        return 200, res.to_json()  # repeating a finished transition is harmless
    if res.status != "active":
        return 409, {
            "error": "invalid_state",
            "message": f"cannot {action} a reservation that is {res.status}",
            "status": res.status,
        }
    wh._unreserve(res)
    if action == "commit":
        for sku, qty in res.lines:
            wh.skus[sku].on_hand -= qty
    res.status = done
    res.closed_at = time.time()
    return 200, res.to_json()


async def _idempotent(
    request: web.Request, body: Any, action: Callable[[], tuple[int, dict[str, Any]]]
) -> web.Response:
    """Run ``action`` once per Idempotency-Key; replay its answer for the same request."""
    key = request.headers.get("Idempotency-Key")
    if not key:
        status, payload = action()
        return _json(payload, status)
    wh = _wh(request)
    fingerprint = request.path.encode() + b"\n" + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    stored = wh.idempotency.get(key)
    if stored is not None:
        if stored.fingerprint != fingerprint:
            return _error(
                422,
                "idempotency_mismatch",
                "this Idempotency-Key was used with a different request",
            )
        return _json(stored.body, stored.status, headers={"Idempotent-Replayed": "true"})
    status, payload = action()
    wh.idempotency[key] = Stored(fingerprint, status, payload)
    return _json(payload, status)


async def _read_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _error(400, "invalid_json", "request body is not valid JSON")


async def create_reservation(request: web.Request) -> web.Response:
    body = await _read_body(request)
    if isinstance(body, web.Response):
        return body
    return await _idempotent(request, body, lambda: _create_reservation(_wh(request), body))


async def get_reservation(request: web.Request) -> web.Response:
    res = _wh(request).reservations.get(request.match_info["id"])
    if res is None:
        return _error(404, "not_found", f"reservation {request.match_info['id']} not found")
    return _json(res.to_json())


def _transition_view(action: str) -> Handler:
    async def view(request: web.Request) -> web.Response:
        body = await _read_body(request)
        if isinstance(body, web.Response):
            return body
        res_id = request.match_info["id"]
        return await _idempotent(request, body, lambda: _transition(_wh(request), res_id, action))

    return view


async def _sweeper(app: web.Application) -> AsyncIterator[None]:
    """Expire reservations in the background too, so stock returns even with no traffic."""

    async def sweep() -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            app[WAREHOUSE].expire()

    task = asyncio.create_task(sweep())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app() -> web.Application:
    app = web.Application(middlewares=[_auth])
    app[WAREHOUSE] = Warehouse.seeded()
    app.cleanup_ctx.append(_sweeper)
    app.add_routes(
        [
            web.get("/v1/skus", list_skus),
            web.get("/v1/stock/{sku}", get_stock),
            web.post("/v1/reservations", create_reservation),
            web.get("/v1/reservations/{id}", get_reservation),
            web.post("/v1/reservations/{id}/release", _transition_view("release")),
            web.post("/v1/reservations/{id}/commit", _transition_view("commit")),
        ]
    )
    return app
