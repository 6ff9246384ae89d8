"""Sandbox helpdesk imitating Zendesk: ``/api/v2/*.json``, basic token auth, cursor pagination,
the unified search (``/api/v2/search.json``) and a strict account-wide rate limit answered with
429 + Retry-After. Every answer carries the limit in Zendesk's headers (``X-Rate-Limit``,
``X-Rate-Limit-Remaining``, ``ratelimit-limit``/``-remaining``/``-reset``) and every record's
``url`` is absolute, as Zendesk writes them.

The limit is a sliding log of the last second's accepted requests; ``GET /__ratelimit`` shows
how many 429s were sent so tests can prove the client's pacer kept us under it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import itertools
import math
import time
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web

from . import seed

USERNAME = "trellis@example.com/token"
TOKEN = "support-sandbox-token"  # noqa: S105 - the sandbox's published API token
TICKETS = 2000
MAX_PAGE = 100
AGENT_ID = 361_000_001
STATUSES = ("new", "open", "pending", "hold", "solved", "closed")
PRIORITIES = ("low", "normal", "high", "urgent")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Json = dict[str, Any]

_SUBJECTS = (
    "Invoice {n} shows the wrong amount",
    "Cannot log in to the portal",
    "Order {n} arrived damaged",
    "Where is my delivery for order {n}?",
    "Please update my billing address",
    "Question about bulk pricing",
    "Refund request for order {n}",
    "API returns 500 on export",
)
_REPLIES = (
    "Thanks for reaching out, we are looking into it.",
    "Could you send us a photo of the item?",
    "This has been fixed, please confirm.",
    "We have escalated this to the warehouse team.",
)


class ZendeskError(Exception):
    def __init__(self, status: int, body: Json, headers: dict[str, str] | None = None) -> None:
        super().__init__(body.get("error", "error"))
        self.status, self.body, self.headers = status, body, headers


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, headers=headers, content_type="application/json"
    )


def _not_found() -> ZendeskError:
    return ZendeskError(404, {"error": "RecordNotFound", "description": "Not found"})


def _invalid(field_name: str, description: str, error: str = "InvalidValue") -> ZendeskError:
    return ZendeskError(
        422,
        {
            "error": "RecordInvalid",
            "description": "Record validation errors",
            "details": {field_name: [{"description": description, "error": error}]},
        },
    )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- state -----------------------------------------------------------------------------------


@dataclass
class RateLimiter:
    """Sliding one-second log over the whole account (Zendesk counts per account)."""

    per_second: int
    log: deque[float] = field(default_factory=deque)
    throttled: int = 0

    def check(self, now: float) -> float | None:
        """None if the request may pass (and is logged), else seconds until it would."""
        while self.log and self.log[0] <= now - 1.0:
            self.log.popleft()
        if len(self.log) >= self.per_second:
            self.throttled += 1
            return self.log[0] + 1.0 - now
        self.log.append(now)
        return None


@dataclass
class SupportState:
    users: dict[int, Json] = field(default_factory=dict)
    emails: dict[str, int] = field(default_factory=dict)
    tickets: dict[int, Json] = field(default_factory=dict)
    ticket_ids: list[int] = field(default_factory=list)  # ascending
    requested: dict[int, list[int]] = field(default_factory=dict)
    comments: dict[int, list[Json]] = field(default_factory=dict)
    idempotency: dict[str, tuple[bytes, int, bytes]] = field(default_factory=dict)
    user_seq: Iterator[int] = field(default_factory=lambda: itertools.count(362_000_001))
    comment_seq: Iterator[int] = field(default_factory=lambda: itertools.count(20_000_000_001))

    def add_user(self, user: Json) -> Json:
        self.users[user["id"]] = user
        if user.get("email"):
            self.emails[user["email"].lower()] = user["id"]
        return user

    def add_ticket(self, ticket: Json, comments: list[Json]) -> Json:
        self.tickets[ticket["id"]] = ticket
        self.ticket_ids.append(ticket["id"])
        self.requested.setdefault(ticket["requester_id"], []).append(ticket["id"])
        self.comments[ticket["id"]] = comments
        return ticket


SUPPORT = web.AppKey("support", SupportState)
RATELIMIT = web.AppKey("ratelimit", RateLimiter)


def _user(
    ident: int, name: str, email: str | None, external_id: str | None, role: str, created: float
) -> Json:
    return {
        "id": ident,
        "url": f"/api/v2/users/{ident}.json",
        "name": name,
        "email": email,
        "external_id": external_id,
        "role": role,
        "active": True,
        "verified": True,
        "time_zone": "UTC",
        "tags": [],
        "created_at": _iso(created),
        "updated_at": _iso(created),
    }


def _comment(ident: int, author: int, body: str, created: float, public: bool = True) -> Json:
    return {
        "id": ident,
        "type": "Comment",
        "author_id": author,
        "body": body,
        "plain_body": body,
        "public": public,
        "attachments": [],
        "via": {"channel": "api"},
        "created_at": _iso(created),
    }


def _ticket(
    ident: int,
    requester: int,
    subject: str,
    description: str,
    status: str,
    priority: str | None,
    tags: list[str],
    created: float,
    updated: float,
) -> Json:
    return {
        "id": ident,
        "url": f"/api/v2/tickets/{ident}.json",
        "external_id": None,
        "type": None,
        "subject": subject,
        "raw_subject": subject,
        "description": description,
        "priority": priority,
        "status": status,
        "requester_id": requester,
        "submitter_id": requester,
        "assignee_id": AGENT_ID if status != "new" else None,
        "organization_id": None,
        "group_id": None,
        "tags": tags,
        "via": {"channel": "web"},
        "custom_fields": [],
        "created_at": _iso(created),
        "updated_at": _iso(updated),
    }


def seed_state() -> SupportState:
    """Every seed person as an end user, one agent, ~2,000 tickets with 1-3 comments each."""
    state = SupportState()
    state.add_user(
        _user(
            AGENT_ID,
            "Trellis Support Agent",
            "agent@trellis.example.com",
            None,
            "agent",
            1_735_689_600,
        )
    )
    for p in seed.people():
        state.add_user(
            _user(
                p.support_user_id,
                p.name,
                p.email,
                p.crm_contact_id,
                "end-user",
                1_735_689_600 + p.index * 3_600,
            )
        )
    r = seed.rng("support")
    ppl = seed.people()
    comment_id = itertools.count(10_000_000_001)
    for n in range(1, TICKETS + 1):
        person = ppl[r.randrange(len(ppl))]
        subject = r.choice(_SUBJECTS).format(n=4_500_000_000 + r.randint(1, seed.ORDERS))
        status = r.choices(STATUSES, weights=(2, 4, 2, 1, 5, 6))[0]
        priority = r.choice((None, "low", "normal", "normal", "high", "urgent"))
        created = 1_767_225_600 + r.randrange(0, 320 * 86_400)  # 2026
        body = f"Hello, {subject.lower()}. Ticket from {person.first_name}."
        comments = [_comment(next(comment_id), person.support_user_id, body, created)]
        for k in range(r.randint(0, 2)):
            comments.append(
                _comment(
                    next(comment_id),
                    AGENT_ID,
                    r.choice(_REPLIES),
                    created + (k + 1) * 3_600,
                    public=r.random() < 0.8,
                )
            )
        tags = sorted(
            r.sample(("billing", "shipping", "login", "vip", "api", "refund"), r.randint(0, 2))
        )
        state.add_ticket(
            _ticket(
                n,
                person.support_user_id,
                subject,
                body,
                status,
                priority,
                tags,
                created,
                created + (len(comments) - 1) * 3_600,
            ),
            comments,
        )
    return state


# --- middleware ------------------------------------------------------------------------------


def _basic_ok(header: str) -> bool:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(decoded, f"{USERNAME}:{TOKEN}".encode())


def zendesk(handler: Handler) -> Handler:
    """Rate limit (the whole account), then auth, then errors in Zendesk's shapes.

    A wrapper rather than a middleware so it runs inside the fault injector: the sandbox's hit
    counters then see throttled requests too.
    """

    async def wrapped(request: web.Request) -> web.StreamResponse:
        limiter: RateLimiter = request.app[RATELIMIT]
        wait = limiter.check(time.monotonic())
        if wait is not None:
            return _json(
                {
                    "error": "APIRateLimitExceeded",
                    "description": "Number of allowed API requests per second exceeded",
                },
                429,
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        if not _basic_ok(request.headers.get("Authorization", "")):
            return _json({"error": "Couldn't authenticate you"}, 401)
        try:
            resp = await handler(request)
        except ZendeskError as exc:
            resp = _json(exc.body, exc.status, exc.headers)
        if isinstance(resp, web.Response) and isinstance(resp.body, bytes):
            origin = f"{request.scheme}://{request.host}".encode()
            resp.body = resp.body.replace(b'"url":"/api/v2/', b'"url":"' + origin + b"/api/v2/")
        remaining = str(max(0, limiter.per_second - len(limiter.log)))
        resp.headers.update(
            {
                "X-Rate-Limit": str(limiter.per_second),
                "X-Rate-Limit-Remaining": remaining,
                "ratelimit-limit": str(limiter.per_second),
                "ratelimit-remaining": remaining,
                "ratelimit-reset": "1",
            }
        )
        return resp

    return wrapped


def _state(request: web.Request) -> SupportState:
    state: SupportState = request.app[SUPPORT]
    return state


async def _body(request: web.Request, root: str) -> Json:
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise ZendeskError(
            400, {"error": "Unprocessable Entity", "description": "Invalid JSON body"}
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get(root), dict):
        raise _invalid(root, f"{root.capitalize()}: is required", "BlankValue")
    inner: Json = data[root]
    return inner


def _int_id(raw: str) -> int:
    if not raw.isdigit() or len(raw) > 18:
        raise _not_found()
    return int(raw)


# --- cursor pagination -----------------------------------------------------------------------


def _encode_cursor(ident: int) -> str:
    return base64.urlsafe_b64encode(f"i{ident}".encode()).decode().rstrip("=")


def _decode_cursor(raw: str) -> int:
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        if not text.startswith("i"):
            raise ValueError(text)
        return int(text[1:])
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise ZendeskError(
            400, {"error": "InvalidPaginationParameter", "description": "cursor is invalid"}
        ) from exc


def _cursor_page(
    request: web.Request, root: str, ids: list[int], render: Callable[[int], Json]
) -> web.Response:
    """Zendesk cursor pagination over ascending ``ids``: ``page[size]``, ``page[after|before]``."""
    q = request.query
    raw_size = q.get("page[size]", str(MAX_PAGE))
    if not raw_size.isdigit() or not 1 <= int(raw_size) <= MAX_PAGE:
        raise ZendeskError(
            400,
            {
                "error": "InvalidPaginationParameter",
                "description": f"page[size] must be 1..{MAX_PAGE}",
            },
        )
    size = int(raw_size)
    if "page[before]" in q:
        end = bisect_left(ids, _decode_cursor(q["page[before]"]))
        start = max(0, end - size)
    else:
        start = bisect_right(ids, _decode_cursor(q["page[after]"])) if "page[after]" in q else 0
        end = min(len(ids), start + size)
    chunk = ids[start:end]
    after = _encode_cursor(chunk[-1]) if chunk else None
    before = _encode_cursor(chunk[0]) if chunk else None
    has_more = end < len(ids)
    base = f"{request.scheme}://{request.host}{request.path}?page%5Bsize%5D={size}"
    return _json(
        {
            root: [render(i) for i in chunk],
            "meta": {"has_more": has_more, "after_cursor": after, "before_cursor": before},
            "links": {
                "next": f"{base}&page%5Bafter%5D={after}" if has_more and after else None,
                "prev": f"{base}&page%5Bbefore%5D={before}" if start > 0 and before else None,
            },
        }
    )


# --- idempotency ---------------------------------------------------------------------------


async def _replay(request: web.Request) -> web.Response | None:
    """The stored answer for a reused ``Idempotency-Key`` (Zendesk: ``x-idempotency-lookup``)."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    seen = _state(request).idempotency.get(f"{request.path} {key}")
    if seen is None:
        return None
    fingerprint, status, stored = seen
    if fingerprint != await request.read():
        raise ZendeskError(
            400,
            {
                "error": "IdempotentRequestError",
                "description": "Request parameters do not match the original request with this key",
            },
        )
    return web.Response(
        body=stored,
        status=status,
        content_type="application/json",
        headers={"x-idempotency-lookup": "hit"},
    )


async def _remember(request: web.Request, resp: web.Response) -> web.Response:
    key = request.headers.get("Idempotency-Key")
    if key is not None:
        body = resp.body if isinstance(resp.body, bytes) else b""
        _state(request).idempotency[f"{request.path} {key}"] = (
            await request.read(),
            resp.status,
            body,
        )
        resp.headers["x-idempotency-lookup"] = "miss"
    return resp


# --- users -----------------------------------------------------------------------------------


async def get_user(request: web.Request) -> web.Response:
    user = _state(request).users.get(_int_id(request.match_info["id"]))
    if user is None:
        raise _not_found()
    return _json({"user": user})


async def search_users(request: web.Request) -> web.Response:
    state = _state(request)
    query = request.query.get("query", "").strip()
    external = request.query.get("external_id")
    found: list[Json] = []
    if query.startswith("email:"):
        uid = state.emails.get(query[6:].strip().lower())
        found = [state.users[uid]] if uid is not None else []
    elif external is not None or query.startswith("external_id:"):
        wanted = external if external is not None else query[12:].strip()
        found = [u for u in state.users.values() if u["external_id"] == wanted]
    elif query:
        needle = query.lower()
        found = [
            u
            for u in state.users.values()
            if needle in u["name"].lower() or needle in (u["email"] or "")
        ][:MAX_PAGE]
    else:
        raise ZendeskError(
            400, {"error": "InvalidEndpoint", "description": "query or external_id is required"}
        )
    return _json({"users": found, "next_page": None, "previous_page": None, "count": len(found)})


async def create_user(request: web.Request) -> web.Response:
    state = _state(request)
    replay = await _replay(request)
    if replay is not None:
        return replay
    data = await _body(request, "user")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _invalid("name", "Name: cannot be blank", "BlankValue")
    email = data.get("email")
    if email is not None:
        if not isinstance(email, str) or "@" not in email:
            raise _invalid(
                "email", f"Email: {str(email)[:80]} is not properly formatted", "InvalidFormat"
            )
        if email.lower() in state.emails:
            raise _invalid(
                "email", f"Email: {email} is already being used by another user", "DuplicateValue"
            )
    external_id = data.get("external_id")
    if external_id is not None and not isinstance(external_id, str):
        raise _invalid("external_id", "External ID: is invalid")
    role = data.get("role", "end-user")
    if role not in ("end-user", "agent", "admin"):
        raise _invalid("role", "Role: is invalid")
    user = _user(next(state.user_seq), name.strip(), email, external_id, role, time.time())
    return await _remember(request, _json({"user": state.add_user(user)}, 201))


async def user_tickets(request: web.Request) -> web.Response:
    state = _state(request)
    uid = _int_id(request.match_info["id"])
    if uid not in state.users:
        raise _not_found()
    return _cursor_page(
        request, "tickets", state.requested.get(uid, []), lambda i: state.tickets[i]
    )


# --- search ----------------------------------------------------------------------------------

SEARCH_TYPES = ("ticket", "user")
SEARCH_MAX_RESULTS = 1000
"""Zendesk's search answers at most this many results in total, however many pages."""


def _search_terms(query: str) -> tuple[str | None, dict[str, str], list[str]]:
    """``type:ticket status:open requester:a@b.c words`` -> (type, {property: value}, words)."""
    kind: str | None = None
    props: dict[str, str] = {}
    words: list[str] = []
    for token in query.split():
        name, sep, value = token.partition(":")
        if sep and value:
            if name.lower() == "type":
                kind = value.lower()
            else:
                props[name.lower()] = value.strip('"')
        else:
            words.append(token.lower())
    return kind, props, words


def _user_matches(user: Json, props: dict[str, str], words: list[str]) -> bool:
    for name, value in props.items():
        if name == "email" and (user["email"] or "").lower() != value.lower():
            return False
        if name == "external_id" and user["external_id"] != value:
            return False
        if name == "role" and user["role"] != value:
            return False
        if name not in ("email", "external_id", "role"):
            return False
    text = f"{user['name']} {user['email'] or ''}".lower()
    return all(w in text for w in words)


def _ticket_matches(
    state: SupportState, ticket: Json, props: dict[str, str], words: list[str]
) -> bool:
    for name, value in props.items():
        if name in ("status", "priority") and ticket[name] != value.lower():
            return False
        if name == "requester":
            uid = state.emails.get(value.lower()) if "@" in value else None
            wanted = uid if uid is not None else (int(value) if value.isdigit() else None)
            if ticket["requester_id"] != wanted:
                return False
        if name == "tags" and value not in ticket["tags"]:
            return False
        if name not in ("status", "priority", "requester", "tags"):
            return False
    text = f"{ticket['subject']} {ticket['description']}".lower()
    return all(w in text for w in words)


async def search(request: web.Request) -> web.Response:
    """Zendesk's unified search: results of every type, each with its ``result_type``,
    offset-paged by ``page`` and ``per_page`` (at most 100), 1,000 results at most."""
    state = _state(request)
    q = request.query
    query = q.get("query", "").strip()
    if not query:
        raise ZendeskError(
            400,
            {"error": "InvalidSearchQuery", "description": "query parameter is required"},
        )
    kind, props, words = _search_terms(query)
    if kind is not None and kind not in SEARCH_TYPES:
        return _json(
            {"results": [], "facets": None, "next_page": None, "previous_page": None, "count": 0}
        )
    raw_page, raw_per = q.get("page", "1"), q.get("per_page", str(MAX_PAGE))
    if not raw_page.isdigit() or not raw_per.isdigit() or int(raw_page) < 1:
        raise ZendeskError(
            400, {"error": "InvalidPaginationParameter", "description": "page is invalid"}
        )
    page, per_page = int(raw_page), min(max(int(raw_per), 1), MAX_PAGE)
    found: list[Json] = []
    if kind in (None, "user"):
        found += [
            {**u, "result_type": "user"}
            for u in state.users.values()
            if _user_matches(u, props, words)
        ]
    if kind in (None, "ticket"):
        found += [
            {**state.tickets[i], "result_type": "ticket"}
            for i in state.ticket_ids
            if _ticket_matches(state, state.tickets[i], props, words)
        ]
    found = found[:SEARCH_MAX_RESULTS]
    start = (page - 1) * per_page
    if start >= SEARCH_MAX_RESULTS and found:
        raise ZendeskError(
            422,
            {
                "error": "InvalidPaginationParameter",
                "description": f"Search results are limited to {SEARCH_MAX_RESULTS}",
            },
        )
    chunk = found[start : start + per_page]
    base = f"{request.scheme}://{request.host}{request.path}"
    params = {"query": query, "per_page": str(per_page)}

    def link(n: int) -> str:
        return f"{base}?{urlencode({**params, 'page': str(n)})}"

    return _json(
        {
            "results": chunk,
            "facets": None,
            "next_page": link(page + 1) if start + per_page < len(found) else None,
            "previous_page": link(page - 1) if page > 1 and found else None,
            "count": len(found),
        }
    )


# --- tickets ---------------------------------------------------------------------------------


async def list_tickets(request: web.Request) -> web.Response:
    state = _state(request)
    return _cursor_page(request, "tickets", state.ticket_ids, lambda i: state.tickets[i])


def _ticket_or_404(request: web.Request) -> Json:
    ticket = _state(request).tickets.get(_int_id(request.match_info["id"]))
    if ticket is None:
        raise _not_found()
    return ticket


async def get_ticket(request: web.Request) -> web.Response:
    return _json({"ticket": _ticket_or_404(request)})


def _priority(data: Json) -> str | None:
    priority = data.get("priority")
    if priority is not None and priority not in PRIORITIES:
        raise _invalid("priority", f"Priority: {str(priority)[:40]} is not valid")
    return priority


def _tags(data: Json, default: list[str]) -> list[str]:
    tags = data.get("tags", default)
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise _invalid("tags", "Tags: must be a list of strings")
    return sorted({t.lower().replace(" ", "_") for t in tags})


async def create_ticket(request: web.Request) -> web.Response:
    """Zendesk honours ``Idempotency-Key`` on ticket creation (the sandbox also on users)."""
    state = _state(request)
    replay = await _replay(request)
    if replay is not None:
        return replay
    data = await _body(request, "ticket")
    comment = data.get("comment")
    body = comment.get("body") if isinstance(comment, dict) else None
    if body is None and comment is None:  # Zendesk takes ``description`` as the first comment
        body = data.get("description")
    if not isinstance(body, str) or not body.strip():
        raise _invalid("base", "Description: cannot be blank", "BlankValue")
    subject = data.get("subject") or body.strip().splitlines()[0][:80]
    if not isinstance(subject, str):
        raise _invalid("subject", "Subject: is invalid")
    requester = data.get("requester_id")
    if (
        isinstance(requester, bool)
        or not isinstance(requester, int)
        or requester not in state.users
    ):
        raise _invalid("requester", "Requester: is invalid", "InvalidValue")
    status = data.get("status", "new")
    if status not in STATUSES or status == "closed":
        raise _invalid("status", f"Status: {str(status)[:40]} is not valid")
    now = time.time()
    ident = state.ticket_ids[-1] + 1 if state.ticket_ids else 1
    ticket = _ticket(
        ident, requester, subject, body, status, _priority(data), _tags(data, []), now, now
    )
    ticket["via"] = {"channel": "api"}
    public = comment.get("public", True) if isinstance(comment, dict) else True
    state.add_ticket(
        ticket, [_comment(next(state.comment_seq), requester, body, now, bool(public))]
    )
    resp = _json({"ticket": ticket, "audit": {"ticket_id": ident, "created_at": _iso(now)}}, 201)
    return await _remember(request, resp)


async def update_ticket(request: web.Request) -> web.Response:
    state = _state(request)
    ticket = _ticket_or_404(request)
    data = await _body(request, "ticket")
    if ticket["status"] == "closed":
        raise _invalid("status", "Status: closed prevents ticket update", "ClosedPreventsUpdate")
    status = data.get("status", ticket["status"])
    if status not in STATUSES:
        raise _invalid("status", f"Status: {str(status)[:40]} is not valid")
    if status == "new" and ticket["status"] != "new":
        raise _invalid("status", "Status: cannot be changed back to new")
    now = time.time()
    ticket.update(
        status=status,
        priority=_priority({"priority": data.get("priority", ticket["priority"])}),
        tags=_tags(data, ticket["tags"]),
        updated_at=_iso(now),
    )
    if status != "new" and ticket["assignee_id"] is None:
        ticket["assignee_id"] = AGENT_ID
    comment = data.get("comment")
    if isinstance(comment, dict) and isinstance(comment.get("body"), str) and comment["body"]:
        state.comments[ticket["id"]].append(
            _comment(
                next(state.comment_seq),
                AGENT_ID,
                comment["body"],
                now,
                bool(comment.get("public", True)),
            )
        )
    return _json({"ticket": ticket, "audit": {"ticket_id": ticket["id"], "created_at": _iso(now)}})


async def list_comments(request: web.Request) -> web.Response:
    ticket = _ticket_or_404(request)
    comments = {c["id"]: c for c in _state(request).comments[ticket["id"]]}
    return _cursor_page(request, "comments", list(comments), comments.__getitem__)


# --- control ---------------------------------------------------------------------------------


async def get_ratelimit(request: web.Request) -> web.Response:
    limiter: RateLimiter = request.app[RATELIMIT]
    return _json(
        {
            "per_second": limiter.per_second,
            "throttled": limiter.throttled,
            "in_window": len(limiter.log),
        }
    )


async def set_ratelimit(request: web.Request) -> web.Response:
    """Change the limit; it also empties the current window, so tests start from quiet."""
    limiter: RateLimiter = request.app[RATELIMIT]
    try:
        data = orjson.loads(await request.read())
        per_second = data["per_second"]
        if isinstance(per_second, bool) or not isinstance(per_second, int) or per_second < 1:
            raise ValueError(per_second)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return _json({"error": "per_second must be a positive integer"}, 400)
    limiter.per_second = per_second
    limiter.log.clear()
    return await get_ratelimit(request)


def create_app(rate_per_second: int = 20) -> web.Application:
    app = web.Application()
    app[SUPPORT] = seed_state()
    app[RATELIMIT] = RateLimiter(rate_per_second)
    p = "/api/v2"
    app.add_routes(
        [
            web.get(f"{p}/search.json", zendesk(search)),
            web.get(f"{p}/users/search.json", zendesk(search_users)),
            web.get(f"{p}/users/{{id}}.json", zendesk(get_user)),
            web.post(f"{p}/users.json", zendesk(create_user)),
            web.get(f"{p}/users/{{id}}/tickets/requested.json", zendesk(user_tickets)),
            web.get(f"{p}/tickets.json", zendesk(list_tickets)),
            web.post(f"{p}/tickets.json", zendesk(create_ticket)),
            web.get(f"{p}/tickets/{{id}}.json", zendesk(get_ticket)),
            web.put(f"{p}/tickets/{{id}}.json", zendesk(update_ticket)),
            web.get(f"{p}/tickets/{{id}}/comments.json", zendesk(list_comments)),
            web.get("/__ratelimit", get_ratelimit),
            web.post("/__ratelimit", set_ratelimit),
        ]
    )
    return app
