"""The inventory system API against the warehouse sandbox over real HTTP, plus its pure mapping."""

from __future__ import annotations

import heapq
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from system_apis.config import BACKEND_NAMES, BackendConfig
from system_apis.errors import (
    BackendAuthFailed,
    BackendConflict,
    BackendNotFound,
    BackendRejected,
    BadBackendData,
)
from system_apis.http.common import InvalidInput
from system_apis.http.inventory import routes
from system_apis.inventory import (
    InventoryClient,
    next_link,
    reservation_from_vendor,
    reservation_request_to_vendor,
    stock_from_vendor,
)
from system_apis.models import OrderLine, ReservationStatus
from system_apis.sandbox import seed
from system_apis.sandbox.inventory import WAREHOUSE
from tests.conftest import SandboxThread
from tests.eventually import eventually


def config(key: str = "inv-sandbox-key") -> BackendConfig:
    return BackendConfig.model_validate(
        {
            "sandbox": True,
            "auth": {"kind": "api_key", "header": "X-Api-Key", "key": key},
            "retry": {"max_attempts": 2, "base_delay_s": 0.01},
        }
    )


@pytest.fixture
async def client(clean_sandbox: Any) -> AsyncIterator[InventoryClient]:
    c = InventoryClient(config(), base_url=clean_sandbox.url("inventory"))
    await c.start()
    yield c
    await c.close()


def ref() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


# --- pure mapping ----------------------------------------------------------------------------

GOOD_SKU = {
    "sku": "SKU-0042",
    "name": "Bolt A12",
    "unit_price": 12.5,
    "unit_cost": 7.5,
    "warehouse": "WH-BER-1",
    "on_hand": 10,
    "reserved": 3,
    "available": 7,
}


def test_stock_mapping_drops_unit_cost_and_types_money() -> None:
    s = stock_from_vendor(GOOD_SKU)
    assert s.sku == "SKU-0042" and s.name == "Bolt A12" and s.warehouse == "WH-BER-1"
    assert (s.on_hand, s.reserved, s.available) == (10, 3, 7)
    assert s.unit_price == Decimal("12.50")
    assert "unit_cost" not in s.model_dump()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"on_hand": None}, "on_hand"),
        ({"reserved": "3"}, "reserved"),
        ({"available": True}, "available"),
        ({"available": -1}, "available"),
        ({"unit_price": "twelve"}, "unit_price"),
        ({"name": 5}, "name"),
    ],
)
def test_stock_mapping_bad_field_names_record_and_field(change: dict[str, Any], field: str) -> None:
    raw = {k: v for k, v in {**GOOD_SKU, **change}.items() if v is not None}
    with pytest.raises(BadBackendData) as exc:
        stock_from_vendor(raw)
    assert exc.value.backend == "inventory"
    assert exc.value.record == "SKU-0042"
    assert exc.value.field == field


def test_stock_mapping_missing_sku_and_not_an_object() -> None:
    with pytest.raises(BadBackendData) as exc:
        stock_from_vendor({k: v for k, v in GOOD_SKU.items() if k != "sku"})
    assert exc.value.field == "sku"
    with pytest.raises(BadBackendData):
        stock_from_vendor(["SKU-0001"])


GOOD_RES = {
    "id": "res_1",
    "status": "active",
    "reference": "order-1",
    "lines": [{"sku": "SKU-0001", "quantity": 2}],
    "expires_at": "2026-11-27T10:00:00.000Z",
}


def test_reservation_mapping() -> None:
    r = reservation_from_vendor(GOOD_RES)
    assert r.id == "res_1" and r.status is ReservationStatus.ACTIVE and r.reference == "order-1"
    assert r.lines == [OrderLine(sku="SKU-0001", quantity=2)]
    assert r.expires_at is not None and r.expires_at.utcoffset() is not None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"status": "pending"}, "status"),
        ({"lines": "SKU-0001"}, "lines"),
        ({"lines": [{"sku": "SKU-0001", "quantity": 0}]}, "lines[0].quantity"),
        ({"lines": [{"quantity": 1}]}, "lines[0].sku"),
        ({"expires_at": "tomorrow"}, "expires_at"),
        ({"expires_at": "2026-11-27T10:00:00"}, "expires_at"),
    ],
)
def test_reservation_mapping_bad_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(BadBackendData) as exc:
        reservation_from_vendor({**GOOD_RES, **change})
    assert (exc.value.record, exc.value.field) == ("res_1", field)


def test_reservation_request_to_vendor() -> None:
    body = reservation_request_to_vendor(
        [OrderLine(sku="SKU-0001", quantity=2, unit_price=Decimal("3.00"))], "o-1", 60
    )
    assert body == {
        "reference": "o-1",
        "lines": [{"sku": "SKU-0001", "quantity": 2}],
        "ttl_seconds": 60,
    }


def test_next_link_parsing() -> None:
    header = (
        '<http://x/v1/skus?page=3&per_page=5>; rel="next", '
        '<http://x/v1/skus?page=1&per_page=5>; rel="prev"'
    )
    assert next_link(header) == "http://x/v1/skus?page=3&per_page=5"
    assert next_link('<http://x/v1/skus?page=1>; rel="prev"') is None
    assert next_link(None) is None


# --- reads and pagination --------------------------------------------------------------------


async def test_get_stock_matches_seed(client: InventoryClient) -> None:
    seeded = seed.skus()[0]
    s = await client.get_stock(seeded.sku)
    assert s.name == seeded.name and s.unit_price == seeded.unit_price
    assert s.available == s.on_hand - s.reserved


async def test_iter_stock_follows_link_header_to_the_end(client: InventoryClient) -> None:
    skus = [s.sku async for s in client.iter_stock(per_page=7)]
    assert skus == [s.sku for s in seed.skus()]  # 43 pages, none skipped or repeated


async def test_stock_page_cursor_walk(client: InventoryClient) -> None:
    cursor: str | None = None
    seen: list[str] = []
    pages = 0
    while True:
        page = await client.stock_page(cursor, limit=100)
        pages += 1
        seen += [s.sku for s in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 3 and len(seen) == seed.SKUS == len(set(seen))


async def test_unknown_sku_is_not_found_and_malformed_sku_rejected(client: InventoryClient) -> None:
    with pytest.raises(BackendNotFound):
        await client.get_stock("SKU-9999")
    calls = client.stats.calls
    for malformed in ("abc", "SKU-\u0661\u0662\u0663\u0664", "res_x"):  # not its SKU syntax
        with pytest.raises(BackendNotFound):
            await client.get_stock(malformed)
    assert client.stats.calls == calls  # refused before any call
    with pytest.raises(BackendNotFound):
        await client.get_reservation("res_doesnotexist")


async def test_bad_credentials(clean_sandbox: Any) -> None:
    c = InventoryClient(config("wrong-key"), base_url=clean_sandbox.url("inventory"))
    await c.start()
    try:
        with pytest.raises(BackendAuthFailed) as exc:
            await c.get_stock("SKU-0001")
        assert exc.value.status == 502  # our misconfiguration, not the caller's
    finally:
        await c.close()


async def test_the_sandbox_refuses_what_an_endpoint_does_not_take(clean_sandbox: Any) -> None:
    base = clean_sandbox.url("inventory")
    key = {"X-Api-Key": "inv-sandbox-key"}
    async with httpx.AsyncClient(base_url=base, headers=key) as h:
        assert (await h.get("/v1/skus", params={"page": 1, "per_page": 5})).status_code == 200
        r = await h.get("/v1/skus", params={"page": 1, "perpage": 5})
        assert r.status_code == 400 and r.json()["error"] == "invalid_parameter"
        assert "perpage" in r.json()["message"]
        r = await h.get("/v1/stock/SKU-0001", params={"warehouse": "main"})
        assert r.status_code == 400 and r.json()["error"] == "invalid_parameter"
        ref = uuid.uuid4().hex
        lines = [{"sku": "SKU-0001", "quantity": 1}]
        for body, word in (
            ({"reference": ref, "lines": lines, "ttl": 60}, "'ttl'"),
            ({"reference": ref, "lines": [{**lines[0], "qty": 1}]}, "lines[0]: unknown field"),
        ):
            r = await h.post("/v1/reservations", json=body)
            assert r.status_code == 422 and word in r.json()["message"], r.text
        stock = (await h.get("/v1/stock/SKU-0001")).json()
        assert (
            await h.post("/v1/reservations", json={"reference": ref, "lines": lines})
        ).is_success
        after = (await h.get("/v1/stock/SKU-0001")).json()
        assert after["reserved"] == stock["reserved"] + 1  # only the well-formed one reserved


async def test_malformed_body_is_bad_backend_data(
    client: InventoryClient, clean_sandbox: Any
) -> None:
    await clean_sandbox.set_faults("inventory", malformed_rate=1)
    with pytest.raises(BadBackendData):
        await client.get_stock("SKU-0001")
    with pytest.raises(BadBackendData):
        await client.stock_page(None, 10)


# --- reservations ----------------------------------------------------------------------------


async def test_reserve_release_restores_available(client: InventoryClient) -> None:
    sku = "SKU-0300"
    before = await client.get_stock(sku)
    qty = min(2, before.available)
    assert qty > 0, "seed stock of SKU-0300 is empty"
    res = await client.reserve([OrderLine(sku=sku, quantity=qty)], ref(), ttl_s=300)
    assert res.status is ReservationStatus.ACTIVE and res.id.startswith("res_")
    assert res.lines == [OrderLine(sku=sku, quantity=qty)]
    during = await client.get_stock(sku)
    assert during.available == before.available - qty
    assert during.reserved == before.reserved + qty and during.on_hand == before.on_hand
    assert (await client.get_reservation(res.id)).status is ReservationStatus.ACTIVE

    released = await client.release(res.id)
    assert released.status is ReservationStatus.RELEASED
    after = await client.get_stock(sku)
    assert (after.available, after.on_hand) == (before.available, before.on_hand)
    # Releasing again is harmless and changes nothing; committing a released one is refused.
    assert (await client.release(res.id)).status is ReservationStatus.RELEASED
    assert (await client.get_stock(sku)).available == before.available
    with pytest.raises(BackendConflict):
        await client.commit(res.id)


async def test_commit_consumes_on_hand(client: InventoryClient) -> None:
    sku = "SKU-0299"
    before = await client.get_stock(sku)
    assert before.available > 0
    res = await client.reserve([OrderLine(sku=sku, quantity=1)], ref())
    done = await client.commit(res.id)
    assert done.status is ReservationStatus.CONSUMED
    after = await client.get_stock(sku)
    assert after.on_hand == before.on_hand - 1
    assert after.reserved == before.reserved and after.available == before.available - 1
    assert (await client.get_reservation(res.id)).status is ReservationStatus.CONSUMED
    with pytest.raises(BackendConflict):
        await client.release(res.id)


async def test_insufficient_stock_reserves_nothing(client: InventoryClient) -> None:
    ok_sku, short_sku = "SKU-0298", "SKU-0297"
    before = {s: await client.get_stock(s) for s in (ok_sku, short_sku)}
    lines = [
        OrderLine(sku=ok_sku, quantity=1),
        OrderLine(sku=short_sku, quantity=before[short_sku].available + 1),
    ]
    with pytest.raises(BackendConflict) as exc:
        await client.reserve(lines, ref())
    assert short_sku in exc.value.detail
    for sku, was in before.items():
        now = await client.get_stock(sku)
        assert (now.available, now.reserved, now.on_hand) == (
            was.available,
            was.reserved,
            was.on_hand,
        )


async def test_unknown_sku_in_reservation_is_rejected(client: InventoryClient) -> None:
    before = await client.get_stock("SKU-0296")
    lines = [OrderLine(sku="SKU-0296", quantity=1), OrderLine(sku="SKU-9999", quantity=1)]
    with pytest.raises(BackendRejected) as exc:
        await client.reserve(lines, ref())
    assert exc.value.upstream_status == 422
    assert (await client.get_stock("SKU-0296")).available == before.available


@pytest.mark.slow  # waits for a reservation to expire
async def test_expiry_returns_stock(client: InventoryClient, clean_sandbox: Any) -> None:
    sku = "SKU-0295"
    before = await client.get_stock(sku)
    res = await client.reserve([OrderLine(sku=sku, quantity=1)], ref(), ttl_s=1)
    assert (await client.get_stock(sku)).available == before.available - 1
    # The background sweep expires it without any request reaching the backend...
    runner = clean_sandbox.sandbox.runners[BACKEND_NAMES.index("inventory")]
    reservations = runner.app[WAREHOUSE].reservations
    await eventually(lambda: reservations[res.id].status == "expired", message="swept")
    # ...and every read sees the stock back.
    assert (await client.get_stock(sku)).available == before.available
    expired = await client.get_reservation(res.id)
    assert expired.status is ReservationStatus.EXPIRED
    with pytest.raises(BackendConflict):
        await client.commit(res.id)


async def test_lazy_expiry_on_access(client: InventoryClient, clean_sandbox: Any) -> None:
    sku = "SKU-0294"
    before = await client.get_stock(sku)
    res = await client.reserve([OrderLine(sku=sku, quantity=1)], ref(), ttl_s=60)
    warehouse = clean_sandbox.sandbox.runners[BACKEND_NAMES.index("inventory")].app[WAREHOUSE]
    # Move the deadline into the past; the next read must see it without waiting for a sweep.
    warehouse.reservations[res.id].expires_at = 0.0
    heapq.heappush(warehouse.deadlines, (0.0, res.id))
    assert (await client.get_reservation(res.id)).status is ReservationStatus.EXPIRED
    assert (await client.get_stock(sku)).available == before.available


async def test_idempotent_replay_reserves_once(client: InventoryClient) -> None:
    sku = "SKU-0293"
    before = await client.get_stock(sku)
    key = f"idem-{uuid.uuid4().hex}"
    reference = ref()
    lines = [OrderLine(sku=sku, quantity=1)]
    first = await client.reserve(lines, reference, idempotency_key=key)
    second = await client.reserve(lines, reference, idempotency_key=key)
    assert first.id == second.id
    assert (await client.get_stock(sku)).available == before.available - 1
    with pytest.raises(BackendRejected) as exc:
        await client.reserve([OrderLine(sku=sku, quantity=2)], reference, idempotency_key=key)
    assert exc.value.upstream_status == 422 and "Idempotency" in exc.value.detail
    assert (await client.get_stock(sku)).available == before.available - 1
    await client.release(first.id)
    assert (await client.get_stock(sku)).available == before.available


# --- canonical HTTP views --------------------------------------------------------------------


@pytest.fixture
async def api(client: InventoryClient) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=[Mount("/system/v1/inventory", routes=routes(client))])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        yield http


async def test_views_list_and_get(api: httpx.AsyncClient) -> None:
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "100", **({"cursor": cursor} if cursor else {})}
        r = await api.get("/system/v1/inventory/stock", params=params)
        assert r.status_code == 200
        body = r.json()
        seen += [item["sku"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == seed.SKUS
    one = (await api.get("/system/v1/inventory/stock/SKU-0010")).json()
    assert one["sku"] == "SKU-0010" and "unit_cost" not in one
    with pytest.raises(InvalidInput):
        await api.get("/system/v1/inventory/stock", params={"cursor": "x"})


async def test_views_reservation_lifecycle(api: httpx.AsyncClient) -> None:
    base = "/system/v1/inventory"
    before = (await api.get(f"{base}/stock/SKU-0292")).json()
    r = await api.post(
        f"{base}/reservations",
        json={"reference": ref(), "lines": [{"sku": "SKU-0292", "quantity": 1}], "ttl_s": 120},
    )
    assert r.status_code == 201 and r.json()["status"] == "active"
    rid = r.json()["id"]
    assert (await api.get(f"{base}/reservations/{rid}")).json()["id"] == rid
    assert (await api.get(f"{base}/stock/SKU-0292")).json()["available"] == before["available"] - 1
    assert (await api.post(f"{base}/reservations/{rid}/release")).json()["status"] == "released"
    assert (await api.get(f"{base}/stock/SKU-0292")).json()["available"] == before["available"]
    with pytest.raises(InvalidInput) as exc:
        await api.post(f"{base}/reservations", json={"reference": "x", "lines": []})
    assert exc.value.errors[0]["path"] == "lines"


@pytest.mark.parametrize("bad", [".", ".."])
async def test_dot_segments_never_reach_the_backend(clean_sandbox: SandboxThread, bad: str) -> None:
    client = InventoryClient(
        BackendConfig.model_validate(
            {"sandbox": True, "auth": {"kind": "api_key", "key": "inv-sandbox-key"}}
        ),
        clean_sandbox.url("inventory"),
    )
    await client.start()
    try:
        await clean_sandbox.reset_hits("inventory")
        with pytest.raises(BackendNotFound):
            await client.get_stock(bad)
        assert await clean_sandbox.hits("inventory") == {}
    finally:
        await client.close()
