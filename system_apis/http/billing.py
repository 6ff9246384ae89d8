"""Canonical HTTP views of the billing system: customers, invoices, payments."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..billing import CURSOR, CUSTOMER_ID, MAX_LIMIT, BillingClient, decimal_to_cents
from ..identity import EmailAddress, PersonName
from ..models import BillingCustomer, Invoice, InvoiceStatus, OrderLine, Page, Payment
from .common import (
    InvalidInput,
    json_response,
    location,
    query_cursor,
    query_enum,
    query_int,
    read_model,
)
from .operation import BACKEND_ERRORS, HeaderParam, QueryParam, operation, page_query

IDEMPOTENCY_KEY = HeaderParam(
    "Idempotency-Key", "1-200 characters; a retry with the same key replays at the vendor."
)


class CustomerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailAddress
    name: PersonName = Field(min_length=1, max_length=256)
    crm_contact_id: str | None = Field(None, max_length=500)
    erp_customer_number: str | None = Field(None, max_length=500)


class InvoiceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: str = Field(min_length=1, max_length=255)
    currency: str = Field("USD", pattern=r"^[A-Za-z]{3}$")
    order_ref: str | None = Field(None, max_length=500)
    lines: list[OrderLine] = Field(min_length=1, max_length=250)


def _idempotency_key(request: Request) -> str | None:
    """The caller's Idempotency-Key, passed down so a retried call replays at the vendor."""
    key = request.headers.get("idempotency-key")
    if key is not None and not 1 <= len(key) <= 200:
        raise InvalidInput("Idempotency-Key must be 1..200 characters", status=400)
    return key


def _page_args(request: Request) -> tuple[str | None, int]:
    return query_cursor(request, CURSOR), query_int(request, "limit", 10, 1, MAX_LIMIT)


def routes(client: BillingClient) -> list[BaseRoute]:
    @operation(
        "List customers, optionally only those with an email",
        response=Page[BillingCustomer],
        query=[QueryParam("email", "Exact email."), *page_query(MAX_LIMIT)],
        errors=[422, *BACKEND_ERRORS],
    )
    async def list_customers(request: Request) -> Response:
        cursor, limit = _page_args(request)
        email = request.query_params.get("email") or None
        return json_response(await client.customers_page(cursor, limit, email=email))

    @operation("A customer", response=BillingCustomer, errors=[404, *BACKEND_ERRORS])
    async def get_customer(request: Request) -> Response:
        return json_response(await client.get_customer(request.path_params["id"]))

    @operation(
        "Create a customer",
        request=CustomerIn,
        response=BillingCustomer,
        status=201,
        headers=[IDEMPOTENCY_KEY],
        errors=[409, *BACKEND_ERRORS],
    )
    async def create_customer(request: Request) -> Response:
        body = await read_model(request, CustomerIn)
        customer = await client.create_customer(
            body.email,
            body.name,
            crm_contact_id=body.crm_contact_id,
            erp_customer_number=body.erp_customer_number,
            idempotency_key=_idempotency_key(request),
        )
        return json_response(customer, 201, location(request, customer.id))

    @operation(
        "List invoices",
        response=Page[Invoice],
        query=[
            QueryParam("customer", "Only this customer's invoices."),
            QueryParam("status", "Only invoices in this status.", enum=tuple(InvoiceStatus)),
            *page_query(MAX_LIMIT),
        ],
        errors=[422, *BACKEND_ERRORS],
    )
    async def list_invoices(request: Request) -> Response:
        cursor, limit = _page_args(request)
        status = query_enum(request, "status", InvoiceStatus)
        customer = request.query_params.get("customer") or None
        if customer is not None and not CUSTOMER_ID.matches(customer):
            raise InvalidInput(
                "query parameter customer is not a billing customer id",
                [{"path": "query/customer", "message": "not a customer id", "type": "id"}],
                status=400,
            )
        page = await client.invoices_page(cursor, limit, customer_id=customer, status=status)
        return json_response(page)

    @operation("An invoice", response=Invoice, errors=[404, *BACKEND_ERRORS])
    async def get_invoice(request: Request) -> Response:
        return json_response(await client.get_invoice(request.path_params["id"]))

    @operation(
        "Create and finalise an invoice",
        request=InvoiceIn,
        response=Invoice,
        status=201,
        headers=[IDEMPOTENCY_KEY],
        errors=[404, 409, *BACKEND_ERRORS],
    )
    async def create_invoice(request: Request) -> Response:
        body = await read_model(request, InvoiceIn)
        key = _idempotency_key(request)
        for i, line in enumerate(body.lines):
            problem = "required" if line.unit_price is None else None
            if line.unit_price is not None:
                try:
                    decimal_to_cents(line.unit_price, body.currency)
                except ValueError as exc:
                    problem = str(exc)
            if problem:
                raise InvalidInput(
                    "every line needs a unit_price in whole minor units",
                    [{"path": f"lines/{i}/unit_price", "message": problem, "type": "value"}],
                )
        lines: list[OrderLine | Decimal] = list(body.lines)
        invoice = await client.create_invoice(
            body.customer_id, lines, body.currency.upper(), body.order_ref, key
        )
        return json_response(invoice, 201, location(request, invoice.id))

    @operation(
        "Void an open invoice",
        response=Invoice,
        headers=[IDEMPOTENCY_KEY],
        errors=[400, 404, 409, *BACKEND_ERRORS],
    )
    async def void_invoice(request: Request) -> Response:
        invoice = await client.void_invoice(
            request.path_params["id"], idempotency_key=_idempotency_key(request)
        )
        return json_response(invoice)

    @operation(
        "A customer's payments",
        response=Page[Payment],
        query=page_query(MAX_LIMIT),
        errors=[404, 422, *BACKEND_ERRORS],
    )
    async def customer_payments(request: Request) -> Response:
        cursor, limit = _page_args(request)
        return json_response(await client.payments_page(request.path_params["id"], cursor, limit))

    return [
        Route("/customers", list_customers, methods=["GET"]),
        Route("/customers", create_customer, methods=["POST"]),
        Route("/customers/{id}", get_customer, methods=["GET"]),
        Route("/customers/{id}/payments", customer_payments, methods=["GET"]),
        Route("/invoices", list_invoices, methods=["GET"]),
        Route("/invoices", create_invoice, methods=["POST"]),
        Route("/invoices/{id}", get_invoice, methods=["GET"]),
        Route("/invoices/{id}/void", void_invoice, methods=["POST"]),
    ]
