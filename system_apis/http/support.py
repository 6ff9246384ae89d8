"""Canonical HTTP views of the helpdesk: users, tickets and their comments."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..identity import EmailAddress, PersonName
from ..models import Page, SupportUser, Ticket, TicketComment, TicketPriority, TicketStatus
from ..support import CURSOR, MAX_PAGE, USER_ID, SupportClient
from .common import InvalidInput, json_response, location, query_cursor, query_int, read_model
from .operation import BACKEND_ERRORS, HeaderParam, QueryParam, operation, page_query

IDEMPOTENCY_KEY = HeaderParam("Idempotency-Key", "A retry with the same key creates nothing new.")


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailAddress
    name: PersonName = Field(min_length=1, max_length=255)
    crm_contact_id: str | None = Field(None, max_length=255)


class TicketIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requester_id: str = Field(pattern=f"^{USER_ID.pattern}$")
    subject: str = Field(min_length=1, max_length=255)
    body: str = Field(min_length=1, max_length=65_000)
    priority: TicketPriority | None = None
    tags: list[str] = Field(default_factory=list, max_length=50)


class TicketStatusIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: TicketStatus


def _page_args(request: Request) -> tuple[str | None, int]:
    return query_cursor(request, CURSOR), query_int(request, "limit", 25, 1, MAX_PAGE)


def routes(client: SupportClient) -> list[BaseRoute]:
    @operation(
        "Look a helpdesk user up by email",
        response=Page[SupportUser],
        query=[QueryParam("email", "Exact email of the user.", required=True)],
        errors=[422, *BACKEND_ERRORS],
    )
    async def find_user(request: Request) -> Response:
        email = request.query_params.get("email")
        if not email:
            raise InvalidInput(
                "query parameter email is required",
                [{"path": "query/email", "message": "required", "type": "missing"}],
            )
        user = await client.find_user_by_email(email)
        return json_response({"items": [user] if user else [], "next_cursor": None})

    @operation("A helpdesk user", response=SupportUser, errors=[404, *BACKEND_ERRORS])
    async def get_user(request: Request) -> Response:
        return json_response(await client.get_user(request.path_params["id"]))

    @operation(
        "Create a helpdesk user",
        request=UserIn,
        response=SupportUser,
        status=201,
        headers=[IDEMPOTENCY_KEY],
        errors=[409, *BACKEND_ERRORS],
    )
    async def create_user(request: Request) -> Response:
        body = await read_model(request, UserIn)
        user = await client.create_user(
            body.email,
            body.name,
            body.crm_contact_id,
            idempotency_key=request.headers.get("idempotency-key"),
        )
        return json_response(user, 201, location(request, user.id))

    @operation(
        "The tickets a user requested",
        response=Page[Ticket],
        query=page_query(MAX_PAGE),
        errors=[404, 422, *BACKEND_ERRORS],
    )
    async def user_tickets(request: Request) -> Response:
        cursor, limit = _page_args(request)
        page = await client.user_tickets_page(request.path_params["id"], cursor, limit)
        return json_response(page)

    @operation(
        "List tickets",
        response=Page[Ticket],
        query=page_query(MAX_PAGE),
        errors=[422, *BACKEND_ERRORS],
    )
    async def list_tickets(request: Request) -> Response:
        cursor, limit = _page_args(request)
        return json_response(await client.tickets_page(cursor, limit))

    @operation("A ticket", response=Ticket, errors=[404, *BACKEND_ERRORS])
    async def get_ticket(request: Request) -> Response:
        return json_response(await client.get_ticket(request.path_params["id"]))

    @operation(
        "Open a ticket",
        request=TicketIn,
        response=Ticket,
        status=201,
        headers=[IDEMPOTENCY_KEY],
        errors=[404, *BACKEND_ERRORS],
    )
    async def create_ticket(request: Request) -> Response:
        body = await read_model(request, TicketIn)
        ticket = await client.create_ticket(
            body.requester_id,
            body.subject,
            body.body,
            body.priority,
            body.tags,
            idempotency_key=request.headers.get("idempotency-key"),
        )
        return json_response(ticket, 201, location(request, ticket.id))

    @operation(
        "Change a ticket's status",
        request=TicketStatusIn,
        response=Ticket,
        errors=[404, *BACKEND_ERRORS],
    )
    async def set_status(request: Request) -> Response:
        body = await read_model(request, TicketStatusIn)
        return json_response(await client.set_ticket_status(request.path_params["id"], body.status))

    @operation(
        "A ticket's comments",
        response=Page[TicketComment],
        query=page_query(MAX_PAGE),
        errors=[404, 422, *BACKEND_ERRORS],
    )
    async def ticket_comments(request: Request) -> Response:
        cursor, limit = _page_args(request)
        page = await client.comments_page(request.path_params["id"], cursor, limit)
        return json_response(page)

    return [
        Route("/users", find_user, methods=["GET"]),
        Route("/users", create_user, methods=["POST"]),
        Route("/users/{id}", get_user, methods=["GET"]),
        Route("/users/{id}/tickets", user_tickets, methods=["GET"]),
        Route("/tickets", list_tickets, methods=["GET"]),
        Route("/tickets", create_ticket, methods=["POST"]),
        Route("/tickets/{id}", get_ticket, methods=["GET"]),
        Route("/tickets/{id}", set_status, methods=["PATCH"]),
        Route("/tickets/{id}/comments", ticket_comments, methods=["GET"]),
    ]
