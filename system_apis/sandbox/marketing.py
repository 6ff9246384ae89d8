"""Sandbox of the marketing automation platform, imitating HubSpot's public APIs.

CRM v3 contacts (string-valued ``properties``, ``paging.next.after`` cursors, search with filter
groups), the legacy v1 lists API (``vid-offset`` paging, ``updated``/``discarded`` answers),
transactional single sends and the v1 email events API (``hasMore``/``offset``). Errors carry
HubSpot's shape: ``status``, ``message``, ``category``, ``correlationId``, ``errors``.
"""

from __future__ import annotations

import base64
import bisect
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from . import seed

TOKEN = "pat-sandbox-marketing"  # noqa: S105 - the sandbox's own, public credential
PORTAL_ID = 62515
MAX_LIMIT = 100
FIRST_NEW_ID = 5_000 + seed.PEOPLE + 1
LIFECYCLE_STAGES = (
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
    "other",
)
WRITABLE = frozenset(
    {"email", "firstname", "lastname", "phone", "company", "lifecyclestage", "trellis_crm_id"}
)
READ_ONLY = frozenset({"hubspotscore", "createdate", "lastmodifieddate", "hs_object_id"})
ALWAYS = ("createdate", "lastmodifieddate", "hs_object_id")
DEFAULT_PROPERTIES = ("email", "firstname", "lastname", *ALWAYS)
EMAILS: dict[int, str] = {
    1001: "welcome",
    1002: "nurture",
    1003: "newsletter",
    1004: "order-confirmation",
    1005: "win-back",
}
"""Transactional emails set up in the portal (emailId -> internal name)."""
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
EPOCH_2025_MS = 1_735_689_600_000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class ContactRecord:
    id: int
    properties: dict[str, str | None]
    created_ms: int
    updated_ms: int

    def to_v3(self, wanted: tuple[str, ...]) -> dict[str, Any]:
        props = {name: self.properties.get(name) for name in (*wanted, *ALWAYS)}
        return {
            "id": str(self.id),
            "properties": props,
            "createdAt": _iso(self.created_ms),
            "updatedAt": _iso(self.updated_ms),
            "archived": False,
        }

    def to_v1(self, added_ms: int) -> dict[str, Any]:
        props = {k: {"value": v} for k, v in self.properties.items() if v is not None}
        identities = [{"type": "LEAD_GUID", "value": str(uuid.UUID(int=self.id))}]
        email = self.properties.get("email")
        if email:
            identities.insert(0, {"type": "EMAIL", "value": email})
        return {
            "vid": self.id,
            "canonical-vid": self.id,
            "merged-vids": [],
            "portal-id": PORTAL_ID,
            "is-contact": True,
            "addedAt": added_ms,
            "properties": props,
            "identity-profiles": [{"vid": self.id, "identities": identities}],
        }


@dataclass(slots=True)
class ListRecord:
    id: int
    name: str
    created_ms: int
    updated_ms: int
    members: dict[int, int] = field(default_factory=dict)  # vid -> addedAt (ms)

    def to_v1(self) -> dict[str, Any]:
        return {
            "listId": self.id,
            "internalListId": 100_000 + self.id,
            "portalId": PORTAL_ID,
            "name": self.name,
            "dynamic": False,
            "listType": "STATIC",
            "createdAt": self.created_ms,
            "updatedAt": self.updated_ms,
            "metaData": {"size": len(self.members), "processing": "DONE"},
        }


@dataclass
class Portal:
    """All state of the sandbox portal."""

    contacts: dict[int, ContactRecord] = field(default_factory=dict)
    ids: list[int] = field(default_factory=list)  # sorted, for cursor paging
    by_email: dict[str, int] = field(default_factory=dict)
    lists: dict[int, ListRecord] = field(default_factory=dict)
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # newest first
    sends: dict[str, dict[str, Any]] = field(default_factory=dict)
    next_id: int = FIRST_NEW_ID

    @classmethod
    def seeded(cls) -> Portal:
        r = seed.rng("marketing")
        portal = cls()
        weights = (20, 30, 15, 10, 8, 12, 3, 2)
        for p in seed.people():
            created = EPOCH_2025_MS + r.randint(0, 300 * 86_400) * 1000
            updated = created + r.randint(0, 60 * 86_400) * 1000
            props: dict[str, str | None] = {
                "email": p.email,
                "firstname": p.first_name,
                "lastname": p.last_name,
                "phone": p.phone,
                "company": p.account.name,
                "lifecyclestage": r.choices(LIFECYCLE_STAGES, weights)[0],
                "hubspotscore": str(r.randint(0, 100)),
                "trellis_crm_id": p.crm_contact_id,
            }
            portal._insert(ContactRecord(p.marketing_contact_id, props, created, updated))
        seed_lists: tuple[tuple[str, Callable[[ContactRecord], bool]], ...] = (
            ("Newsletter", lambda c: c.id % 2 == 0),
            ("Nurture", lambda c: c.properties["lifecyclestage"] in ("lead", "subscriber")),
            ("Webinar Attendees", lambda c: c.id % 7 == 0),
            ("Customers", lambda c: c.properties["lifecyclestage"] == "customer"),
        )
        for list_id, (name, member) in enumerate(seed_lists, start=1):
            created = EPOCH_2025_MS + list_id * 86_400_000
            lst = ListRecord(list_id, name, created, created)
            lst.members = {c.id: c.created_ms for c in portal.contacts.values() if member(c)}
            portal.lists[list_id] = lst
        return portal

    def _insert(self, record: ContactRecord) -> None:
        record.properties["hs_object_id"] = str(record.id)
        record.properties["createdate"] = _iso(record.created_ms)
        record.properties["lastmodifieddate"] = _iso(record.updated_ms)
        self.contacts[record.id] = record
        bisect.insort(self.ids, record.id)
        email = record.properties.get("email")
        if email:
            self.by_email[email.lower()] = record.id

    def create(self, props: dict[str, str | None]) -> ContactRecord:
        now = _now_ms()
        record = ContactRecord(self.next_id, dict(props), now, now)
        self.next_id += 1
        self._insert(record)
        return record

    def update(self, record: ContactRecord, props: dict[str, str | None]) -> None:
        old = record.properties.get("email")
        if "email" in props and old:
            self.by_email.pop(old.lower(), None)
        record.properties.update(props)
        new = record.properties.get("email")
        if new:
            self.by_email[new.lower()] = record.id
        record.updated_ms = _now_ms()
        record.properties["lastmodifieddate"] = _iso(record.updated_ms)

    def events_of(self, email: str) -> list[dict[str, Any]]:
        """A recipient's email events, newest first; seed contacts get a stable history."""
        key = email.lower()
        if key not in self.events:
            cid = self.by_email.get(key)
            self.events[key] = _seed_events(cid, email) if cid and cid < FIRST_NEW_ID else []
        return self.events[key]


def _seed_events(contact_id: int, email: str) -> list[dict[str, Any]]:
    r = seed.rng(f"marketing-events:{contact_id}")
    out: list[dict[str, Any]] = []
    t = EPOCH_2025_MS + r.randint(0, 200 * 86_400) * 1000
    for n in range(r.randint(0, 6)):
        campaign = r.choice(list(EMAILS))
        out.append(_event(f"{contact_id}-{n}-s", "SENT", email, t, campaign))
        out.append(_event(f"{contact_id}-{n}-d", "DELIVERED", email, t + 2_000, campaign))
        if r.random() < 0.6:
            opened = t + r.randint(60, 86_400) * 1000
            out.append(_event(f"{contact_id}-{n}-o", "OPEN", email, opened, campaign))
            if r.random() < 0.4:
                clicked = opened + r.randint(5, 600) * 1000
                out.append(_event(f"{contact_id}-{n}-c", "CLICK", email, clicked, campaign))
        t += r.randint(3, 30) * 86_400_000
    out.sort(key=lambda e: e["created"], reverse=True)
    return out


def _event(event_id: str, kind: str, email: str, created: int, campaign: int) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": kind,
        "recipient": email,
        "created": created,
        "emailCampaignId": campaign,
        "portalId": PORTAL_ID,
        "appId": 0,
    }


PORTAL = web.AppKey("portal", Portal)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _iso(ms: int) -> str:
    dt = datetime.fromtimestamp(ms / 1000, UTC)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _error(
    status: int, category: str, message: str, errors: list[dict[str, Any]] | None = None
) -> web.Response:
    body: dict[str, Any] = {
        "status": "error",
        "message": message,
        "correlationId": str(uuid.uuid4()),
        "category": category,
    }
    if errors:
        body["errors"] = errors
    return _json(body, status)


def _not_found(what: str) -> web.Response:
    return _error(404, "OBJECT_NOT_FOUND", f"{what} not found")


def _portal(request: web.Request) -> Portal:
    return request.app[PORTAL]


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/__"):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return _error(
            401,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found. This API supports OAuth 2.0 authentication "
            "and you can find more details at https://developers.hubspot.com/docs/methods/auth/"
            "oauth-overview",
        )
    if header.removeprefix("Bearer ") != TOKEN:
        return _error(
            401, "INVALID_AUTHENTICATION", "The access token provided is invalid or has expired"
        )
    return await handler(request)


def _int_param(request: web.Request, name: str, default: int, hi: int) -> int | web.Response:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= hi:
        return _error(
            400, "VALIDATION_ERROR", f"Invalid input: {name} must be an integer between 1 and {hi}"
        )
    return int(raw)


def _wanted(request: web.Request) -> tuple[str, ...]:
    """``properties=a,b`` or repeated ``properties=a&properties=b``, as HubSpot accepts both."""
    names = [n.strip() for v in request.query.getall("properties", []) for n in v.split(",")]
    return tuple(n for n in names if n) or DEFAULT_PROPERTIES


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return _error(400, "VALIDATION_ERROR", "Invalid input JSON on line 1")


def _check_properties(
    portal: Portal, body: Any, own_id: int | None
) -> dict[str, str | None] | web.Response:
    """HubSpot's property validation: known, writable, valid email and option values."""
    if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
        return _error(400, "VALIDATION_ERROR", "Invalid input JSON: properties is required")
    errors: list[dict[str, Any]] = []
    out: dict[str, str | None] = {}
    for name, value in body["properties"].items():
        if name in READ_ONLY:
            code, msg = "READ_ONLY_VALUE", f'Property "{name}" is a read only property'
        elif name not in WRITABLE:
            code, msg = "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist'
        elif value is not None and (isinstance(value, dict | list)):
            code, msg = "INVALID_PROPERTY_VALUE", f'Property "{name}" must be a scalar'
        else:
            text = None if value is None or value == "" else str(value)
            if isinstance(value, bool):
                text = str(value).lower()
            if name == "email" and (text is None or not EMAIL_RE.match(text)):
                code, msg = "INVALID_EMAIL", f"Email address {text} is invalid"
            elif name == "lifecyclestage" and text is not None and text not in LIFECYCLE_STAGES:
                code, msg = "INVALID_OPTION", f"{text} was not one of the allowed options"
            else:
                out[name] = text
                continue
        errors.append({"message": msg, "code": code, "context": {"propertyName": [name]}})
    if errors:
        joined = ", ".join(e["message"] for e in errors)
        return _error(400, "VALIDATION_ERROR", f"Property values were not valid: {joined}", errors)
    email = out.get("email")
    if email:
        existing = portal.by_email.get(email.lower())
        if existing is not None and existing != own_id:
            return _error(409, "CONFLICT", f"Contact already exists. Existing ID: {existing}")
    return out


# --- CRM v3 contacts -------------------------------------------------------------------------


async def list_contacts(request: web.Request) -> web.Response:
    portal = _portal(request)
    limit = _int_param(request, "limit", 10, MAX_LIMIT)
    if isinstance(limit, web.Response):
        return limit
    after = request.query.get("after")
    if after is not None and not after.isdigit():
        return _error(400, "VALIDATION_ERROR", "Invalid input: after is not a valid cursor")
    start = bisect.bisect_left(portal.ids, int(after)) if after else 0
    page = portal.ids[start : start + limit]
    wanted = _wanted(request)
    body: dict[str, Any] = {"results": [portal.contacts[i].to_v3(wanted) for i in page]}
    if start + limit < len(portal.ids):
        nxt = str(portal.ids[start + limit])
        link = request.url.update_query(after=nxt)
        body["paging"] = {"next": {"after": nxt, "link": str(link)}}
    return _json(body)


def _find(portal: Portal, request: web.Request) -> ContactRecord | None:
    key = request.match_info["contact_id"]
    if request.query.get("idProperty") == "email":
        found = portal.by_email.get(key.lower())
        return portal.contacts.get(found) if found is not None else None
    return portal.contacts.get(int(key)) if key.isdigit() else None


async def get_contact(request: web.Request) -> web.Response:
    record = _find(_portal(request), request)
    if record is None:
        return _not_found("resource")
    return _json(record.to_v3(_wanted(request)))


async def create_contact(request: web.Request) -> web.Response:
    portal = _portal(request)
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    props = _check_properties(portal, body, None)
    if isinstance(props, web.Response):
        return props
    record = portal.create(props)
    return _json(record.to_v3(tuple(props)), 201)


async def update_contact(request: web.Request) -> web.Response:
    portal = _portal(request)
    record = _find(portal, request)
    if record is None:
        return _not_found("resource")
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    props = _check_properties(portal, body, record.id)
    if isinstance(props, web.Response):
        return props
    portal.update(record, props)
    return _json(record.to_v3(tuple(props)))


_OPERATORS: dict[str, Callable[[str | None, str], bool]] = {
    "EQ": lambda have, want: have is not None and have.lower() == want.lower(),
    "NEQ": lambda have, want: have is None or have.lower() != want.lower(),
    "HAS_PROPERTY": lambda have, _: have is not None,
    "NOT_HAS_PROPERTY": lambda have, _: have is None,
}


async def search_contacts(request: web.Request) -> web.Response:
    """Filters in a group are ANDed, groups are ORed (at most 5 groups of 6 filters)."""
    portal = _portal(request)
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    if not isinstance(body, dict):
        return _error(400, "VALIDATION_ERROR", "Invalid input JSON")
    groups = body.get("filterGroups", [])
    limit = body.get("limit", 10)
    after = str(body.get("after", "0"))
    if not isinstance(groups, list) or len(groups) > 5:
        return _error(400, "VALIDATION_ERROR", "filterGroups must be a list of at most 5 groups")
    if not isinstance(limit, int) or not 1 <= limit <= 200 or not after.isdigit():
        return _error(400, "VALIDATION_ERROR", "limit must be 1..200 and after a number")
    parsed: list[list[tuple[str, Callable[[str | None, str], bool], str]]] = []
    for group in groups:
        filters = group.get("filters") if isinstance(group, dict) else None
        if not isinstance(filters, list) or len(filters) > 6:
            return _error(400, "VALIDATION_ERROR", "each filter group needs at most 6 filters")
        clauses = []
        for f in filters:
            op = _OPERATORS.get(f.get("operator", "")) if isinstance(f, dict) else None
            if op is None or not isinstance(f.get("propertyName"), str):
                return _error(400, "VALIDATION_ERROR", f"Unsupported filter: {f}")
            clauses.append((f["propertyName"], op, str(f.get("value", ""))))
        parsed.append(clauses)
    props = body.get("properties")
    wanted = tuple(props) if isinstance(props, list) and props else DEFAULT_PROPERTIES
    hits = [
        portal.contacts[i]
        for i in portal.ids
        if not parsed
        or any(all(op(portal.contacts[i].properties.get(n), v) for n, op, v in g) for g in parsed)
    ]
    start = int(after)
    out: dict[str, Any] = {
        "total": len(hits),
        "results": [c.to_v3(wanted) for c in hits[start : start + limit]],
    }
    if start + limit < len(hits):
        out["paging"] = {"next": {"after": str(start + limit)}}
    return _json(out)


# --- v1 lists --------------------------------------------------------------------------------


def _list_of(request: web.Request) -> ListRecord | None:
    key = request.match_info["list_id"]
    return _portal(request).lists.get(int(key)) if key.isdigit() else None


async def get_lists(request: web.Request) -> web.Response:
    portal = _portal(request)
    count = _int_param(request, "count", 20, 250)
    if isinstance(count, web.Response):
        return count
    raw = request.query.get("offset", "0")
    offset = int(raw) if raw.isdigit() else 0
    ordered = sorted(portal.lists)
    page = ordered[offset : offset + count]
    return _json(
        {
            "lists": [portal.lists[i].to_v1() for i in page],
            "offset": offset + len(page),
            "has-more": offset + count < len(ordered),
        }
    )


async def get_list(request: web.Request) -> web.Response:
    lst = _list_of(request)
    if lst is None:
        return _not_found("list")
    return _json(lst.to_v1())


def _membership(add: bool) -> Handler:
    async def view(request: web.Request) -> web.Response:
        portal = _portal(request)
        lst = _list_of(request)
        if lst is None:
            return _not_found("list")
        body = await _body(request)
        if isinstance(body, web.Response):
            return body
        vids = body.get("vids", []) if isinstance(body, dict) else None
        emails = body.get("emails", []) if isinstance(body, dict) else None
        if (
            not isinstance(vids, list)
            or not isinstance(emails, list)
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in vids)
            or not all(isinstance(e, str) for e in emails)
            or len(vids) + len(emails) > 500
        ):
            return _error(400, "VALIDATION_ERROR", "vids must be integers, emails strings, 500 max")
        updated: list[int] = []
        discarded: list[int] = []
        invalid_vids = [v for v in vids if v not in portal.contacts]
        invalid_emails = [e for e in emails if e.lower() not in portal.by_email]
        targets = [v for v in vids if v in portal.contacts]
        targets += [portal.by_email[e.lower()] for e in emails if e.lower() in portal.by_email]
        now = _now_ms()
        for vid in dict.fromkeys(targets):
            if add and vid not in lst.members:
                lst.members[vid] = now
                updated.append(vid)
            elif not add and vid in lst.members:
                del lst.members[vid]
                updated.append(vid)
            else:
                discarded.append(vid)
        if updated:
            lst.updated_ms = now
        return _json(
            {
                "updated": updated,
                "discarded": discarded,
                "invalidVids": invalid_vids,
                "invalidEmails": invalid_emails,
            }
        )

    return view


async def list_members(request: web.Request) -> web.Response:
    portal = _portal(request)
    lst = _list_of(request)
    if lst is None:
        return _not_found("list")
    count = _int_param(request, "count", 20, MAX_LIMIT)
    if isinstance(count, web.Response):
        return count
    raw = request.query.get("vidOffset", "0")
    if not raw.isdigit():
        return _error(400, "VALIDATION_ERROR", "vidOffset must be a contact vid")
    members = sorted(v for v in lst.members if v > int(raw))
    page = members[:count]
    return _json(
        {
            "contacts": [portal.contacts[v].to_v1(lst.members[v]) for v in page],
            "has-more": len(members) > count,
            "vid-offset": page[-1] if page else int(raw),
        }
    )


# --- email: transactional sends and events ---------------------------------------------------


async def single_send(request: web.Request) -> web.Response:
    """Queue one transactional email; an unknown recipient becomes a contact, as in HubSpot."""
    portal = _portal(request)
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    if not isinstance(body, dict):
        return _error(400, "VALIDATION_ERROR", "Invalid input JSON")
    email_id = body.get("emailId")
    message = body.get("message")
    to = message.get("to") if isinstance(message, dict) else None
    if not isinstance(email_id, int) or email_id not in EMAILS:
        return _error(400, "VALIDATION_ERROR", f"Email {email_id} does not exist or is not live")
    if not isinstance(to, str) or not EMAIL_RE.match(to):
        return _error(400, "VALIDATION_ERROR", "message.to must be a valid email address")
    extra = body.get("contactProperties") or {}
    if not isinstance(extra, dict):
        return _error(400, "VALIDATION_ERROR", "contactProperties must be an object")
    if to.lower() not in portal.by_email:
        props = _check_properties(portal, {"properties": {**extra, "email": to}}, None)
        if isinstance(props, web.Response):
            return props
        portal.create(props)
    now = _now_ms()
    status_id = str(uuid.uuid4())
    events = portal.events_of(to)
    events.insert(0, _event(f"{status_id}-s", "SENT", to, now, email_id))
    send = {"statusId": status_id, "status": "PENDING", "requestedAt": _iso(now)}
    portal.sends[status_id] = send
    return _json(send)


def _offset_token(index: int) -> str:
    return base64.urlsafe_b64encode(f"o:{index}".encode()).decode().rstrip("=")


def _offset_index(token: str) -> int | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except ValueError:
        return None
    return int(raw[2:]) if raw.startswith("o:") and raw[2:].isdigit() else None


async def email_events(request: web.Request) -> web.Response:
    portal = _portal(request)
    recipient = request.query.get("recipient")
    limit = _int_param(request, "limit", 100, 1000)
    if isinstance(limit, web.Response):
        return limit
    events = portal.events_of(recipient) if recipient else []
    kind = request.query.get("eventType")
    if kind:
        events = [e for e in events if e["type"] == kind]
    start = 0
    if "offset" in request.query:
        index = _offset_index(request.query["offset"])
        if index is None:
            return _error(400, "VALIDATION_ERROR", "Invalid offset")
        start = index
    page = events[start : start + limit]
    more = start + limit < len(events)
    out: dict[str, Any] = {"hasMore": more, "events": page}
    if more:
        out["offset"] = _offset_token(start + limit)
    return _json(out)


def create_app() -> web.Application:
    app = web.Application(middlewares=[_auth])
    app[PORTAL] = Portal.seeded()
    contacts = "/crm/v3/objects/contacts"
    app.add_routes(
        [
            web.get(contacts, list_contacts),
            web.post(contacts, create_contact),
            web.post(f"{contacts}/search", search_contacts),
            web.get(f"{contacts}/{{contact_id}}", get_contact),
            web.patch(f"{contacts}/{{contact_id}}", update_contact),
            web.get("/contacts/v1/lists", get_lists),
            web.get("/contacts/v1/lists/{list_id}", get_list),
            web.post("/contacts/v1/lists/{list_id}/add", _membership(add=True)),
            web.post("/contacts/v1/lists/{list_id}/remove", _membership(add=False)),
            web.get("/contacts/v1/lists/{list_id}/contacts/all", list_members),
            web.post("/marketing/v3/transactional/single-email/send", single_send),
            web.get("/email/public/v1/events", email_events),
        ]
    )
    return app
