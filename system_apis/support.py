"""The helpdesk (Zendesk-like): users, tickets and comments, mapped to canonical models.

The vendor pages with opaque cursors (``page[after]``, ``meta.has_more``); we pass its
``after_cursor`` through as our own opaque cursor and never follow its absolute ``links``
(they could point our credentials at another host). Its strict rate limit is met by the
client base's outbound pacer plus Retry-After-aware retries.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from .client import BackendClient
from .errors import BadBackendData
from .ids import OPAQUE_CURSOR, IdSyntax
from .mapping import build_model
from .models import Page, SupportUser, Ticket, TicketComment, TicketPriority, TicketStatus
from .pagination import walk_pages

BACKEND = "support"
MAX_PAGE = 100

USER_FIELDS: dict[str, str] = {"name": "name", "email": "email"}
USER_OPTIONAL: dict[str, str] = {"external_id": "crm_contact_id"}
TICKET_TEXT: dict[str, str] = {"subject": "subject"}
TICKET_OPTIONAL: dict[str, str] = {"description": "description"}
COMMENT_TEXT: dict[str, str] = {"body": "body"}

TICKET_STATUS: dict[str, TicketStatus] = {
    "new": TicketStatus.NEW,
    "open": TicketStatus.OPEN,
    "pending": TicketStatus.PENDING,
    "hold": TicketStatus.PENDING,  # "on hold" is waiting on a third party: pending to callers
    "solved": TicketStatus.SOLVED,
    "closed": TicketStatus.CLOSED,
}
TICKET_PRIORITY: dict[str, TicketPriority] = {p.value: p for p in TicketPriority}

M = TypeVar("M")

# --- the vendor's id syntax: positive integers (Zendesk ids are 64-bit) ---------------------
USER_ID = IdSyntax(BACKEND, "user", r"[1-9][0-9]{0,17}")
TICKET_ID = IdSyntax(BACKEND, "ticket", r"[1-9][0-9]{0,17}")
CURSOR = OPAQUE_CURSOR
"""``meta.after_cursor`` is an opaque URL-safe token."""
_SEARCHABLE_EMAIL = re.compile(r"[^\s\"\\:()@]{1,128}@[^\s\"\\:()@]{1,253}")
"""An address as search text: no whitespace, quotes, backslashes, colons or parentheses."""


# --- mapping: pure functions -----------------------------------------------------------------


def _bad(detail: str, record: str | None, field: str) -> BadBackendData:
    return BadBackendData(BACKEND, detail, record=record, field=field)


def _object(raw: Any, kind: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise BadBackendData(BACKEND, f"{kind} is not a JSON object")
    return raw


def _id(raw: Mapping[str, Any], key: str, record: str | None) -> str:
    """Zendesk ids are integers; canonical ids are their decimal strings."""
    value = raw.get(key)
    if value is None:
        raise _bad("missing", record, key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _bad(f"expected a positive integer id, got {type(value).__name__}", record, key)
    return str(value)


def _text(raw: Mapping[str, Any], key: str, record: str, required: bool = True) -> str | None:
    value = raw.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise _bad("missing" if value is None else "not a non-empty string", record, key)
    return value


def _time(raw: Mapping[str, Any], key: str, record: str) -> datetime | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad("expected an ISO 8601 time", record, key)
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _bad("not an ISO 8601 time", record, key) from exc
    if when.tzinfo is None:
        raise _bad("time without a timezone", record, key)
    return when


def user_from_vendor(raw: Any) -> SupportUser:
    raw = _object(raw, "user")
    record = _id(raw, "id", None)
    fields: dict[str, Any] = {"id": record}
    fields.update({canon: _text(raw, vendor, record) for vendor, canon in USER_FIELDS.items()})
    fields.update(
        {canon: _text(raw, vendor, record, False) for vendor, canon in USER_OPTIONAL.items()}
    )
    return build_model(BACKEND, SupportUser, fields, record)


def user_to_vendor(email: str, name: str, crm_contact_id: str | None = None) -> dict[str, Any]:
    user: dict[str, Any] = {"email": email, "name": name, "role": "end-user", "verified": True}
    if crm_contact_id is not None:
        user["external_id"] = crm_contact_id
    return {"user": user}


def ticket_from_vendor(raw: Any) -> Ticket:
    raw = _object(raw, "ticket")
    record = _id(raw, "id", None)
    fields: dict[str, Any] = {"id": record, "requester_id": _id(raw, "requester_id", record)}
    fields.update({canon: _text(raw, vendor, record) for vendor, canon in TICKET_TEXT.items()})
    fields.update(
        {canon: _text(raw, vendor, record, False) for vendor, canon in TICKET_OPTIONAL.items()}
    )
    status = raw.get("status")
    if status not in TICKET_STATUS:
        raise _bad(f"unknown status {str(status)[:40]!r}", record, "status")
    fields["status"] = TICKET_STATUS[status]
    priority = raw.get("priority")
    if priority is not None and priority not in TICKET_PRIORITY:
        raise _bad(f"unknown priority {str(priority)[:40]!r}", record, "priority")
    fields["priority"] = TICKET_PRIORITY[priority] if priority is not None else None
    tags = raw.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise _bad("expected a list of strings", record, "tags")
    fields["tags"] = tags
    fields["created_at"] = _time(raw, "created_at", record)
    fields["updated_at"] = _time(raw, "updated_at", record)
    return build_model(BACKEND, Ticket, fields, record)


def ticket_to_vendor(
    requester_id: str,
    subject: str,
    body: str,
    priority: TicketPriority | None = None,
    tags: Iterable[str] = (),
) -> dict[str, Any]:
    if not USER_ID.matches(requester_id):
        raise ValueError(f"support requester ids are integers, got {requester_id!r}")
    return {
        "ticket": {
            "subject": subject,
            "comment": {"body": body, "public": True},
            "requester_id": int(requester_id),
            "priority": priority.value if priority else None,
            "tags": list(tags),
        }
    }


def status_to_vendor(status: TicketStatus) -> dict[str, Any]:
    return {"ticket": {"status": status.value}}


def comment_from_vendor(raw: Any, ticket_id: str) -> TicketComment:
    raw = _object(raw, "comment")
    record = _id(raw, "id", None)
    fields: dict[str, Any] = {
        "id": record,
        "ticket_id": ticket_id,
        "author_id": _id(raw, "author_id", record),
    }
    fields.update({canon: _text(raw, vendor, record) for vendor, canon in COMMENT_TEXT.items()})
    public = raw.get("public", True)
    if not isinstance(public, bool):
        raise _bad("expected a boolean", record, "public")
    fields["public"] = public
    fields["created_at"] = _time(raw, "created_at", record)
    return build_model(BACKEND, TicketComment, fields, record)


def cursor_page_from_vendor(
    body: Any, root: str, item: Callable[[Any], M]
) -> tuple[list[M], str | None]:
    """A cursor page: mapped items and the ``after_cursor`` if ``meta.has_more``."""
    body = _object(body, f"{root} page")
    raw_items, meta = body.get(root), body.get("meta")
    if not isinstance(raw_items, list):
        raise _bad("not an array", None, root)
    if not isinstance(meta, dict) or not isinstance(meta.get("has_more"), bool):
        raise _bad("missing has_more", None, "meta.has_more")
    items = [item(raw) for raw in raw_items]
    if not meta["has_more"]:
        return items, None
    after = meta.get("after_cursor")
    if not isinstance(after, str) or not after or not raw_items:
        raise _bad("has_more without an after_cursor", None, "meta.after_cursor")
    return items, after


def _one(body: Any, root: str) -> Any:
    data = _object(body, f"{root} response")
    if root not in data:
        raise _bad("missing", None, root)
    return data[root]


# --- the client ------------------------------------------------------------------------------


class SupportClient(BackendClient):
    name = BACKEND

    async def _get(self, path: str, params: Mapping[str, str | int] | None = None) -> Any:
        return (await self.request("GET", path, params=params)).json()

    async def _page(
        self, path: str, root: str, item: Callable[[Any], M], cursor: str | None, limit: int
    ) -> Page[M]:
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
        params: dict[str, str | int] = {"page[size]": limit}
        if cursor := CURSOR(cursor):
            params["page[after]"] = cursor
        items, after = cursor_page_from_vendor(await self._get(path, params), root, item)
        return Page[Any](items=items, next_cursor=after)

    # --- users ------------------------------------------------------------------------------

    async def get_user(self, user_id: str) -> SupportUser:
        ident = USER_ID(user_id)
        return user_from_vendor(_one(await self._get(f"/api/v2/users/{ident}.json"), "user"))

    async def find_user_by_email(self, email: str) -> SupportUser | None:
        """The user with this email; a value no address can be (spaces, quotes, no ``@``)
        finds nobody without a call, so it never becomes search syntax at the vendor."""
        if not _SEARCHABLE_EMAIL.fullmatch(email):
            return None
        body = _object(
            await self._get("/api/v2/users/search.json", {"query": f"email:{email}"}), "search"
        )
        users = body.get("users")
        if not isinstance(users, list):
            raise _bad("not an array", None, "users")
        return user_from_vendor(users[0]) if users else None

    async def create_user(
        self,
        email: str,
        name: str,
        crm_contact_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> SupportUser:
        resp = await self.request(
            "POST",
            "/api/v2/users.json",
            json=user_to_vendor(email, name, crm_contact_id),
            idempotency_key=idempotency_key or uuid.uuid4().hex,
        )
        return user_from_vendor(_one(resp.json(), "user"))

    # --- tickets ----------------------------------------------------------------------------

    async def get_ticket(self, ticket_id: str) -> Ticket:
        ident = TICKET_ID(ticket_id)
        return ticket_from_vendor(_one(await self._get(f"/api/v2/tickets/{ident}.json"), "ticket"))

    async def tickets_page(self, cursor: str | None = None, limit: int = MAX_PAGE) -> Page[Ticket]:
        return await self._page(
            "/api/v2/tickets.json", "tickets", ticket_from_vendor, cursor, limit
        )

    def iter_tickets(self, page_size: int = MAX_PAGE) -> AsyncIterator[Ticket]:
        return walk_pages(self.name, lambda c: self.tickets_page(c, page_size))

    async def user_tickets_page(
        self, user_id: str, cursor: str | None = None, limit: int = MAX_PAGE
    ) -> Page[Ticket]:
        path = f"/api/v2/users/{USER_ID(user_id)}/tickets/requested.json"
        return await self._page(path, "tickets", ticket_from_vendor, cursor, limit)

    def iter_user_tickets(self, user_id: str, page_size: int = MAX_PAGE) -> AsyncIterator[Ticket]:
        return walk_pages(self.name, lambda c: self.user_tickets_page(user_id, c, page_size))

    async def create_ticket(
        self,
        requester_id: str,
        subject: str,
        body: str,
        priority: TicketPriority | None = None,
        tags: Iterable[str] = (),
        idempotency_key: str | None = None,
    ) -> Ticket:
        """Zendesk honours Idempotency-Key on ticket creation, so a retry never duplicates."""
        USER_ID(requester_id)
        resp = await self.request(
            "POST",
            "/api/v2/tickets.json",
            json=ticket_to_vendor(requester_id, subject, body, priority, tags),
            idempotency_key=idempotency_key or uuid.uuid4().hex,
        )
        return ticket_from_vendor(_one(resp.json(), "ticket"))

    async def set_ticket_status(self, ticket_id: str, status: TicketStatus) -> Ticket:
        ident = TICKET_ID(ticket_id)
        resp = await self.request(
            "PUT", f"/api/v2/tickets/{ident}.json", json=status_to_vendor(status)
        )
        return ticket_from_vendor(_one(resp.json(), "ticket"))

    # --- comments ---------------------------------------------------------------------------

    async def add_comment(self, ticket_id: str, body: str, public: bool = True) -> None:
        """A comment on the ticket; ``public=False`` is an internal note agents alone see."""
        ident = TICKET_ID(ticket_id)
        comment = {"ticket": {"comment": {"body": body, "public": public}}}
        await self.request("PUT", f"/api/v2/tickets/{ident}.json", json=comment)

    async def comments_page(
        self, ticket_id: str, cursor: str | None = None, limit: int = MAX_PAGE
    ) -> Page[TicketComment]:
        ident = TICKET_ID(ticket_id)
        return await self._page(
            f"/api/v2/tickets/{ident}/comments.json",
            "comments",
            lambda raw: comment_from_vendor(raw, ident),
            cursor,
            limit,
        )

    def iter_comments(
        self, ticket_id: str, page_size: int = MAX_PAGE
    ) -> AsyncIterator[TicketComment]:
        return walk_pages(self.name, lambda c: self.comments_page(ticket_id, c, page_size))
