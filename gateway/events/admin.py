"""Admin views (scope ``admin``): recent events with per-subscriber state, and the DLQ.

They answer "did the CRM get this order?" without reading logs, and let an operator replay
or discard dead letters through the same path the dispatcher uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from pydantic import TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from system_apis.http.common import InvalidInput, json_response, query_int, read_model
from system_apis.http.operation import QueryParam, operation

from .records import (
    DeadLetter,
    DeadLetterList,
    DeadLetterQuery,
    DeadLetterStatus,
    DiscardRequest,
    EventList,
    EventSummary,
    ReplayRequest,
    ReplayResult,
    ReplayResults,
)

TAGS = ("admin: events",)


class AdminStore(Protocol):
    async def recent_events(
        self,
        type_: str | None,
        subject: str | None,
        limit: int,
        wants: Callable[[str], list[str]],
    ) -> list[EventSummary]: ...

    async def dead_letters(self, query: DeadLetterQuery) -> list[DeadLetter]: ...

    async def dead_letter(self, letter_id: str) -> DeadLetter | None: ...

    async def replay(self, letter_ids: Sequence[str]) -> list[ReplayResult]: ...

    async def discard(self, letter_id: str, reason: str) -> DeadLetter | None: ...


_when = TypeAdapter(datetime)


def _time_param(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        value = _when.validate_python(raw)
    except ValidationError as exc:
        raise InvalidInput(
            f"query parameter {name} must be an RFC 3339 date-time",
            [{"path": f"query/{name}", "message": "not a date-time", "type": "datetime"}],
            status=400,
        ) from exc
    if value.tzinfo is None:
        raise InvalidInput(
            f"query parameter {name} needs a time zone",
            [{"path": f"query/{name}", "message": "no time zone", "type": "datetime"}],
            status=400,
        )
    return value


def _status_param(request: Request) -> DeadLetterStatus | None:
    raw = request.query_params.get("status", DeadLetterStatus.DEAD.value)
    if raw == "all":
        return None
    try:
        return DeadLetterStatus(raw)
    except ValueError as exc:
        allowed = ", ".join([*(s.value for s in DeadLetterStatus), "all"])
        raise InvalidInput(
            f"query parameter status must be one of {allowed}",
            [{"path": "query/status", "message": "unknown status", "type": "enum"}],
            status=400,
        ) from exc


def _not_found(letter_id: str) -> InvalidInput:
    return InvalidInput(f"no dead letter {letter_id[:80]!r}", status=404)


def admin_routes(
    store: Callable[[], AdminStore], wants: Callable[[str], list[str]]
) -> list[BaseRoute]:
    """The routes, to be mounted at ``/admin/v1`` behind ``RequireScopes(read=["admin"])``."""

    @operation(
        "Recent events and their delivery state per subscriber",
        response=EventList,
        query=(
            QueryParam("type", "Only events of this type, e.g. order.placed."),
            QueryParam("subject", "Only events about this subject, e.g. an order id."),
            QueryParam("limit", "How many, newest first (1-200).", type="integer"),
        ),
        errors=(401, 403, 422),
        tags=TAGS,
    )
    async def list_events(request: Request) -> Response:
        items = await store().recent_events(
            request.query_params.get("type") or None,
            request.query_params.get("subject") or None,
            query_int(request, "limit", 50),
            wants,
        )
        return json_response(EventList(items=items))

    @operation(
        "Dead letters, newest first",
        response=DeadLetterList,
        query=(
            QueryParam("type", "Event type."),
            QueryParam("subscriber", "Subscriber name, e.g. order-crm-activity."),
            QueryParam("since", "Dead-lettered at or after (RFC 3339)."),
            QueryParam("until", "Dead-lettered at or before (RFC 3339)."),
            QueryParam("status", "dead (default), replayed, discarded, already_delivered, all."),
            QueryParam("limit", "How many (1-1000).", type="integer"),
        ),
        errors=(401, 403, 422),
        tags=TAGS,
    )
    async def list_dead_letters(request: Request) -> Response:
        query = DeadLetterQuery(
            type=request.query_params.get("type") or None,
            subscriber=request.query_params.get("subscriber") or None,
            since=_time_param(request, "since"),
            until=_time_param(request, "until"),
            status=_status_param(request),
            limit=query_int(request, "limit", 100, hi=1000),
        )
        return json_response(DeadLetterList(items=await store().dead_letters(query)))

    @operation(
        "One dead letter with its attempts and errors",
        response=DeadLetter,
        errors=(401, 403, 404),
        tags=TAGS,
    )
    async def show_dead_letter(request: Request) -> Response:
        letter_id = request.path_params["id"]
        letter = await store().dead_letter(letter_id)
        if letter is None:
            raise _not_found(letter_id)
        return json_response(letter)

    @operation(
        "Replay dead letters through the normal delivery path",
        request=ReplayRequest,
        response=ReplayResults,
        errors=(400, 401, 403, 422),
        tags=TAGS,
        description="An event its subscriber already handled is not applied again "
        "(outcome already_delivered).",
    )
    async def replay(request: Request) -> Response:
        body = await read_model(request, ReplayRequest)
        return json_response(ReplayResults(items=await store().replay(body.ids)))

    @operation(
        "Discard a dead letter, with a reason",
        request=DiscardRequest,
        response=DeadLetter,
        errors=(400, 401, 403, 404, 409, 422),
        tags=TAGS,
    )
    async def discard(request: Request) -> Response:
        letter_id = request.path_params["id"]
        body = await read_model(request, DiscardRequest)
        letter = await store().discard(letter_id, body.reason)
        if letter is None:
            raise _not_found(letter_id)
        if letter.status is not DeadLetterStatus.DISCARDED or letter.reason != body.reason:
            raise InvalidInput(f"the dead letter is already {letter.status.value}", status=409)
        return json_response(letter)

    return [
        Route("/events", list_events, methods=["GET"]),
        Route("/dlq", list_dead_letters, methods=["GET"]),
        Route("/dlq/replay", replay, methods=["POST"]),
        Route("/dlq/{id}", show_dead_letter, methods=["GET"]),
        Route("/dlq/{id}/discard", discard, methods=["POST"]),
    ]
