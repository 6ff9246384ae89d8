"""Canonical JSON views of the warehouse system, mounted at ``/system/v1/inventory``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..inventory import CURSOR, MAX_PER_PAGE, InventoryClient
from ..models import OrderLine, Page, Reservation, StockLevel
from .common import json_response, location, query_cursor, query_int, read_model
from .operation import BACKEND_ERRORS, HeaderParam, operation, page_query


class ReservationRequest(BaseModel):
    """What a caller sends to reserve stock."""

    model_config = ConfigDict(extra="forbid")

    reference: str = Field(min_length=1, max_length=200)
    lines: list[OrderLine] = Field(min_length=1, max_length=200)
    ttl_s: int = Field(900, ge=1, le=7 * 24 * 3600)


def routes(client: InventoryClient) -> list[BaseRoute]:
    @operation(
        "Stock levels, one page at a time",
        response=Page[StockLevel],
        query=page_query(MAX_PER_PAGE),
        errors=[422, *BACKEND_ERRORS],
    )
    async def list_stock(request: Request) -> Response:
        cursor = query_cursor(request, CURSOR)
        limit = query_int(request, "limit", 50, hi=MAX_PER_PAGE)
        page = await client.stock_page(cursor, limit)
        return json_response({"items": page.items, "next_cursor": page.next_cursor})

    @operation("The stock level of one SKU", response=StockLevel, errors=[404, *BACKEND_ERRORS])
    async def get_stock(request: Request) -> Response:
        return json_response(await client.get_stock(request.path_params["sku"]))

    @operation(
        "Reserve stock for an order",
        request=ReservationRequest,
        response=Reservation,
        status=201,
        headers=[HeaderParam("Idempotency-Key", "A retry with the same key reserves once.")],
        errors=[404, 409, *BACKEND_ERRORS],
    )
    async def create_reservation(request: Request) -> Response:
        body = await read_model(request, ReservationRequest)
        reservation = await client.reserve(
            body.lines,
            body.reference,
            body.ttl_s,
            idempotency_key=request.headers.get("Idempotency-Key"),
        )
        return json_response(reservation, 201, location(request, reservation.id))

    @operation("A reservation", response=Reservation, errors=[404, *BACKEND_ERRORS])
    async def get_reservation(request: Request) -> Response:
        return json_response(await client.get_reservation(request.path_params["id"]))

    @operation(
        "Release a reservation (stock returns to available)",
        response=Reservation,
        errors=[404, 409, *BACKEND_ERRORS],
    )
    async def release(request: Request) -> Response:
        return json_response(await client.release(request.path_params["id"]))

    @operation(
        "Commit a reservation (the stock ships)",
        response=Reservation,
        errors=[404, 409, *BACKEND_ERRORS],
    )
    async def commit(request: Request) -> Response:
        return json_response(await client.commit(request.path_params["id"]))

    return [  # the busiest first: the router tries them in order
        Route("/stock/{sku}", get_stock, methods=["GET"]),
        Route("/stock", list_stock, methods=["GET"]),
        Route("/reservations", create_reservation, methods=["POST"]),
        Route("/reservations/{id}", get_reservation, methods=["GET"]),
        Route("/reservations/{id}/release", release, methods=["POST"]),
        Route("/reservations/{id}/commit", commit, methods=["POST"]),
    ]
