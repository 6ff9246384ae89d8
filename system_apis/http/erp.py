"""Canonical JSON views of the ERP, mounted by the gateway at ``/system/v1/erp``."""

from __future__ import annotations

import re

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..erp import CURSOR, CUSTOMER_NUMBER, ErpClient
from ..models import Canonical, ErpCustomer, ErpCustomerCreate, Invoice, Order, OrderLine, Page
from .common import InvalidInput, json_response, location, query_cursor, query_int, read_model
from .operation import BACKEND_ERRORS, PAGE_QUERY, QueryParam, operation

DEFAULT_LIMIT = 50
_CHANNEL = re.compile(r"[A-Za-z0-9_.:-]{1,48}", re.ASCII)
"""A sales channel as orders carry it (``web``, ``partner-acme``): a filter value, ASCII."""


class OrderCreate(Canonical):
    customer_number: str = Field(pattern=r"^[0-9]{1,10}$")
    lines: list[OrderLine] = Field(min_length=1)
    channel: str = Field(min_length=1, max_length=48)
    reference: str | None = Field(None, max_length=35)


class OrderCancel(Canonical):
    reason: str = Field(min_length=1, max_length=120)


def _invalid(name: str, message: str) -> InvalidInput:
    return InvalidInput(
        f"query parameter {name} is invalid",
        [{"path": f"query/{name}", "message": message, "type": "value_error"}],
        status=400,
    )


def routes(client: ErpClient) -> list[BaseRoute]:
    @operation(
        "List customers, or look one up by email",
        response=Page[ErpCustomer],
        query=[QueryParam("email", "Exact email: answers at most one customer."), *PAGE_QUERY],
        errors=[422, *BACKEND_ERRORS],
    )
    async def list_customers(request: Request) -> Response:
        email = request.query_params.get("email")
        if email is not None:
            found = await client.find_customer_by_email(email)
            return json_response({"items": [found] if found else [], "next_cursor": None})
        limit = query_int(request, "limit", DEFAULT_LIMIT)
        page = await client.customers_page(query_cursor(request, CURSOR), limit)
        return json_response(page)

    @operation("A customer by number", response=ErpCustomer, errors=[404, *BACKEND_ERRORS])
    async def get_customer(request: Request) -> Response:
        return json_response(await client.get_customer(request.path_params["number"]))

    @operation(
        "Create a customer (the ERP assigns its number)",
        request=ErpCustomerCreate,
        response=ErpCustomer,
        status=201,
        errors=[409, *BACKEND_ERRORS],
    )
    async def create_customer(request: Request) -> Response:
        new = await read_model(request, ErpCustomerCreate)
        customer = await client.create_customer(new)
        return json_response(customer, 201, location(request, customer.customer_number))

    @operation(
        "List sales orders",
        response=Page[Order],
        query=[
            QueryParam("customer", "Only this customer's orders (up to 10 digits)."),
            QueryParam("channel", "Only orders from this sales channel."),
            *PAGE_QUERY,
        ],
        errors=[422, *BACKEND_ERRORS],
    )
    async def list_orders(request: Request) -> Response:
        limit = query_int(request, "limit", DEFAULT_LIMIT)
        customer = request.query_params.get("customer") or None
        if customer is not None and not CUSTOMER_NUMBER.matches(customer):
            raise _invalid("customer", "a customer number has up to 10 digits")
        channel = request.query_params.get("channel") or None
        if channel is not None and not _CHANNEL.fullmatch(channel):
            raise _invalid("channel", "not a sales channel")
        page = await client.orders_page(
            query_cursor(request, CURSOR), limit, customer_number=customer, channel=channel
        )
        return json_response(page)

    @operation("A sales order by number", response=Order, errors=[404, *BACKEND_ERRORS])
    async def get_order(request: Request) -> Response:
        return json_response(await client.get_order(request.path_params["number"]))

    @operation(
        "Create a sales order",
        request=OrderCreate,
        response=Order,
        status=201,
        errors=[404, 409, *BACKEND_ERRORS],
    )
    async def create_order(request: Request) -> Response:
        new = await read_model(request, OrderCreate)
        order = await client.create_order(
            new.customer_number, new.lines, new.channel, new.reference
        )
        return json_response(order, 201, location(request, order.id))

    @operation(
        "Cancel a sales order",
        request=OrderCancel,
        response=Order,
        errors=[404, 409, *BACKEND_ERRORS],
    )
    async def cancel_order(request: Request) -> Response:
        cancel = await read_model(request, OrderCancel)
        return json_response(
            await client.cancel_order(request.path_params["number"], cancel.reason)
        )

    @operation("A customer's invoices", response=Page[Invoice], errors=[404, *BACKEND_ERRORS])
    async def list_invoices(request: Request) -> Response:
        invoices = [i async for i in client.iter_invoices(request.path_params["number"])]
        return json_response({"items": invoices, "next_cursor": None})

    return [
        Route("/customers", list_customers, methods=["GET"]),
        Route("/customers", create_customer, methods=["POST"]),
        Route("/customers/{number}", get_customer, methods=["GET"]),
        Route("/customers/{number}/invoices", list_invoices, methods=["GET"]),
        Route("/orders", list_orders, methods=["GET"]),
        Route("/orders", create_order, methods=["POST"]),
        Route("/orders/{number}", get_order, methods=["GET"]),
        Route("/orders/{number}/cancel", cancel_order, methods=["POST"]),
    ]
