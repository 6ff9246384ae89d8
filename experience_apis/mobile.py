"""The mobile channel (scope ``experience:mobile``): a small customer card, cacheable.

Mobile clients pay for every byte and round trip: ``?fields=`` trims the card, and a strong
ETag lets a client revalidate with ``If-None-Match`` and get an empty 304 when nothing changed.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from process_apis import customers
from process_apis.models import Customer360
from process_apis.service import ProcessApis
from process_apis.web import HeaderParam, InvalidInput, QueryParam, operation

from .config import ExperienceConfig
from .masking import mask_payload
from .responses import etag_of, not_modified, render

TAGS = ("experience: mobile",)

__all__ = ["MobileCustomer", "card", "routes"]


class MobileCustomer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    email: str
    phone: str | None = None
    company: str | None = None
    open_orders: int | None = None
    balance_due: Decimal | None = None
    payment_status: str | None = None
    open_tickets: int | None = None
    lead_score: int | None = None
    partial: bool = False


FIELDS: tuple[str, ...] = tuple(MobileCustomer.model_fields)


def card(view: Customer360) -> MobileCustomer:
    """The 360 boiled down to what fits on a phone screen."""
    return MobileCustomer(
        id=view.id,
        name=f"{view.contact.first_name} {view.contact.last_name}",
        email=view.contact.email,
        phone=view.contact.phone,
        company=view.account.name if view.account else None,
        open_orders=len(view.erp.open_orders) if view.erp else None,
        balance_due=view.billing.balance_due if view.billing else None,
        payment_status=view.billing.payment_status if view.billing else None,
        open_tickets=view.support.open_tickets if view.support else None,
        lead_score=view.marketing.lead_score if view.marketing else None,
        partial=view.partial,
    )


def selected_fields(request: Request) -> list[str] | None:
    raw = request.query_params.get("fields")
    if raw is None:
        return None
    wanted = [f.strip() for f in raw.split(",") if f.strip()]
    unknown = [f for f in wanted if f not in FIELDS]
    if unknown or not wanted:
        raise InvalidInput(
            "unknown field(s) in ?fields=" if unknown else "?fields= names no field",
            [
                {
                    "path": "query/fields",
                    "message": f"unknown field {f[:40]!r}; known: " + ",".join(FIELDS),
                    "type": "enum",
                }
                for f in unknown
            ]
            or [{"path": "query/fields", "message": "empty", "type": "missing"}],
            status=400,
        )
    return wanted


def routes(apis: ProcessApis, config: ExperienceConfig) -> list[BaseRoute]:
    policy = config.masking_for("mobile")
    max_age = config.mobile_cache_max_age_s

    @operation(
        "A small customer card; ?fields= selects, ETag/If-None-Match revalidates (304)",
        response=MobileCustomer,
        query=(QueryParam("fields", "Comma-separated fields: " + ", ".join(FIELDS)),),
        headers=(HeaderParam("If-None-Match", "An ETag from an earlier answer."),),
        errors=(401, 403, 404, 422, 503),
        tags=TAGS,
        extra_responses={304: "Not modified (the ETag still matches)"},
    )
    async def customer(request: Request) -> Response:
        fields = selected_fields(request)
        view = await customers.customer_360(apis, request.path_params["id"])
        data = card(view).model_dump(mode="json")
        if fields is not None:
            data = {k: data[k] for k in fields}
        body = render(mask_payload(data, policy))
        etag = etag_of(body)
        headers = {
            "ETag": etag,
            "Cache-Control": f"private, max-age={max_age}",
            "Vary": "Authorization",
        }
        if not_modified(request, etag):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/json", headers=headers)

    return [Route("/customers/{id}", customer, methods=["GET"])]
