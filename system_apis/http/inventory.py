"""Canonical JSON views of the warehouse system, mounted at ``/system/v1/inventory``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..inventory import MAX_PER_PAGE, InventoryClient
from ..models import OrderLine
from .common import InvalidInput, json_response, query_int, read_model


class ReservationRequest(BaseModel):
    """What a caller sends to reserve stock."""

    model_config = ConfigDict(extra="forbid")

    reference: str = Field(min_length=1, max_length=200)
    lines: list[OrderLine] = Field(min_length=1, max_length=200)
    ttl_s: int = Field(900, ge=1, le=7 * 24 * 3600)


def routes(client: InventoryClient) -> list[BaseRoute]:
    async def list_stock(request: Request) -> Response:
        cursor = request.query_params.get("cursor")
        if cursor is not None and not cursor.isdigit():
            raise InvalidInput(
                "invalid cursor",
                [{"path": "query/cursor", "message": "not a cursor", "type": "cursor"}],
            )
        limit = query_int(request, "limit", 50, hi=MAX_PER_PAGE)
        page = await client.stock_page(cursor, limit)
        return json_response({"items": page.items, "next_cursor": page.next_cursor})

    async def get_stock(request: Request) -> Response:
        return json_response(await client.get_stock(request.path_params["sku"]))

    async def create_reservation(request: Request) -> Response:
        body = await read_model(request, ReservationRequest)
        reservation = await client.reserve(
            body.lines,
            body.reference,
            body.ttl_s,
            idempotency_key=request.headers.get("Idempotency-Key"),
        )
        return json_response(reservation, status=201)

    async def get_reservation(request: Request) -> Response:
        return json_response(await client.get_reservation(request.path_params["id"]))

    async def release(request: Request) -> Response:
        return json_response(await client.release(request.path_params["id"]))

    async def commit(request: Request) -> Response:
        return json_response(await client.commit(request.path_params["id"]))

    return [
        Route("/stock", list_stock, methods=["GET"]),
        Route("/stock/{sku}", get_stock, methods=["GET"]),
        Route("/reservations", create_reservation, methods=["POST"]),
        Route("/reservations/{id}", get_reservation, methods=["GET"]),
        Route("/reservations/{id}/release", release, methods=["POST"]),
        Route("/reservations/{id}/commit", commit, methods=["POST"]),
    ]
