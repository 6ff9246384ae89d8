"""The web dashboard channel (scope ``experience:web``): the full customer view."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from process_apis import customers
from process_apis.models import Customer, Customer360, Page
from process_apis.service import ProcessApis
from process_apis.web import PAGE_QUERY, QueryParam, operation, query_int

from .config import ExperienceConfig
from .responses import masked_json

TAGS = ("experience: web",)

__all__ = ["routes"]


def routes(apis: ProcessApis, config: ExperienceConfig) -> list[BaseRoute]:
    policy = config.masking_for("web")

    @operation(
        "Customers for the dashboard's list (or one by email)",
        response=Page[Customer],
        query=(*PAGE_QUERY, QueryParam("email", "Exact email lookup.")),
        errors=(400, 401, 403, 422, 503),
        tags=TAGS,
    )
    async def list_customers(request: Request) -> Response:
        page = await customers.list_customers(
            apis,
            request.query_params.get("cursor"),
            query_int(request, "limit", 25),
            request.query_params.get("email"),
        )
        return masked_json(page, policy)

    @operation(
        "The dashboard's customer view: every system, partial when one is down",
        response=Customer360,
        errors=(401, 403, 404, 503),
        tags=TAGS,
    )
    async def customer(request: Request) -> Response:
        return masked_json(await customers.customer_360(apis, request.path_params["id"]), policy)

    return [
        Route("/customers", list_customers, methods=["GET"]),
        Route("/customers/{id}", customer, methods=["GET"]),
    ]
