"""The marketing platform (HubSpot-style): contacts, static lists, email sends and engagement.

HubSpot keeps every property as a string inside ``properties``; the mapping here types them
(an integer lead score, epoch-millisecond event times) and names the record and property when
a value does not fit. Lists are HubSpot's v3 lists API (the v1 contact lists API is sunset):
a list is found by name, its members are record ids paged by ``after`` and read in batches of
100 through ``/crm/v3/objects/contacts/batch/read``. Three pagination styles meet here: v3
``paging.next.after``, the list search's ``offset``/``hasMore`` and the events API's
``offset``/``hasMore``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from .client import BackendClient
from .errors import BackendNotFound, BadBackendData
from .ids import OPAQUE_CURSOR, IdSyntax
from .models import EmailSend, Engagement, MarketingContact, MarketingList, Page
from .pagination import walk_pages

BACKEND = "marketing"
MAX_LIMIT = 100
CONTACTS = "/crm/v3/objects/contacts"
LISTS = "/crm/v3/lists"
CONTACT_TYPE = "0-1"
"""HubSpot's objectTypeId of contacts."""
LIST_SEARCH_COUNT = 500
"""Lists per page of ``POST /crm/v3/lists/search`` (HubSpot's maximum)."""
BATCH_READ_MAX = 100
"""Ids per ``batch/read`` (HubSpot's maximum)."""

CONTACT_FIELDS: dict[str, str] = {
    "email": "email",
    "firstname": "first_name",
    "lastname": "last_name",
    "lifecyclestage": "lifecycle_stage",
    "trellis_crm_id": "crm_contact_id",
}
"""HubSpot property -> canonical field, for the plain string renames."""
SCORE_PROPERTY = "hubspotscore"
"""Calculated by HubSpot, so read-only: mapped in code (string -> int), never written."""
PROPERTIES = ",".join([*CONTACT_FIELDS, SCORE_PROPERTY])

SEND_STATUSES: dict[str, str] = {
    "PENDING": "queued",
    "PROCESSING": "sending",
    "COMPLETE": "sent",
    "CANCELED": "cancelled",
}
TEMPLATE_IDS: dict[str, int] = {
    "welcome": 1001,
    "nurture": 1002,
    "newsletter": 1003,
    "order-confirmation": 1004,
    "win-back": 1005,
}
"""Our template names -> the portal's transactional emailIds (a numeric id passes through)."""

_EXISTING_ID = re.compile(r"Existing ID: ([0-9]+)", re.ASCII)
_INTEGER = re.compile(r"-?[0-9]{1,18}", re.ASCII)

# --- the vendor's id syntax: HubSpot ids are positive integers -------------------------------
CONTACT_ID = IdSyntax(BACKEND, "contact", r"[1-9][0-9]{0,17}")
LIST_ID = IdSyntax(BACKEND, "list", r"[1-9][0-9]{0,17}")
CURSOR = OPAQUE_CURSOR
"""``paging.next.after``: an opaque token."""


class ListMembershipChange(BaseModel):
    """What a list add/remove did: vendor-specific, so it lives here, not in models.py."""

    model_config = ConfigDict(extra="forbid")

    list_id: str
    updated: list[str]
    discarded: list[str]
    invalid: list[str] = []


# --- mapping: pure functions -----------------------------------------------------------------


def _bad(detail: str, record: str | None, field: str) -> BadBackendData:
    return BadBackendData(BACKEND, detail, record=record, field=field)


def _object(raw: Any, what: str, record: str | None = None) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _bad(f"{what} is not an object", record, what)
    return raw


def _score(value: Any, record: str) -> int | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _INTEGER.fullmatch(value.strip()):
        raise _bad(f"not an integer string: {value!r}", record, f"properties.{SCORE_PROPERTY}")
    return int(value)


def contact_from_properties(record: str, props: dict[str, Any]) -> MarketingContact:
    """Canonical contact from HubSpot's flat string properties (shared by v3 and v1 shapes)."""
    fields: dict[str, Any] = {}
    for vendor, canon in CONTACT_FIELDS.items():
        value = props.get(vendor)
        if value is not None and not isinstance(value, str):
            kind = type(value).__name__
            raise _bad(f"expected a string, got {kind}", record, f"properties.{vendor}")
        fields[canon] = value or None
    if fields["email"] is None:
        raise _bad("missing", record, "properties.email")
    score = _score(props.get(SCORE_PROPERTY), record)
    return MarketingContact(id=record, lead_score=score, **fields)


def contact_from_vendor(raw: Any) -> MarketingContact:
    """A CRM v3 contact object -> ``MarketingContact``."""
    raw = _object(raw, "contact")
    rid = raw.get("id")
    if not isinstance(rid, str) or not rid:
        raise _bad("missing or not a string", None, "id")
    return contact_from_properties(rid, _object(raw.get("properties"), "properties", rid))


def contact_to_vendor(contact: MarketingContact) -> dict[str, Any]:
    """``MarketingContact`` -> a v3 create/update body; the calculated score is never sent."""
    data = contact.model_dump()
    props = {v: data[c] for v, c in CONTACT_FIELDS.items() if data[c] is not None}
    return {"properties": props}


def list_from_vendor(raw: Any) -> MarketingList:
    """A v3 list: a ``PublicObjectList`` (``size``) or a search result (its size a string in
    ``additionalProperties.hs_list_size``)."""
    raw = _object(raw, "list")
    record = raw.get("listId")
    if not isinstance(record, str) or not LIST_ID.matches(record):
        raise _bad("missing or not a list id string", None, "listId")
    name = raw.get("name")
    if not isinstance(name, str):
        raise _bad("missing or not a string", record, "name")
    size: Any = raw.get("size")
    field = "size"
    if "additionalProperties" in raw:
        extra = _object(raw["additionalProperties"], "additionalProperties", record)
        size, field = extra.get("hs_list_size"), "additionalProperties.hs_list_size"
        if isinstance(size, str):
            if not _INTEGER.fullmatch(size):
                raise _bad(f"not an integer string: {size!r}", record, field)
            size = int(size)
    if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
        raise _bad("not an integer", record, field)
    return MarketingList(id=record, name=name, size=size)


def email_send_from_vendor(raw: Any, contact_id: str, template: str) -> EmailSend:
    raw = _object(raw, "send")
    status_id = raw.get("statusId")
    if not isinstance(status_id, str):
        raise _bad("missing or not a string", None, "statusId")
    status = raw.get("status")
    if status not in SEND_STATUSES:
        raise _bad(f"unknown send status {status!r}", status_id, "status")
    return EmailSend(
        id=status_id, contact_id=contact_id, template=template, status=SEND_STATUSES[status]
    )


def _millis(value: Any, record: str, field: str) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad("expected epoch milliseconds", record, field)
    try:
        return datetime.fromtimestamp(value / 1000, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise _bad("timestamp out of range", record, field) from exc


def engagement_from_events(contact_id: str, events: Iterable[Any]) -> Engagement:
    """Count sends, opens and clicks; the latest open or click is the last engagement."""
    sent = opens = clicks = 0
    last: datetime | None = None
    for raw in events:
        event = _object(raw, "event", contact_id)
        record = str(event.get("id", contact_id))
        kind = event.get("type")
        if not isinstance(kind, str):
            raise _bad("missing or not a string", record, "type")
        created = _millis(event.get("created"), record, "created")
        if kind == "SENT":
            sent += 1
        elif kind in ("OPEN", "CLICK"):
            opens += kind == "OPEN"
            clicks += kind == "CLICK"
            last = created if last is None or created > last else last
    return Engagement(
        contact_id=contact_id, emails_sent=sent, opens=opens, clicks=clicks, last_engaged_at=last
    )


def template_id(template: str) -> int:
    """The portal's emailId for a template name (or a numeric id); ValueError if unknown."""
    if re.fullmatch(r"[1-9][0-9]{0,17}", template, re.ASCII):
        return int(template)
    if template not in TEMPLATE_IDS:
        raise ValueError(f"unknown email template {template!r}")
    return TEMPLATE_IDS[template]


def existing_contact_id(conflict_detail: str) -> str | None:
    """The id HubSpot names in its 409 "Contact already exists. Existing ID: N"."""
    match = _EXISTING_ID.search(conflict_detail)
    return match.group(1) if match else None


def _results(body: dict[str, Any], key: str, record: str) -> list[Any]:
    value = body.get(key)
    if not isinstance(value, list):
        raise _bad("missing or not a list", record, key)
    return value


def _next_after(body: dict[str, Any]) -> str | None:
    paging = body.get("paging")
    if paging is None:
        return None
    after = _object(paging, "paging").get("next", {})
    after = _object(after, "paging.next").get("after")
    if not isinstance(after, str) or not after:
        raise _bad("missing or not a string", None, "paging.next.after")
    return after


# --- client ----------------------------------------------------------------------------------


class MarketingClient(BackendClient):
    """Typed calls to the marketing platform."""

    name = BACKEND

    # contacts

    async def get_contact(self, contact_id: str) -> MarketingContact:
        resp = await self.request(
            "GET", f"{CONTACTS}/{CONTACT_ID(contact_id)}", params={"properties": PROPERTIES}
        )
        return contact_from_vendor(resp.json_object())

    async def find_contact_by_email(self, email: str) -> MarketingContact | None:
        body = {
            "filterGroups": [
                {"filters": [{"propertyName": "email", "operator": "EQ", "value": email}]}
            ],
            "properties": [*CONTACT_FIELDS, SCORE_PROPERTY],
            "limit": 1,
        }
        # Search is a read: a stable key lets the client base retry it safely.
        key = "search:" + hashlib.sha256(email.lower().encode()).hexdigest()[:32]
        resp = await self.request("POST", f"{CONTACTS}/search", json=body, idempotency_key=key)
        results = _results(resp.json_object(), "results", f"search {email}")
        return contact_from_vendor(results[0]) if results else None

    async def create_contact(
        self,
        email: str,
        first_name: str,
        last_name: str,
        crm_contact_id: str | None = None,
        lifecycle_stage: str | None = None,
    ) -> MarketingContact:
        """A new contact; a duplicate email raises ``BackendConflict``.

        Its detail names the existing id (``existing_contact_id`` reads it) for an upsert.
        """
        draft = MarketingContact(
            id="new",
            email=email,
            first_name=first_name,
            last_name=last_name,
            crm_contact_id=crm_contact_id,
            lifecycle_stage=lifecycle_stage,
        )
        resp = await self.request("POST", CONTACTS, json=contact_to_vendor(draft))
        return contact_from_vendor(resp.json_object())

    async def update_contact(
        self,
        contact_id: str,
        *,
        email: str | None = None,
        first_name: str | None = None,
        last_name: str | None = None,
        lifecycle_stage: str | None = None,
        crm_contact_id: str | None = None,
    ) -> MarketingContact:
        """Change only the fields given; answers the whole contact as it now is."""
        changes = {
            "email": email,
            "firstname": first_name,
            "lastname": last_name,
            "lifecyclestage": lifecycle_stage,
            "trellis_crm_id": crm_contact_id,
        }
        props = {k: v for k, v in changes.items() if v is not None}
        path = f"{CONTACTS}/{CONTACT_ID(contact_id)}"
        await self.request("PATCH", path, json={"properties": props})
        return await self.get_contact(contact_id)

    async def contacts_page(
        self, cursor: str | None = None, limit: int = 50
    ) -> Page[MarketingContact]:
        """One page; the cursor is HubSpot's own ``after`` token."""
        params: dict[str, str | int] = {
            "limit": min(max(limit, 1), MAX_LIMIT),
            "properties": PROPERTIES,
        }
        if cursor := CURSOR(cursor):
            params["after"] = cursor
        resp = await self.request("GET", CONTACTS, params=params)
        body = resp.json_object()
        items = [contact_from_vendor(r) for r in _results(body, "results", "contacts page")]
        return Page[MarketingContact](items=items, next_cursor=_next_after(body))

    async def iter_contacts(self, page_size: int = MAX_LIMIT) -> AsyncIterator[MarketingContact]:
        """Every contact, following ``paging.next.after`` until a page has no ``paging``."""
        async for contact in walk_pages(self.name, lambda c: self.contacts_page(c, page_size)):
            yield contact

    async def lead_score(self, contact_id: str) -> int | None:
        resp = await self.request(
            "GET",
            f"{CONTACTS}/{CONTACT_ID(contact_id)}",
            params={"properties": SCORE_PROPERTY},
        )
        body = resp.json_object()
        props = _object(body.get("properties"), "properties", contact_id)
        return _score(props.get(SCORE_PROPERTY), contact_id)

    # lists

    async def lists(self) -> list[MarketingList]:
        """Every contact list, following the list search's ``offset`` while ``hasMore``."""
        out: list[MarketingList] = []
        offset = 0
        while True:
            body = (
                await self.request(
                    "POST",
                    f"{LISTS}/search",
                    json={"query": "", "count": LIST_SEARCH_COUNT, "offset": offset},
                    idempotency_key=f"lists:{offset}",  # a read: safe to retry
                )
            ).json_object()
            out += [list_from_vendor(r) for r in _results(body, "lists", "lists")]
            if body.get("hasMore") is not True:
                return out
            nxt = body.get("offset")
            if isinstance(nxt, bool) or not isinstance(nxt, int) or nxt <= offset:
                raise _bad("offset does not advance", "lists", "offset")
            offset = nxt

    async def find_list(self, name: str) -> MarketingList | None:
        """The contact list of exactly this name (HubSpot's lookup by name)."""
        path = f"{LISTS}/object-type-id/{CONTACT_TYPE}/name/{self.segment(name)}"
        try:
            body = (await self.request("GET", path)).json_object()
        except BackendNotFound:
            return None
        return list_from_vendor(body.get("list"))

    async def _membership(
        self, list_id: str, contact_ids: list[str], action: str
    ) -> ListMembershipChange:
        LIST_ID(list_id)
        ids = list(dict.fromkeys(cid for cid in contact_ids if CONTACT_ID.matches(cid)))
        malformed = [cid for cid in contact_ids if not CONTACT_ID.matches(cid)]
        if not ids:  # nothing the vendor could act on: no call
            return ListMembershipChange(
                list_id=list_id, updated=[], discarded=[], invalid=malformed
            )
        digest = hashlib.sha256(",".join(ids).encode()).hexdigest()[:32]
        resp = await self.request(
            "PUT",
            f"{LISTS}/{list_id}/memberships/{action}",
            json=ids,
            # Adding or removing the same ids twice changes nothing: safe to retry.
            idempotency_key=f"{action}:{list_id}:{digest}",
        )
        body = resp.json_object()
        record = f"list {list_id}"
        changed_key = "recordsIdsAdded" if action == "add" else "recordIdsRemoved"
        changed = [str(v) for v in _results(body, changed_key, record)]
        missing = [str(v) for v in _results(body, "recordIdsMissing", record)]
        return ListMembershipChange(
            list_id=list_id,
            updated=changed,
            discarded=[i for i in ids if i not in changed and i not in missing],
            invalid=malformed + missing,
        )

    async def add_to_list(self, list_id: str, contact_ids: list[str]) -> ListMembershipChange:
        return await self._membership(list_id, contact_ids, "add")

    async def remove_from_list(self, list_id: str, contact_ids: list[str]) -> ListMembershipChange:
        return await self._membership(list_id, contact_ids, "remove")

    async def _batch_read(self, ids: list[str]) -> list[MarketingContact]:
        """Contacts by id, in the order asked; one that is gone since is left out."""
        body = (
            await self.request(
                "POST",
                f"{CONTACTS}/batch/read",
                json={
                    "inputs": [{"id": i} for i in ids],
                    "properties": PROPERTIES.split(","),
                    "propertiesWithHistory": [],
                },
                # a read: a stable key lets the client base retry it safely
                idempotency_key="batch-read:"
                + hashlib.sha256(",".join(ids).encode()).hexdigest()[:32],
            )
        ).json_object()
        found = {c.id: c for c in map(contact_from_vendor, _results(body, "results", "batch"))}
        return [found[i] for i in ids if i in found]

    async def iter_list_members(
        self, list_id: str, page_size: int = MAX_LIMIT
    ) -> AsyncIterator[MarketingContact]:
        """Every member in record id order: a page of ids from the list's memberships, then
        those contacts in one batch read."""
        if not 1 <= page_size <= BATCH_READ_MAX:
            raise ValueError(f"page_size must be between 1 and {BATCH_READ_MAX}")
        path = f"{LISTS}/{LIST_ID(list_id)}/memberships"
        after: str | None = None
        while True:
            params: dict[str, str | int] = {"limit": page_size}
            if after is not None:
                params["after"] = after
            body = (await self.request("GET", path, params=params)).json_object()
            ids: list[str] = []
            for raw in _results(body, "results", f"list {list_id}"):
                rid = _object(raw, "membership", f"list {list_id}").get("recordId")
                if not isinstance(rid, str) or not CONTACT_ID.matches(rid):
                    raise _bad("missing or not a record id", f"list {list_id}", "recordId")
                ids.append(rid)
            if ids:
                for contact in await self._batch_read(ids):
                    yield contact
            nxt = _next_after(body)
            if nxt is None:
                return
            if nxt == after:
                raise _bad("after does not advance", f"list {list_id}", "paging.next.after")
            after = nxt

    # email

    async def send_email(self, to: str, template: str) -> EmailSend:
        """Send a transactional email to a contact id or an email address."""
        email_id = template_id(template)
        if "@" in to:
            email, contact = to, await self.find_contact_by_email(to)
        else:
            contact = await self.get_contact(to)
            email = contact.email
        resp = await self.request(
            "POST",
            "/marketing/v3/transactional/single-email/send",
            json={"emailId": email_id, "message": {"to": email}, "contactProperties": {}},
        )
        if contact is None:  # HubSpot created the contact while sending
            contact = await self.find_contact_by_email(email)
            if contact is None:
                raise _bad("recipient has no contact after sending", email, "message.to")
        return email_send_from_vendor(resp.json_object(), contact.id, template)

    async def engagement(
        self, email: str, contact_id: str | None = None, page_size: int = 100
    ) -> Engagement:
        """Summarise every email event of a recipient, across all pages of the events API."""
        if contact_id is None:
            contact = await self.find_contact_by_email(email)
            if contact is None:
                raise BackendNotFound(self.name, f"no contact with email {email}")
            contact_id = contact.id
        events: list[Any] = []
        offset: str | None = None
        while True:
            params: dict[str, str | int] = {"recipient": email, "limit": page_size}
            if offset:
                params["offset"] = offset
            resp = await self.request("GET", "/email/public/v1/events", params=params)
            body = resp.json_object()
            events += _results(body, "events", contact_id)
            if body.get("hasMore") is not True:
                break
            nxt = body.get("offset")
            if not isinstance(nxt, str) or not nxt or nxt == offset:
                raise _bad("offset does not advance", contact_id, "offset")
            offset = nxt
        return engagement_from_events(contact_id, events)
