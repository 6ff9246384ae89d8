"""Canonical JSON views of the marketing platform, mounted at ``/system/v1/marketing``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..errors import BackendNotFound
from ..identity import EmailAddress, PersonName
from ..marketing import CURSOR, MAX_LIMIT, ListMembershipChange, MarketingClient, template_id
from ..models import EmailSend, Engagement, MarketingContact, MarketingList, Page
from .common import InvalidInput, json_response, location, query_cursor, query_int, read_model
from .operation import BACKEND_ERRORS, QueryParam, operation, page_query


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContactCreate(_Body):
    email: EmailAddress
    first_name: PersonName = Field(min_length=1, max_length=100)
    last_name: PersonName = Field(min_length=1, max_length=100)
    crm_contact_id: str | None = Field(None, max_length=64)
    lifecycle_stage: str | None = Field(None, max_length=64)


class ListMembersAdd(_Body):
    contact_ids: list[str] = Field(min_length=1, max_length=500)


class EmailRequest(_Body):
    contact_id: str = Field(min_length=1, max_length=64)
    template: str = Field(min_length=1, max_length=100)


def routes(client: MarketingClient) -> list[BaseRoute]:
    @operation(
        "List contacts, or look one up by email",
        response=Page[MarketingContact],
        query=[
            QueryParam("email", "Exact email: answers at most one contact."),
            *page_query(MAX_LIMIT),
        ],
        errors=[422, *BACKEND_ERRORS],
    )
    async def list_contacts(request: Request) -> Response:
        email = request.query_params.get("email")
        if email is not None:
            found = await client.find_contact_by_email(email)
            return json_response({"items": [found] if found else [], "next_cursor": None})
        limit = query_int(request, "limit", 50, hi=MAX_LIMIT)
        page = await client.contacts_page(query_cursor(request, CURSOR), limit)
        return json_response({"items": page.items, "next_cursor": page.next_cursor})

    @operation("A contact", response=MarketingContact, errors=[404, *BACKEND_ERRORS])
    async def get_contact(request: Request) -> Response:
        return json_response(await client.get_contact(request.path_params["id"]))

    @operation(
        "Create a contact",
        request=ContactCreate,
        response=MarketingContact,
        status=201,
        errors=[409, *BACKEND_ERRORS],
    )
    async def create_contact(request: Request) -> Response:
        body = await read_model(request, ContactCreate)
        contact = await client.create_contact(
            body.email,
            body.first_name,
            body.last_name,
            crm_contact_id=body.crm_contact_id,
            lifecycle_stage=body.lifecycle_stage,
        )
        return json_response(contact, 201, location(request, contact.id))

    @operation("A contact's email engagement", response=Engagement, errors=[404, *BACKEND_ERRORS])
    async def engagement(request: Request) -> Response:
        contact = await client.get_contact(request.path_params["id"])
        return json_response(await client.engagement(contact.email, contact.id))

    @operation("The marketing lists", response=Page[MarketingList], errors=[*BACKEND_ERRORS])
    async def lists(request: Request) -> Response:
        return json_response({"items": await client.lists(), "next_cursor": None})

    @operation(
        "Add contacts to a list",
        request=ListMembersAdd,
        response=ListMembershipChange,
        errors=[404, *BACKEND_ERRORS],
    )
    async def add_members(request: Request) -> Response:
        body = await read_model(request, ListMembersAdd)
        return json_response(await client.add_to_list(request.path_params["id"], body.contact_ids))

    @operation(
        "Remove a contact from a list",
        response=ListMembershipChange,
        errors=[404, *BACKEND_ERRORS],
    )
    async def remove_member(request: Request) -> Response:
        list_id, contact_id = request.path_params["id"], request.path_params["contact_id"]
        change = await client.remove_from_list(list_id, [contact_id])
        if contact_id not in change.updated:
            raise BackendNotFound(client.name, f"contact {contact_id} is not in list {list_id}")
        return json_response(change)

    @operation(
        "Send a template email to a contact",
        request=EmailRequest,
        response=EmailSend,
        status=202,
        errors=[404, *BACKEND_ERRORS],
    )
    async def send_email(request: Request) -> Response:
        body = await read_model(request, EmailRequest)
        try:
            template_id(body.template)
        except ValueError as exc:
            raise InvalidInput(
                str(exc), [{"path": "template", "message": str(exc), "type": "value_error"}]
            ) from exc
        return json_response(await client.send_email(body.contact_id, body.template), status=202)

    return [
        Route("/contacts", list_contacts, methods=["GET"]),
        Route("/contacts", create_contact, methods=["POST"]),
        Route("/contacts/{id}", get_contact, methods=["GET"]),
        Route("/contacts/{id}/engagement", engagement, methods=["GET"]),
        Route("/lists", lists, methods=["GET"]),
        Route("/lists/{id}/members", add_members, methods=["POST"]),
        Route("/lists/{id}/members/{contact_id}", remove_member, methods=["DELETE"]),
        Route("/emails", send_email, methods=["POST"]),
    ]
