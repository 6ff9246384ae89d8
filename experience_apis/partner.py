"""The partner channel (scope ``partner``): a partner's own orders and the catalogue.

A partner's client id is its sales channel in the ERP, so ownership is the order's channel.
Another partner's order answers 404 exactly like a missing one (no probing for ids); buyers'
PII is masked by the channel's policy; internal ids (ERP customer numbers, CRM ids) and costs
are never part of these shapes in the first place.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.principal import principal_of
from process_apis import catalog, orders
from process_apis.errors import NotFound
from process_apis.models import ErpCustomer, Order, Page
from process_apis.service import ProcessApis
from process_apis.web import operation, page_query, query_int

from .config import ExperienceConfig
from .responses import masked_json

TAGS = ("experience: partner",)
MAX_ORDERS_PAGE = 100

__all__ = ["PartnerOrder", "partner_id", "routes"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PartnerLine(Strict):
    sku: str
    quantity: int
    unit_price: Decimal | None = None


class PartnerOrderSummary(Strict):
    id: str
    status: str
    currency: str
    total: Decimal | None = None
    created_at: datetime | None = None
    line_count: int


class Buyer(Strict):
    name: str
    email: str | None = None
    phone: str | None = None
    city: str | None = None
    country: str | None = None


class PartnerOrder(Strict):
    id: str
    status: str
    currency: str
    total: Decimal | None = None
    created_at: datetime | None = None
    lines: list[PartnerLine] = Field(default_factory=list)
    buyer: Buyer | None = None


class CatalogItem(Strict):
    sku: str
    name: str | None = None
    available: int
    unit_price: Decimal | None = None


def partner_id(request: Request) -> str:
    """The caller's partner id (its OAuth client id); the scope check already ran."""
    principal = principal_of(request.scope)
    if principal is None:  # unreachable behind RequireScopes; refuse rather than assume
        raise NotFound("partner", "anonymous")
    return principal.client_id


def summary(order: Order) -> PartnerOrderSummary:
    return PartnerOrderSummary(
        id=order.id,
        status=order.status.value,
        currency=order.currency,
        total=order.total,
        created_at=order.created_at,
        line_count=len(order.lines),
    )


def detail(order: Order, buyer: ErpCustomer | None) -> PartnerOrder:
    return PartnerOrder(
        id=order.id,
        status=order.status.value,
        currency=order.currency,
        total=order.total,
        created_at=order.created_at,
        lines=[
            PartnerLine(sku=ln.sku, quantity=ln.quantity, unit_price=ln.unit_price)
            for ln in order.lines
        ],
        buyer=Buyer(
            name=buyer.name,
            email=buyer.email,
            phone=buyer.phone,
            city=buyer.city,
            country=buyer.country,
        )
        if buyer
        else None,
    )


def routes(apis: ProcessApis, config: ExperienceConfig) -> list[BaseRoute]:
    policy = config.masking_for("partner")

    @operation(
        "The calling partner's orders",
        response=Page[PartnerOrderSummary],
        query=page_query(MAX_ORDERS_PAGE),
        errors=(400, 401, 403, 422, 429, 503),
        tags=TAGS,
    )
    async def list_orders(request: Request) -> Response:
        page = await orders.list_orders(
            apis,
            request.query_params.get("cursor"),
            query_int(request, "limit", 25, hi=MAX_ORDERS_PAGE),
            channel=partner_id(request),
        )
        body = Page[PartnerOrderSummary](
            items=[summary(o) for o in page.items], next_cursor=page.next_cursor
        )
        return masked_json(body, policy)

    @operation(
        "One of the calling partner's orders (another partner's answers 404)",
        response=PartnerOrder,
        errors=(401, 403, 404, 429, 503),
        tags=TAGS,
    )
    async def get_order(request: Request) -> Response:
        found = await orders.get_order(apis, request.path_params["id"], channel=partner_id(request))
        buyer = await orders.buyer(apis, found.order)
        return masked_json(detail(found.order, buyer), policy)

    @operation(
        "A catalogue item: price and availability",
        response=CatalogItem,
        errors=(401, 403, 404, 429, 503),
        tags=TAGS,
    )
    async def catalog_item(request: Request) -> Response:
        level = await catalog.catalog_item(apis, request.path_params["sku"])
        item = CatalogItem(
            sku=level.sku, name=level.name, available=level.available, unit_price=level.unit_price
        )
        return masked_json(item, {})  # product data: nothing in it is about a person

    return [
        Route("/orders", list_orders, methods=["GET"]),
        Route("/orders/{id}", get_order, methods=["GET"]),
        Route("/catalog/{sku}", catalog_item, methods=["GET"]),
    ]
