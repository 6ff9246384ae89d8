"""The HTTP face of the process APIs, mounted at ``/process/v1`` (scopes process:read/write)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.principal import principal_of

from . import cancellation, customers, deals, leads, orders, tickets
from .durable import durable_once
from .idempotency import HEADER, fingerprint, key_of
from .models import (
    CancelledOrder,
    CancelOrderRequest,
    CloseWonResult,
    CreateTicketRequest,
    Customer,
    Customer360,
    LeadCaptured,
    LeadRequest,
    OnboardRequest,
    OrderDetail,
    Page,
    PlacedOrder,
    PlaceOrderRequest,
    Ticket,
    TicketContext,
    input_context,
)
from .ports import StoredResponse
from .service import ProcessApis
from .web import (
    PAGE_QUERY,
    HeaderParam,
    QueryParam,
    json_response,
    location,
    operation,
    query_int,
    read_model,
)

TAGS = ("process",)
REPLAYED = "Idempotent-Replayed"

__all__ = ["open_ticket", "routes", "stored"]


def caller(request: Request) -> str:
    principal = principal_of(request.scope)
    return principal.client_id if principal else "anonymous"


def stored(response: StoredResponse, replayed: bool, request: Request | None = None) -> Response:
    """A kept answer; a ``201`` posted to ``request``'s collection carries its ``Location``."""
    headers = {REPLAYED: "true"} if replayed else {}
    if request is not None and response.status == 201:
        headers.update(location(request, response.body["id"]))
    return json_response(response.body, status=response.status, headers=headers or None)


async def open_ticket(apis: ProcessApis, request: Request) -> tuple[StoredResponse, bool]:
    """Open a ticket once per Idempotency-Key; shared with the support desk's channel."""
    key = key_of(request, "tickets", caller(request))
    body = await read_model(request, CreateTicketRequest, input_context(apis.systems.crm))
    assert key is not None
    return await durable_once(
        apis.saga_log,
        "ticket",
        key,
        fingerprint(body),
        lambda _: tickets.create_ticket(apis, body, key),
        apis.durable,
    )


def routes(apis: ProcessApis) -> list[BaseRoute]:
    @operation(
        "List customers (CRM is the system of record), or find one by email",
        response=Page[Customer],
        query=(*PAGE_QUERY, QueryParam("email", "Exact email lookup.")),
        errors=(400, 401, 403, 422, 502, 503, 504),
        tags=TAGS,
    )
    async def list_customers(request: Request) -> Response:
        limit = query_int(request, "limit", 50)
        page = await customers.list_customers(
            apis, request.query_params.get("cursor"), limit, request.query_params.get("email")
        )
        return json_response(page)

    @operation(
        "Customer 360: CRM, ERP, billing, support and marketing in one view",
        response=Customer360,
        errors=(401, 403, 404, 503),
        tags=TAGS,
        description="Answers 200 with `partial: true` and `unavailable` when a non-critical "
        "backend fails or is slow; 503 when the CRM (system of record) fails.",
    )
    async def customer_360(request: Request) -> Response:
        return json_response(await customers.customer_360(apis, request.path_params["id"]))

    @operation(
        "Onboard a customer into CRM, ERP, billing and the marketing nurture list",
        request=OnboardRequest,
        response=Customer,
        status=201,
        errors=(400, 401, 403, 409, 415, 422, 502, 503, 504),
        tags=TAGS,
        description="A failed step is named in the problem; repeating the same request resumes "
        "an onboarding that stopped half-way (no backend allows deleting a customer).",
    )
    async def onboard(request: Request) -> Response:
        body = await read_model(request, OnboardRequest)
        customer, created = await customers.onboard(apis, body)
        if not created:
            return json_response(customer)
        return json_response(customer, 201, location(request, customer.id))

    @operation(
        "Place an order: reserve stock, ERP sales order, invoice, CRM activity, order.placed",
        request=PlaceOrderRequest,
        response=PlacedOrder,
        status=201,
        headers=(HeaderParam(HEADER, "Unique per order; a retry with it replays.", True),),
        errors=(400, 401, 403, 409, 415, 422, 502, 503, 504),
        tags=TAGS,
    )
    async def place_order(request: Request) -> Response:
        key = key_of(request, "orders", caller(request))
        body = await read_model(request, PlaceOrderRequest, input_context(apis.systems.crm))
        assert key is not None
        response, replayed = await durable_once(
            apis.saga_log,
            "order",
            key,
            fingerprint(body),
            lambda journal: orders.place_order(apis, body, key, journal),
            apis.durable,
        )
        return stored(response, replayed, request)

    @operation(
        "Cancel an order: ERP order, open invoice voided, stock released, CRM activity",
        request=CancelOrderRequest,
        response=CancelledOrder,
        headers=(HeaderParam(HEADER, "Unique per cancellation; a retry with it replays.", True),),
        errors=(400, 401, 403, 404, 409, 415, 422, 502, 503, 504),
        tags=TAGS,
        description="A shipped or invoiced order is 409. A paid invoice is not voided: the "
        "answer has `refund_needed: true`. A failed step is named; repeating the request "
        "with the same key finishes the cancellation without repeating a done step. "
        "Publishes `order.cancelled` once per order.",
    )
    async def cancel_order(request: Request) -> Response:
        key = key_of(request, "orders-cancel", caller(request))
        body = await read_model(request, CancelOrderRequest)
        assert key is not None
        order_id = request.path_params["id"]
        response, replayed = await durable_once(
            apis.saga_log,
            "cancel",
            key,
            fingerprint(body, order_id),
            lambda _: cancellation.cancel_order(apis, order_id, body, key),
            apis.durable,
        )
        return stored(response, replayed)

    @operation(
        "An order with its status in ERP, billing and the warehouse",
        response=OrderDetail,
        errors=(401, 403, 404, 502, 503, 504),
        tags=TAGS,
    )
    async def get_order(request: Request) -> Response:
        return json_response(await orders.get_order(apis, request.path_params["id"]))

    @operation(
        "Close a deal as won: CRM stage, billing invoice, stop nurture, deal.won",
        response=CloseWonResult,
        errors=(401, 403, 404, 409, 422, 502, 503, 504),
        tags=TAGS,
    )
    async def close_won(request: Request) -> Response:
        response, replayed = await deals.close_won(apis, request.path_params["id"])
        return stored(response, replayed)

    @operation(
        "Capture a lead: dedupe, enrich, create in CRM, score, enrol in nurture",
        request=LeadRequest,
        response=LeadCaptured,
        status=201,
        errors=(400, 401, 403, 409, 415, 422, 502, 503, 504),
        tags=TAGS,
    )
    async def capture_lead(request: Request) -> Response:
        body = await read_model(request, LeadRequest)
        captured = await leads.capture_lead(apis, body)
        return json_response(captured, 201, location(request, captured.lead.id))

    @operation(
        "A support ticket with the customer's orders, invoices and payment status",
        response=TicketContext,
        errors=(401, 403, 404, 503),
        tags=TAGS,
    )
    async def ticket_context(request: Request) -> Response:
        return json_response(await tickets.ticket_context(apis, request.path_params["id"]))

    @operation(
        "Open a support ticket for a customer (their helpdesk user is found or created)",
        request=CreateTicketRequest,
        response=Ticket,
        status=201,
        headers=(HeaderParam(HEADER, "Unique per ticket; a retry with it replays.", True),),
        errors=(400, 401, 403, 409, 415, 422, 502, 503, 504),
        tags=TAGS,
        description="Publishes `ticket.created`; an unknown customer is 422.",
    )
    async def create_ticket(request: Request) -> Response:
        response, replayed = await open_ticket(apis, request)
        return stored(response, replayed, request)

    return [
        Route("/customers", list_customers, methods=["GET"]),
        Route("/customers", onboard, methods=["POST"]),
        Route("/customers/{id}", customer_360, methods=["GET"]),
        Route("/orders", place_order, methods=["POST"]),
        Route("/orders/{id}", get_order, methods=["GET"]),
        Route("/orders/{id}/cancel", cancel_order, methods=["POST"]),
        Route("/deals/{id}/close-won", close_won, methods=["POST"]),
        Route("/leads", capture_lead, methods=["POST"]),
        Route("/tickets", create_ticket, methods=["POST"]),
        Route("/tickets/{id}/context", ticket_context, methods=["GET"]),
    ]
