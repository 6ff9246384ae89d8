"""Sandbox of the marketing automation platform, imitating HubSpot's public APIs.

CRM v3 contacts (string-valued ``properties``, ``paging.next.after`` cursors, search with filter
groups, batch read), the v3 lists API (lists by id, by name and by search; memberships paged by
``after`` and changed with ``PUT .../memberships/add|remove``; the v1 contact lists API was
sunset by HubSpot and answers 404 here as there), transactional single sends and the v1 email
events API (``hasMore``/``offset``). Errors carry HubSpot's shape: ``status``, ``message``,
``category``, ``correlationId``, ``errors``.

The private app's limit is HubSpot's: 190 requests per rolling ten seconds, every answer
carrying ``X-HubSpot-RateLimit-*`` headers and a request over it a 429 with
``policyName: TEN_SECONDLY_ROLLING``. ``/__ratelimit`` shows and changes it.
"""

from __future__ import annotations

import base64
import bisect
import math
import re
import time
import uuid
from collections import deque
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
CONTACT_TYPE = "0-1"
"""HubSpot's objectTypeId of contacts."""
RATE_MAX = 190
RATE_INTERVAL_MS = 10_000
DAILY_MAX = 1_000_000
MAX_LIST_SEARCH = 500
MAX_MEMBERSHIPS = 250
MAX_BATCH_READ = 100
LIST_SEARCH_FIELDS = frozenset(
    {"listIds", "offset", "query", "count", "processingTypes", "additionalProperties", "sort"}
)
BATCH_READ_FIELDS = frozenset({"properties", "propertiesWithHistory", "idProperty", "inputs"})
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


@dataclass(slots=True)
class ListRecord:
    id: int
    name: str
    created_ms: int
    updated_ms: int
    members: dict[int, int] = field(default_factory=dict)  # vid -> addedAt (ms)

    def to_v3(self) -> dict[str, Any]:
        """A ``PublicObjectList`` (``GET /crm/v3/lists/{listId}``)."""
        return {
            "listId": str(self.id),
            "listVersion": 1,
            "name": self.name,
            "objectTypeId": CONTACT_TYPE,
            "processingType": "MANUAL",
            "processingStatus": "COMPLETE",
            "size": len(self.members),
            "createdAt": _iso(self.created_ms),
            "updatedAt": _iso(self.updated_ms),
            "createdById": "1",
            "updatedById": "1",
        }

    def to_search_result(self) -> dict[str, Any]:
        """A ``PublicObjectListSearchResult``: the size among ``additionalProperties``."""
        out = self.to_v3()
        size = out.pop("size")
        out["additionalProperties"] = {
            "hs_list_size": str(size),
            "hs_last_record_added_at": out["updatedAt"],
        }
        return out


@dataclass
class RollingLimit:
    """HubSpot's per-app limit: at most ``max`` requests in any rolling ``interval_ms``."""

    max: int = RATE_MAX
    interval_ms: int = RATE_INTERVAL_MS
    log: deque[float] = field(default_factory=deque)
    throttled: int = 0
    daily_used: int = 0

    def check(self, now: float) -> float | None:
        """None if the request may pass (and is counted), else seconds until it would."""
        window = self.interval_ms / 1000
        while self.log and self.log[0] <= now - window:
            self.log.popleft()
        if len(self.log) >= self.max:
            self.throttled += 1
            return self.log[0] + window - now
        self.log.append(now)
        self.daily_used += 1
        return None

    def headers(self) -> dict[str, str]:
        return {
            "X-HubSpot-RateLimit-Max": str(self.max),
            "X-HubSpot-RateLimit-Remaining": str(max(0, self.max - len(self.log))),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(self.interval_ms),
            "X-HubSpot-RateLimit-Daily": str(DAILY_MAX),
            "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, DAILY_MAX - self.daily_used)),
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
LIMIT = web.AppKey("rate_limit", RollingLimit)


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
    limit = request.app[LIMIT]
    wait = limit.check(time.monotonic())
    if wait is not None:
        resp: web.StreamResponse = _json(
            {
                "status": "error",
                "message": "You have reached your ten_secondly_rolling limit.",
                "errorType": "RATE_LIMIT",
                "correlationId": str(uuid.uuid4()),
                "policyName": "TEN_SECONDLY_ROLLING",
                "groupName": f"api:{PORTAL_ID}",
            },
            429,
        )
        resp.headers["Retry-After"] = str(max(1, math.ceil(wait)))
    else:
        resp = await handler(request)
    resp.headers.update(limit.headers())
    return resp


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


async def batch_read(request: web.Request) -> web.Response:
    """``POST /crm/v3/objects/contacts/batch/read``: up to 100 ids (or emails with
    ``idProperty``); ids not found make it a 207 with ``errors``, as HubSpot answers."""
    portal = _portal(request)
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    if not isinstance(body, dict):
        return _error(400, "VALIDATION_ERROR", "Invalid input JSON: expected an object")
    unknown = sorted(set(body) - BATCH_READ_FIELDS)
    if unknown:
        return _error(
            400, "VALIDATION_ERROR", f'Invalid input JSON: Unrecognized field "{unknown[0]}"'
        )
    missing = [k for k in ("inputs", "properties", "propertiesWithHistory") if k not in body]
    if missing:
        return _error(400, "VALIDATION_ERROR", f"Invalid input JSON: {missing[0]} is required")
    inputs, props = body["inputs"], body["properties"]
    if (
        not isinstance(inputs, list)
        or not all(isinstance(i, dict) and isinstance(i.get("id"), str) for i in inputs)
        or not isinstance(props, list)
        or not all(isinstance(p, str) for p in props)
    ):
        return _error(400, "VALIDATION_ERROR", "inputs must be [{id}] and properties strings")
    if len(inputs) > MAX_BATCH_READ:
        return _error(400, "VALIDATION_ERROR", f"Batch input limit of {MAX_BATCH_READ} exceeded")
    by_email = body.get("idProperty") == "email"
    wanted = tuple(props) or DEFAULT_PROPERTIES
    found: list[dict[str, Any]] = []
    not_found: list[str] = []
    for item in inputs:
        key = item["id"]
        cid = (
            portal.by_email.get(key.lower()) if by_email else (int(key) if key.isdigit() else None)
        )
        record = portal.contacts.get(cid) if cid is not None else None
        if record is None:
            not_found.append(key)
        else:
            found.append(record.to_v3(wanted))
    now = _iso(_now_ms())
    out: dict[str, Any] = {
        "status": "COMPLETE",
        "results": found,
        "startedAt": now,
        "completedAt": now,
    }
    if not not_found:
        return _json(out)
    out["numErrors"] = 1
    out["errors"] = [
        {
            "status": "error",
            "category": "OBJECT_NOT_FOUND",
            "message": "Could not get some CONTACT objects, they may be deleted or not exist.",
            "context": {"ids": not_found},
            "links": {},
            "errors": [],
        }
    ]
    return _json(out, 207)


# --- v3 lists --------------------------------------------------------------------------------


def _list_missing(key: str) -> web.Response:
    return _error(404, "OBJECT_NOT_FOUND", f"List does not exist with ID {key}.")


def _list_of(request: web.Request) -> ListRecord | web.Response:
    key = request.match_info["list_id"]
    found = _portal(request).lists.get(int(key)) if key.isdigit() else None
    return found if found is not None else _list_missing(key)


async def get_list(request: web.Request) -> web.Response:
    lst = _list_of(request)
    if isinstance(lst, web.Response):
        return lst
    return _json({"list": lst.to_v3()})


async def list_by_name(request: web.Request) -> web.Response:
    """``GET /crm/v3/lists/object-type-id/{objectTypeId}/name/{listName}``: exact name."""
    type_id, name = request.match_info["object_type"], request.match_info["name"]
    found = next((lst for lst in _portal(request).lists.values() if lst.name == name), None)
    if found is None or type_id != CONTACT_TYPE:
        return _error(
            404, "OBJECT_NOT_FOUND", f"List does not exist with name {name} and type {type_id}."
        )
    return _json({"list": found.to_v3()})


async def search_lists(request: web.Request) -> web.Response:
    """``POST /crm/v3/lists/search``: by name (contains, case-insensitive) or every list,
    ``offset``/``count`` paged (count at most 500, 20 by default)."""
    portal = _portal(request)
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    if not isinstance(body, dict):
        return _error(400, "VALIDATION_ERROR", "Invalid input JSON: expected an object")
    unknown = sorted(set(body) - LIST_SEARCH_FIELDS)
    if unknown:
        return _error(
            400, "VALIDATION_ERROR", f'Invalid input JSON: Unrecognized field "{unknown[0]}"'
        )
    count, offset = body.get("count", 20), body.get("offset", 0)
    query = body.get("query") or ""
    if (
        isinstance(count, bool)
        or not isinstance(count, int)
        or not 1 <= count <= MAX_LIST_SEARCH
        or isinstance(offset, bool)
        or not isinstance(offset, int)
        or offset < 0
        or not isinstance(query, str)
    ):
        return _error(
            400, "VALIDATION_ERROR", f"count must be 1..{MAX_LIST_SEARCH}, offset 0 or more"
        )
    types = body.get("processingTypes")
    hits = [
        portal.lists[i]
        for i in sorted(portal.lists)
        if query.lower() in portal.lists[i].name.lower() and (not types or "MANUAL" in types)
    ]
    page = hits[offset : offset + count]
    return _json(
        {
            "lists": [lst.to_search_result() for lst in page],
            "offset": offset + len(page),
            "hasMore": offset + count < len(hits),
            "total": len(hits),
        }
    )


def _membership(add: bool) -> Handler:
    """``PUT /crm/v3/lists/{listId}/memberships/add|remove`` with a JSON array of record ids.
    Records that do not exist are named in ``recordIdsMissing``; those already in (or not in)
    the list are ignored, as HubSpot does."""

    async def view(request: web.Request) -> web.Response:
        portal = _portal(request)
        lst = _list_of(request)
        if isinstance(lst, web.Response):
            return lst
        body = await _body(request)
        if isinstance(body, web.Response):
            return body
        if not isinstance(body, list) or not all(isinstance(v, str) and v.isdigit() for v in body):
            return _error(
                400, "VALIDATION_ERROR", "Invalid input JSON: expected an array of record ids"
            )
        if len(body) > 100_000:
            return _error(400, "VALIDATION_ERROR", "At most 100000 record ids per request")
        changed: list[str] = []
        missing: list[str] = []
        now = _now_ms()
        for raw in dict.fromkeys(body):
            rid = int(raw)
            if rid not in portal.contacts:
                missing.append(raw)
            elif add and rid not in lst.members:
                lst.members[rid] = now
                changed.append(raw)
            elif not add and rid in lst.members:
                del lst.members[rid]
                changed.append(raw)
        if changed:
            lst.updated_ms = now
        return _json(
            {
                "recordIdsRemoved": [] if add else changed,
                "recordsIdsAdded": changed if add else [],
                "recordIdsMissing": missing,
            }
        )

    return view


async def list_memberships(request: web.Request) -> web.Response:
    """``GET /crm/v3/lists/{listId}/memberships``: record ids in ascending order,
    ``limit`` (at most 250, 100 by default) and ``after`` paging."""
    lst = _list_of(request)
    if isinstance(lst, web.Response):
        return lst
    limit = _int_param(request, "limit", 100, MAX_MEMBERSHIPS)
    if isinstance(limit, web.Response):
        return limit
    after = request.query.get("after", "0")
    if not after.isdigit():
        return _error(400, "VALIDATION_ERROR", "Invalid input: after is not a valid cursor")
    members = sorted(v for v in lst.members if v > int(after))
    page = members[:limit]
    body: dict[str, Any] = {
        "results": [
            {"recordId": str(v), "membershipTimestamp": _iso(lst.members[v])} for v in page
        ],
        "total": len(lst.members),
    }
    if len(members) > limit:
        nxt = str(page[-1])
        body["paging"] = {"next": {"after": nxt, "link": str(request.url.update_query(after=nxt))}}
    return _json(body)


# --- control ---------------------------------------------------------------------------------


async def get_ratelimit(request: web.Request) -> web.Response:
    limit = request.app[LIMIT]
    return _json(
        {
            "max": limit.max,
            "interval_ms": limit.interval_ms,
            "throttled": limit.throttled,
            "in_window": len(limit.log),
        }
    )


async def set_ratelimit(request: web.Request) -> web.Response:
    """Change the limit (``max``, ``interval_ms``); it also empties the current window."""
    limit = request.app[LIMIT]
    try:
        data = orjson.loads(await request.read())
        values = {k: data[k] for k in ("max", "interval_ms") if k in data}
        if not values or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values.values()
        ):
            raise ValueError(values)
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return _json({"error": "max and interval_ms must be positive integers"}, 400)
    limit.max = values.get("max", limit.max)
    limit.interval_ms = values.get("interval_ms", limit.interval_ms)
    limit.log.clear()
    return await get_ratelimit(request)


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
    app[LIMIT] = RollingLimit()
    contacts = "/crm/v3/objects/contacts"
    app.add_routes(
        [
            web.get(contacts, list_contacts),
            web.post(contacts, create_contact),
            web.post(f"{contacts}/search", search_contacts),
            web.get(f"{contacts}/{{contact_id}}", get_contact),
            web.patch(f"{contacts}/{{contact_id}}", update_contact),
            web.post(f"{contacts}/batch/read", batch_read),
            web.post("/crm/v3/lists/search", search_lists),
            web.get("/crm/v3/lists/object-type-id/{object_type}/name/{name}", list_by_name),
            web.get("/crm/v3/lists/{list_id}", get_list),
            web.put("/crm/v3/lists/{list_id}/memberships/add", _membership(add=True)),
            web.put("/crm/v3/lists/{list_id}/memberships/remove", _membership(add=False)),
            web.get("/crm/v3/lists/{list_id}/memberships", list_memberships),
            web.post("/marketing/v3/transactional/single-email/send", single_send),
            web.get("/email/public/v1/events", email_events),
            web.get("/__ratelimit", get_ratelimit),
            web.post("/__ratelimit", set_ratelimit),
        ]
    )
    return app
