"""Inbound webhooks: ``POST /webhooks/{source}``, public, authenticated by the body's signature.

Order of checks, cheapest and safest first: a known source (else 404), a body within the
source's size limit (else 413, read no further), a valid signature within the timestamp
tolerance (else 401, nothing enqueued), then the event id is remembered and the domain event
appended to the outbox in one transaction, so a replayed or duplicated delivery is acknowledged
but never enqueued twice.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import orjson
from opentelemetry import context as otel_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import Response

from gateway.problems import problem_response
from process_apis.ports import DomainEvent
from system_apis.billing import WebhookSignatureError, invoice_from_vendor, verify_webhook_signature
from system_apis.errors import BadBackendData
from system_apis.http.common import json_response
from system_apis.http.operation import HeaderParam, operation

from .config import InboundSourceConfig

_LENGTH = re.compile(r"[0-9]{1,15}", re.ASCII)

log = logging.getLogger("trellis.events")

SIGNATURE_HEADERS: Mapping[str, str] = {"stripe": "stripe-signature"}


class InboundStore(Protocol):
    async def accept_inbound(
        self, source: str, vendor_event_id: str, remember_s: int, event: DomainEvent | None
    ) -> bool: ...


class WebhookReceipt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    received: bool = True
    duplicate: bool = False
    event_id: str | None = None
    """The domain event enqueued (None for duplicates and vendor types we do not map)."""


class TooLarge(Exception):
    pass


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, refusing (``TooLarge``) as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and _LENGTH.fullmatch(declared) and int(declared) > limit:
        raise TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _traceparent() -> tuple[str | None, str | None]:
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, otel_context.get_current())
    return carrier.get("traceparent"), carrier.get("tracestate")


def stripe_domain_event(source: str, vendor: Mapping[str, Any], our_type: str) -> DomainEvent:
    """A billing (Stripe-shaped) event as our CloudEvent; the id is derived from the vendor's,
    so the outbox's unique id is a second guard against enqueueing it twice."""
    obj = vendor.get("data", {}).get("object") if isinstance(vendor.get("data"), dict) else None
    if not isinstance(obj, dict):
        raise BadBackendData(source, "webhook event has no data.object", field="data.object")
    data: dict[str, Any]
    if obj.get("object") == "invoice":
        invoice = invoice_from_vendor(obj)
        data = {
            "invoice_id": invoice.id,
            "customer_id": invoice.customer_id,
            "invoice": invoice.model_dump(mode="json"),
        }
        subject: str | None = invoice.id
    else:
        subject = obj.get("id") if isinstance(obj.get("id"), str) else None
        data = {"object": obj}
    traceparent, tracestate = _traceparent()
    return DomainEvent(
        id=f"evt_{source}_{vendor['id']}",
        source=f"urn:trellis:webhooks:{source}",
        type=our_type,
        subject=subject,
        data={**data, "vendor_event_id": vendor["id"], "vendor_event_type": vendor["type"]},
        traceparent=traceparent,
        tracestate=tracestate,
    )


def inbound_view(
    sources: Mapping[str, InboundSourceConfig],
    store: Callable[[], InboundStore],
    published: Callable[[], None] = lambda: None,
) -> Callable[[Request], Awaitable[Response]]:
    @operation(
        "Receive a signed webhook from a backend",
        response=WebhookReceipt,
        headers=(HeaderParam("Stripe-Signature", "t=<unix>,v1=<hex HMAC-SHA256>", True),),
        errors=(400, 401, 404, 413),
        tags=("webhooks",),
        description="Public route: the HMAC signature is the authentication. Duplicates are "
        "acknowledged (200, duplicate=true) and not enqueued again.",
    )
    async def receive(request: Request) -> Response:
        name = request.path_params["source"]
        source = sources.get(name)
        if source is None:
            return problem_response(
                404, scope=request.scope, detail="No webhook source of this name."
            )
        try:
            payload = await read_limited(request, source.max_body_bytes)
        except TooLarge:
            return problem_response(
                413,
                scope=request.scope,
                detail=f"Webhook bodies are limited to {source.max_body_bytes} bytes.",
            )
        header = request.headers.get(SIGNATURE_HEADERS[source.scheme], "")
        try:
            verify_webhook_signature(payload, header, source.secret, source.tolerance_s)
        except WebhookSignatureError as exc:
            log.warning("webhook from %s refused: %s", name, exc)
            return problem_response(
                401,
                scope=request.scope,
                problem="invalid-webhook-signature",
                detail="The signature is missing, malformed, wrong or too old.",
            )
        try:
            vendor = orjson.loads(payload)
        except orjson.JSONDecodeError:
            vendor = None
        if (
            not isinstance(vendor, dict)
            or not isinstance(vendor.get("id"), str)
            or not vendor["id"]
            or not isinstance(vendor.get("type"), str)
        ):
            return problem_response(
                400, scope=request.scope, detail="A webhook event needs a string id and type."
            )
        our_type = source.event_types.get(vendor["type"])
        event = None
        if our_type is not None:
            try:
                event = stripe_domain_event(name, vendor, our_type)
            except BadBackendData as exc:
                return problem_response(400, scope=request.scope, detail=exc.detail)
        fresh = await store().accept_inbound(name, vendor["id"], source.remember_s, event)
        if fresh and event is not None:
            published()
        if not fresh:
            log.info("webhook %s from %s is a duplicate: dropped", vendor["id"], name)
        return json_response(
            WebhookReceipt(duplicate=not fresh, event_id=event.id if fresh and event else None)
        )

    return receive
