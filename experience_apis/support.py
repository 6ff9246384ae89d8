"""The support desk channel (scope ``experience:support``): the agent's view of a ticket, and
opening one for a customer (the same process operation as ``POST /process/v1/tickets``)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from process_apis import tickets
from process_apis.idempotency import HEADER
from process_apis.models import CreateTicketRequest, Invoice, Order, Ticket, TicketContext
from process_apis.service import ProcessApis
from process_apis.views import REPLAYED, open_ticket
from process_apis.web import HeaderParam, location, operation

from .config import ExperienceConfig
from .responses import masked_json

TAGS = ("experience: support",)

__all__ = ["AgentTicket", "agent_view", "routes"]


class AgentCustomer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    name: str
    email: str
    phone: str | None = None


class AgentOrder(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    status: str
    total: Decimal | None = None
    currency: str
    created_at: str | None = None


class AgentInvoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    status: str
    amount_due: Decimal
    currency: str
    due_date: str | None = None
    order_ref: str | None = None


class AgentTicket(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ticket: Ticket
    customer: AgentCustomer | None = None
    recent_orders: list[AgentOrder] = Field(default_factory=list)
    invoices: list[AgentInvoice] = Field(default_factory=list)
    balance_due: Decimal
    payment_status: str
    partial: bool = False
    unavailable: list[str] = Field(default_factory=list)


def _order(o: Order) -> AgentOrder:
    created = o.created_at.isoformat() if o.created_at else None
    return AgentOrder(
        id=o.id, status=o.status.value, total=o.total, currency=o.currency, created_at=created
    )


def _invoice(i: Invoice) -> AgentInvoice:
    due = i.due_date.isoformat() if i.due_date else None
    return AgentInvoice(
        id=i.id,
        status=i.status.value,
        amount_due=i.amount_due,
        currency=i.currency,
        due_date=due,
        order_ref=i.order_ref,
    )


def agent_view(ctx: TicketContext) -> AgentTicket:
    customer = None
    if ctx.contact is not None:
        c = ctx.contact
        customer = AgentCustomer(
            id=c.id, name=f"{c.first_name} {c.last_name}", email=c.email, phone=c.phone
        )
    elif ctx.requester is not None:
        customer = AgentCustomer(name=ctx.requester.name, email=ctx.requester.email)
    orders = sorted(ctx.orders, key=lambda o: o.id, reverse=True)[:10]
    return AgentTicket(
        ticket=ctx.ticket,
        customer=customer,
        recent_orders=[_order(o) for o in orders],
        invoices=[_invoice(i) for i in ctx.invoices],
        balance_due=ctx.balance_due,
        payment_status=ctx.payment_status,
        partial=ctx.partial,
        unavailable=ctx.unavailable,
    )


def routes(apis: ProcessApis, config: ExperienceConfig) -> list[BaseRoute]:
    policy = config.masking_for("support")

    @operation(
        "A ticket with its customer, recent orders and what they owe",
        response=AgentTicket,
        errors=(401, 403, 404, 503),
        tags=TAGS,
    )
    async def ticket(request: Request) -> Response:
        ctx = await tickets.ticket_context(apis, request.path_params["id"])
        return masked_json(agent_view(ctx), policy)

    @operation(
        "Open a ticket for a customer from the agent desk (publishes ticket.created)",
        request=CreateTicketRequest,
        response=Ticket,
        status=201,
        headers=(HeaderParam(HEADER, "Unique per ticket; a retry with it replays.", True),),
        errors=(400, 401, 403, 409, 415, 422, 502, 503, 504),
        tags=TAGS,
    )
    async def open_one(request: Request) -> Response:
        response, replayed = await open_ticket(apis, request)
        headers = {REPLAYED: "true"} if replayed else {}
        if response.status == 201:
            headers.update(location(request, response.body["id"]))
        return masked_json(response.body, policy, status=response.status, headers=headers or None)

    return [
        Route("/tickets", open_one, methods=["POST"]),
        Route("/tickets/{id}", ticket, methods=["GET"]),
    ]
