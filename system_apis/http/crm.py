"""Canonical JSON views of the CRM, mounted by the gateway at ``/system/v1/crm``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..models import (
    Account,
    Activity,
    Canonical,
    Contact,
    ContactCreate,
    Lead,
    Opportunity,
    OpportunityStage,
    Page,
)
from ..roles import Crm as CrmRole
from .common import InvalidInput, json_response, location, query_cursor, query_int, read_model
from .operation import BACKEND_ERRORS, PAGE_QUERY, QueryParam, operation

DEFAULT_LIMIT = 50


class StageChange(Canonical):
    stage: OpportunityStage


def routes(client: CrmRole) -> list[BaseRoute]:
    @operation(
        "List contacts, or look one up by email",
        response=Page[Contact],
        query=[QueryParam("email", "Exact email: answers at most one contact."), *PAGE_QUERY],
        errors=[422, *BACKEND_ERRORS],
    )
    async def list_contacts(request: Request) -> Response:
        email = request.query_params.get("email")
        if email is not None:
            found = await client.find_contact_by_email(email)
            return json_response({"items": [found] if found else [], "next_cursor": None})
        limit = query_int(request, "limit", DEFAULT_LIMIT)
        page = await client.contacts_page(query_cursor(request, client.cursor_syntax), limit)
        return json_response(page)

    @operation("A contact", response=Contact, errors=[404, *BACKEND_ERRORS])
    async def get_contact(request: Request) -> Response:
        return json_response(await client.get_contact(request.path_params["id"]))

    @operation(
        "Create a contact",
        request=ContactCreate,
        response=Contact,
        status=201,
        errors=[409, *BACKEND_ERRORS],
    )
    async def create_contact(request: Request) -> Response:
        new = await read_model(request, ContactCreate)
        contact = await client.create_contact(new)
        return json_response(contact, 201, location(request, contact.id))

    @operation("An account", response=Account, errors=[404, *BACKEND_ERRORS])
    async def get_account(request: Request) -> Response:
        return json_response(await client.get_account(request.path_params["id"]))

    @operation("An opportunity", response=Opportunity, errors=[404, *BACKEND_ERRORS])
    async def get_opportunity(request: Request) -> Response:
        return json_response(await client.get_opportunity(request.path_params["id"]))

    @operation(
        "Move an opportunity to another stage",
        request=StageChange,
        response=Opportunity,
        errors=[404, *BACKEND_ERRORS],
    )
    async def set_stage(request: Request) -> Response:
        change = await read_model(request, StageChange)
        return json_response(
            await client.set_opportunity_stage(request.path_params["id"], change.stage)
        )

    @operation(
        "Log an activity (a task) against a record",
        request=Activity,
        response=Activity,
        status=201,
        errors=[404, *BACKEND_ERRORS],
    )
    async def create_task(request: Request) -> Response:
        activity = await read_model(request, Activity)
        task = await client.create_task(activity)
        return json_response(task, 201, location(request, task.id))

    @operation(
        "Look a lead up by email",
        response=Page[Lead],
        query=[QueryParam("email", "Exact email of the lead.", required=True)],
        errors=[422, *BACKEND_ERRORS],
    )
    async def find_leads(request: Request) -> Response:
        email = request.query_params.get("email")
        if not email:
            raise InvalidInput(
                "query parameter email is required",
                [{"path": "query/email", "message": "required", "type": "missing"}],
            )
        found = await client.find_lead_by_email(email)
        return json_response({"items": [found] if found else [], "next_cursor": None})

    @operation(
        "Create a lead",
        request=Lead,
        response=Lead,
        status=201,
        errors=[409, *BACKEND_ERRORS],
    )
    async def create_lead(request: Request) -> Response:
        lead = await read_model(request, Lead)
        created = await client.create_lead(lead)
        return json_response(created, 201, location(request, created.id))

    return [
        Route("/contacts", list_contacts, methods=["GET"]),
        Route("/contacts", create_contact, methods=["POST"]),
        Route("/contacts/{id}", get_contact, methods=["GET"]),
        Route("/accounts/{id}", get_account, methods=["GET"]),
        Route("/opportunities/{id}", get_opportunity, methods=["GET"]),
        Route("/opportunities/{id}/stage", set_stage, methods=["POST"]),
        Route("/tasks", create_task, methods=["POST"]),
        Route("/leads", find_leads, methods=["GET"]),
        Route("/leads", create_lead, methods=["POST"]),
    ]
