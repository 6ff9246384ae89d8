"""Sandbox CRM imitating HubSpot's CRM v3 objects API, as HubSpot publishes it.

Contacts, companies, deals and tasks under ``/crm/v3/objects/{type}``: create, read, update
(PATCH), archive (DELETE), list with ``limit`` (at most 100) and an ``after`` cursor answered in
``paging.next.after``, and ``POST .../search`` (filter groups, at most 200 a page and 10,000
results in all). Deal pipelines and stages under ``/crm/v3/pipelines/deals``; associations by
type id on create, through ``?associations=`` on reads and the v4 associations API.

A private app's bearer token authenticates every call; a missing or wrong one is HubSpot's 401.
Errors carry HubSpot's body: ``status``, ``message``, ``correlationId``, ``category`` and, for
invalid properties, ``errors``. Each token may make ``limits.per_window`` calls in a rolling
``limits.window_s`` (190 per 10 s, a Professional account's private app) and the search
endpoints ``limits.search_per_second`` calls a second (5); past either a 429 with HubSpot's
rate-limit body and a ``Retry-After``. ``POST /__limits`` changes the limits at run time.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import seed

TOKEN = "pat-na1-sandbox-hubspot-crm"  # noqa: S105 - the sandbox's own, public credential
PORTAL_ID = 62516
MAX_LIST_LIMIT = 100
MAX_SEARCH_LIMIT = 200
MAX_SEARCH_RESULTS = 10_000
MAX_FILTER_GROUPS = 5
MAX_FILTERS_PER_GROUP = 6
MAX_FILTERS = 18
MAX_ASSOCIATION_LIMIT = 500
MAX_BATCH_INPUTS = 1000
FIRST_NEW_ID = 1_000_001
EPOCH_2025_MS = 1_735_689_600_000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- the portal's schema ----------------------------------------------------------------------

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
LEAD_STATUSES = (
    "NEW",
    "OPEN",
    "IN_PROGRESS",
    "OPEN_DEAL",
    "UNQUALIFIED",
    "ATTEMPTED_TO_CONTACT",
    "CONNECTED",
    "BAD_TIMING",
)
INDUSTRIES = (
    "MECHANICAL_OR_INDUSTRIAL_ENGINEERING",
    "RETAIL",
    "COMPUTER_SOFTWARE",
    "LOGISTICS_AND_SUPPLY_CHAIN",
    "HOSPITAL_HEALTH_CARE",
    "FINANCIAL_SERVICES",
    "MACHINERY",
    "INFORMATION_TECHNOLOGY_AND_SERVICES",
)
"""Part of HubSpot's ``industry`` enumeration: the values the seed uses and a few more."""
TASK_STATUSES = ("NOT_STARTED", "IN_PROGRESS", "WAITING", "COMPLETED", "DEFERRED")
TASK_PRIORITIES = ("NONE", "LOW", "MEDIUM", "HIGH")
TASK_TYPES = ("CALL", "EMAIL", "TODO")


@dataclass(frozen=True, slots=True)
class Stage:
    id: str
    label: str
    probability: str
    closed: bool


PIPELINE_ID = "default"
STAGES: tuple[Stage, ...] = (
    Stage("appointmentscheduled", "Appointment Scheduled", "0.2", False),
    Stage("qualifiedtobuy", "Qualified To Buy", "0.4", False),
    Stage("presentationscheduled", "Presentation Scheduled", "0.6", False),
    Stage("decisionmakerboughtin", "Decision Maker Bought-In", "0.8", False),
    Stage("contractsent", "Contract Sent", "0.9", False),
    Stage("closedwon", "Closed Won", "1.0", True),
    Stage("closedlost", "Closed Lost", "0.0", True),
)
"""The stages of HubSpot's default deal pipeline, "Sales Pipeline"."""


@dataclass(frozen=True, slots=True)
class ObjectType:
    """One CRM object: its names, writable properties, enumerations, defaults."""

    name: str  # the path segment: contacts
    type_id: str  # the object type id: 0-1
    singular: str  # as in association type names: contact
    writable: frozenset[str]
    read_only: frozenset[str]
    defaults: tuple[str, ...]  # the properties a read answers when none are asked for
    options: dict[str, tuple[str, ...]] = field(default_factory=dict)
    numbers: frozenset[str] = frozenset()
    datetimes: frozenset[str] = frozenset()
    required: tuple[str, ...] = ()
    modified: str = "lastmodifieddate"

    @property
    def known(self) -> frozenset[str]:
        return self.writable | self.read_only


_COMMON_RO = frozenset({"createdate", "hs_object_id"})
CONTACTS = ObjectType(
    "contacts",
    "0-1",
    "contact",
    frozenset(
        {
            "email",
            "firstname",
            "lastname",
            "phone",
            "jobtitle",
            "company",
            "lifecyclestage",
            "hs_lead_status",
            "lead_source",
            "erp_customer_number",
        }
    ),
    _COMMON_RO | {"lastmodifieddate", "hubspotscore", "associatedcompanyid"},
    ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"),
    {"lifecyclestage": LIFECYCLE_STAGES, "hs_lead_status": LEAD_STATUSES},
)
COMPANIES = ObjectType(
    "companies",
    "0-2",
    "company",
    frozenset({"name", "domain", "industry", "customer_status", "erp_customer_number", "phone"}),
    _COMMON_RO | {"hs_lastmodifieddate", "num_associated_contacts"},
    ("createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"),
    {"industry": INDUSTRIES},
    modified="hs_lastmodifieddate",
)
DEALS = ObjectType(
    "deals",
    "0-3",
    "deal",
    frozenset({"dealname", "amount", "dealstage", "pipeline", "closedate", "deal_currency_code"}),
    _COMMON_RO | {"hs_lastmodifieddate", "hs_is_closed_won", "hs_is_closed"},
    (
        "amount",
        "closedate",
        "createdate",
        "dealname",
        "dealstage",
        "hs_lastmodifieddate",
        "hs_object_id",
        "pipeline",
    ),
    {"dealstage": tuple(s.id for s in STAGES), "pipeline": (PIPELINE_ID,)},
    numbers=frozenset({"amount"}),
    datetimes=frozenset({"closedate"}),
    modified="hs_lastmodifieddate",
)
TASKS = ObjectType(
    "tasks",
    "0-27",
    "task",
    frozenset(
        {
            "hs_task_subject",
            "hs_task_body",
            "hs_task_status",
            "hs_task_priority",
            "hs_task_type",
            "hs_timestamp",
        }
    ),
    _COMMON_RO | {"hs_lastmodifieddate"},
    ("hs_createdate", "hs_lastmodifieddate", "hs_object_id"),
    {
        "hs_task_status": TASK_STATUSES,
        "hs_task_priority": TASK_PRIORITIES,
        "hs_task_type": TASK_TYPES,
    },
    datetimes=frozenset({"hs_timestamp"}),
    required=("hs_timestamp",),
    modified="hs_lastmodifieddate",
)
TYPES: dict[str, ObjectType] = {t.name: t for t in (CONTACTS, COMPANIES, DEALS, TASKS)}
TYPE_BY_ID: dict[str, ObjectType] = {t.type_id: t for t in TYPES.values()}

# HubSpot-defined association types: (from, to) -> [(typeId, label)], the unlabeled one first,
# and the type id of the inverse direction.
ASSOCIATION_TYPES: dict[tuple[str, str], tuple[tuple[int, str | None], ...]] = {
    ("contacts", "companies"): ((279, None), (1, "Primary")),
    ("companies", "contacts"): ((280, None), (2, "Primary")),
    ("deals", "contacts"): ((3, None),),
    ("contacts", "deals"): ((4, None),),
    ("deals", "companies"): ((341, None), (5, "Primary")),
    ("companies", "deals"): ((342, None), (6, "Primary")),
    ("tasks", "contacts"): ((204, None),),
    ("contacts", "tasks"): ((203, None),),
    ("tasks", "companies"): ((192, None),),
    ("companies", "tasks"): ((191, None),),
    ("tasks", "deals"): ((216, None),),
    ("deals", "tasks"): ((215, None),),
}
INVERSE_TYPE: dict[int, int] = {
    279: 280, 280: 279, 1: 2, 2: 1, 3: 4, 4: 3, 341: 342, 342: 341, 5: 6, 6: 5,
    204: 203, 203: 204, 192: 191, 191: 192, 216: 215, 215: 216,
}  # fmt: skip
PRIMARY_TYPES = frozenset({1, 2, 5, 6})


def type_label(type_id: int) -> str | None:
    return next(
        (label for types in ASSOCIATION_TYPES.values() for t, label in types if t == type_id),
        None,
    )


# --- errors ----------------------------------------------------------------------------------


class HubSpotError(Exception):
    """An error answer in HubSpot's shape."""

    def __init__(
        self,
        status: int,
        category: str,
        message: str,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.category, self.message = status, category, message
        self.errors = errors

    def response(self) -> web.Response:
        body: dict[str, Any] = {
            "status": "error",
            "message": self.message,
            "correlationId": str(uuid.uuid4()),
            "category": self.category,
        }
        if self.errors:
            body["errors"] = self.errors
        return _json(body, self.status)


def _validation(message: str, errors: list[dict[str, Any]] | None = None) -> HubSpotError:
    return HubSpotError(400, "VALIDATION_ERROR", message, errors)


def _not_found() -> HubSpotError:
    return HubSpotError(404, "OBJECT_NOT_FOUND", "resource not found")


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


# --- state -----------------------------------------------------------------------------------


def _iso(ms: int) -> str:
    dt = datetime.fromtimestamp(ms / 1000, UTC)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class Record:
    id: int
    type: ObjectType
    properties: dict[str, str | None]
    created_ms: int
    updated_ms: int
    archived: bool = False

    def to_v3(self, wanted: Iterable[str] | None) -> dict[str, Any]:
        names = self.type.defaults if wanted is None else (*wanted, *_ALWAYS)
        props = {n: self.properties.get(n) for n in names if n in self.type.known or n in _ALWAYS}
        out: dict[str, Any] = {
            "id": str(self.id),
            "properties": props,
            "createdAt": _iso(self.created_ms),
            "updatedAt": _iso(self.updated_ms),
            "archived": self.archived,
        }
        if self.archived:
            out["archivedAt"] = _iso(self.updated_ms)
        return out


_ALWAYS = ("createdate", "hs_object_id")


class Limits(BaseModel):
    """The rate limits the sandbox enforces per token (HubSpot's, by default)."""

    model_config = ConfigDict(extra="forbid")

    per_window: int = Field(190, ge=1, description="Calls per rolling window, per token.")
    window_s: float = Field(10.0, gt=0, description="The rolling window (HubSpot: 10 s).")
    search_per_second: int = Field(5, ge=1, description="Search calls per second, per token.")


@dataclass
class Portal:
    """All state of the sandbox HubSpot account."""

    records: dict[str, dict[int, Record]] = field(default_factory=lambda: {t: {} for t in TYPES})
    by_email: dict[str, int] = field(default_factory=dict)
    # (type, id) -> other type -> other id -> association type ids from this side
    links: dict[tuple[str, int], dict[str, dict[int, set[int]]]] = field(default_factory=dict)
    next_id: int = FIRST_NEW_ID
    limits: Limits = field(default_factory=Limits)
    calls: dict[str, deque[float]] = field(default_factory=dict)
    searches: dict[str, deque[float]] = field(default_factory=dict)

    # records

    def insert(self, record: Record) -> Record:
        p = record.properties
        p["hs_object_id"] = str(record.id)
        p["createdate"] = _iso(record.created_ms)
        p[record.type.modified] = _iso(record.updated_ms)
        self.records[record.type.name][record.id] = record
        email = p.get("email") if record.type is CONTACTS else None
        if email:
            self.by_email[email.lower()] = record.id
        _derive(record)
        return record

    def create(self, kind: ObjectType, props: dict[str, str | None]) -> Record:
        now = _now_ms()
        record = Record(self.next_id, kind, dict(props), now, now)
        self.next_id += 1
        if kind is DEALS:
            record.properties.setdefault("pipeline", PIPELINE_ID)
        if kind is TASKS:
            record.properties.setdefault("hs_task_status", "NOT_STARTED")
        return self.insert(record)

    def update(self, record: Record, props: dict[str, str | None]) -> None:
        if record.type is CONTACTS and "email" in props:
            old = record.properties.get("email")
            if old:
                self.by_email.pop(old.lower(), None)
        record.properties.update(props)
        record.updated_ms = _now_ms()
        self.insert(record)

    def archive(self, record: Record) -> None:
        record.archived = True
        record.updated_ms = _now_ms()
        email = record.properties.get("email") if record.type is CONTACTS else None
        if email:
            self.by_email.pop(email.lower(), None)

    def live(self, kind: ObjectType, key: str) -> Record | None:
        if not key.isdigit():
            return None
        record = self.records[kind.name].get(int(key))
        return None if record is None or record.archived else record

    # associations

    def associate(self, a: Record, b: Record, type_id: int) -> None:
        self.links.setdefault((a.type.name, a.id), {}).setdefault(b.type.name, {}).setdefault(
            b.id, set()
        ).add(type_id)
        self.links.setdefault((b.type.name, b.id), {}).setdefault(a.type.name, {}).setdefault(
            a.id, set()
        ).add(INVERSE_TYPE[type_id])
        if type_id in PRIMARY_TYPES:  # a record has one primary company: the others lose it
            for other, types in self.links[(a.type.name, a.id)][b.type.name].items():
                if other != b.id and type_id in types:
                    types.discard(type_id)
                    self.links[(b.type.name, other)][a.type.name][a.id].discard(
                        INVERSE_TYPE[type_id]
                    )
        if a.type is CONTACTS and b.type is COMPANIES and type_id == 1:
            a.properties["associatedcompanyid"] = str(b.id)

    def dissociate(self, a: Record, b: Record) -> None:
        self.links.get((a.type.name, a.id), {}).get(b.type.name, {}).pop(b.id, None)
        self.links.get((b.type.name, b.id), {}).get(a.type.name, {}).pop(a.id, None)
        if a.type is CONTACTS and a.properties.get("associatedcompanyid") == str(b.id):
            a.properties["associatedcompanyid"] = None

    def associated(self, record: Record, to: ObjectType) -> list[tuple[int, set[int]]]:
        """The live records of type ``to`` associated with ``record``, by id, with type ids."""
        found = self.links.get((record.type.name, record.id), {}).get(to.name, {})
        table = self.records[to.name]
        return [
            (oid, types)
            for oid, types in sorted(found.items())
            if types and oid in table and not table[oid].archived
        ]

    # rate limits

    def admit(self, token: str, search: bool) -> RateLimited | None:
        """Count one call of ``token``; the 429 HubSpot answers when a limit is spent."""
        now = time.monotonic()
        lim = self.limits
        if search:
            seen = self.searches.setdefault(token, deque())
            while seen and seen[0] <= now - 1.0:
                seen.popleft()
            if len(seen) >= lim.search_per_second:
                return RateLimited("secondly", "SECONDLY", seen[0] + 1.0 - now)
            seen.append(now)
        calls = self.calls.setdefault(token, deque())
        while calls and calls[0] <= now - lim.window_s:
            calls.popleft()
        if len(calls) >= lim.per_window:
            return RateLimited(
                "ten_secondly_rolling", "TEN_SECONDLY_ROLLING", calls[0] + lim.window_s - now
            )
        calls.append(now)
        return None

    def remaining(self, token: str) -> int:
        return max(0, self.limits.per_window - len(self.calls.get(token, ())))


@dataclass(frozen=True, slots=True)
class RateLimited:
    """A spent limit: which one, and how long until the window frees a call."""

    limit: str  # as HubSpot names it in the message: ten_secondly_rolling, secondly
    policy: str  # as in policyName: TEN_SECONDLY_ROLLING, SECONDLY
    wait_s: float

    def response(self, headers: dict[str, str]) -> web.Response:
        body = {
            "status": "error",
            "message": f"You have reached your {self.limit} limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": str(uuid.uuid4()),
            "policyName": self.policy,
            "groupName": f"publicapi:private-app:{PORTAL_ID}",
        }
        retry_after = str(max(1, math.ceil(self.wait_s)))
        return _json(body, 429, {**headers, "Retry-After": retry_after})


def _derive(record: Record) -> None:
    """Properties HubSpot computes from others."""
    if record.type is DEALS:
        stage = next((s for s in STAGES if s.id == record.properties.get("dealstage")), None)
        record.properties["hs_is_closed"] = str(bool(stage and stage.closed)).lower()
        record.properties["hs_is_closed_won"] = str(bool(stage and stage.id == "closedwon")).lower()


PORTAL = web.AppKey("hubspot_crm", Portal)
"""The app's live state, for tests and control endpoints."""

# --- seed ------------------------------------------------------------------------------------

_INDUSTRY_OF_SEED = {
    "Manufacturing": "MECHANICAL_OR_INDUSTRIAL_ENGINEERING",
    "Retail": "RETAIL",
    "Software": "COMPUTER_SOFTWARE",
    "Logistics": "LOGISTICS_AND_SUPPLY_CHAIN",
    "Healthcare": "HOSPITAL_HEALTH_CARE",
    "Finance": "FINANCIAL_SERVICES",
}
COMPANY_ID_BASE = seed.HUBSPOT_COMPANY_BASE
CONTACT_ID_BASE = seed.HUBSPOT_CONTACT_BASE
LEAD_ID_BASE = seed.HUBSPOT_LEAD_BASE
DEAL_ID_BASE = seed.HUBSPOT_DEAL_BASE
TASK_ID_BASE = 400_000
DEAL_STAGE = {
    "prospecting": "appointmentscheduled",
    "qualification": "qualifiedtobuy",
    "proposal": "presentationscheduled",
    "negotiation": "decisionmakerboughtin",
    "closed_won": "closedwon",
    "closed_lost": "closedlost",
}
"""The seed's canonical deal stages as stages of the default pipeline."""
LEAD_STATUS = {
    "new": "NEW",
    "working": "IN_PROGRESS",
    "qualified": "OPEN_DEAL",
    "disqualified": "UNQUALIFIED",
}
"""The seed's canonical lead statuses as ``hs_lead_status`` values."""


def company_id(seed_index: int) -> int:
    return COMPANY_ID_BASE + seed_index


def contact_id(seed_index: int) -> int:
    return CONTACT_ID_BASE + seed_index


def seeded() -> Portal:
    """Deterministic records: every seed account a company, every person a contact, and more."""
    portal = Portal()
    r = seed.rng("hubspot-crm")
    day = 86_400_000
    companies: dict[int, Record] = {}
    for a in seed.accounts():
        created = EPOCH_2025_MS + r.randint(0, 200) * day
        companies[a.index] = portal.insert(
            Record(
                company_id(a.index),
                COMPANIES,
                {
                    "name": a.name,
                    "domain": a.domain,
                    "industry": _INDUSTRY_OF_SEED[a.industry],
                    "customer_status": r.choice(("Active", "Active", "Prospect", "Churned")),
                    "erp_customer_number": None,
                    "phone": None,
                },
                created,
                created,
            )
        )
    contacts: list[Record] = []
    for p in seed.people():
        created = EPOCH_2025_MS + r.randint(0, 300 * 86_400) * 1000
        contact = portal.insert(
            Record(
                contact_id(p.index),
                CONTACTS,
                {
                    "email": p.email,
                    "firstname": p.first_name,
                    "lastname": p.last_name,
                    "phone": p.phone,
                    "jobtitle": r.choice(("CEO", "CTO", "Buyer", "Engineer", None)),
                    "company": p.account.name,
                    "lifecyclestage": "customer",
                    "hs_lead_status": None,
                    "lead_source": None,
                    "erp_customer_number": p.erp_customer_number,
                    "hubspotscore": str(r.randint(0, 100)),
                    "associatedcompanyid": None,
                },
                created,
                created,
            )
        )
        portal.associate(contact, companies[p.account.index], 279)
        portal.associate(contact, companies[p.account.index], 1)
        contacts.append(contact)
    for d in seed.deals():
        created = EPOCH_2025_MS + r.randint(0, 300) * day
        close = datetime(d.close.year, d.close.month, d.close.day, tzinfo=UTC)
        deal = portal.insert(
            Record(
                DEAL_ID_BASE + d.index,
                DEALS,
                {
                    "dealname": d.name,
                    "amount": str(d.amount),
                    "dealstage": DEAL_STAGE[d.stage],
                    "pipeline": PIPELINE_ID,
                    "closedate": _iso(int(close.timestamp() * 1000)),
                    "deal_currency_code": "USD",
                },
                created,
                created,
            )
        )
        portal.associate(deal, companies[d.person.account.index], 341)
        portal.associate(deal, companies[d.person.account.index], 5)
        portal.associate(deal, contacts[d.person.index - 1], 3)
    for lead in seed.leads():
        created = EPOCH_2025_MS + r.randint(0, 300 * 86_400) * 1000
        portal.insert(
            Record(
                LEAD_ID_BASE + lead.index,
                CONTACTS,
                {
                    "email": lead.email,
                    "firstname": lead.first_name,
                    "lastname": lead.last_name,
                    "phone": None,
                    "jobtitle": None,
                    "company": lead.company,
                    "lifecyclestage": "lead",
                    "hs_lead_status": LEAD_STATUS[lead.status],
                    "lead_source": "Web",
                    "erp_customer_number": None,
                    "hubspotscore": str(lead.score),
                    "associatedcompanyid": None,
                },
                created,
                created,
            )
        )
    people = seed.people()
    for i in range(1, 41):
        person = people[r.randrange(len(people))]
        due = datetime(2026, r.randint(1, 12), r.randint(1, 28), tzinfo=UTC)
        created = EPOCH_2025_MS + r.randint(0, 300) * day
        task = portal.insert(
            Record(
                TASK_ID_BASE + i,
                TASKS,
                {
                    "hs_task_subject": r.choice(("Call", "Email", "Follow up")),
                    "hs_task_body": None,
                    "hs_task_status": r.choice(TASK_STATUSES),
                    "hs_task_priority": "NONE",
                    "hs_task_type": "TODO",
                    "hs_timestamp": _iso(int(due.timestamp() * 1000)),
                },
                created,
                created,
            )
        )
        portal.associate(task, contacts[person.index - 1], 204)
        portal.associate(task, companies[person.account.index], 192)
    return portal


# --- request reading -------------------------------------------------------------------------


def _portal(request: web.Request) -> Portal:
    return request.app[PORTAL]


def _object_type(key: str) -> ObjectType:
    kind = TYPES.get(key) or TYPE_BY_ID.get(key)
    if kind is None:
        raise HubSpotError(400, "VALIDATION_ERROR", f"Unable to infer object type from: {key}")
    return kind


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        data = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError as exc:
        raise _validation(f"Invalid input JSON on line 1, column {exc.colno}: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise _validation("Invalid input JSON: expected an object")
    return data


def _limit(request: web.Request, default: int, hi: int) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= hi:
        raise _validation(f"limit must be between 1 and {hi}, got {raw}")
    return int(raw)


def _wanted(request: web.Request) -> tuple[str, ...] | None:
    """``properties=a,b`` or repeated ``properties=``: unknown names are ignored on reads."""
    names = [n.strip() for v in request.query.getall("properties", []) for n in v.split(",")]
    names = [n for n in names if n]
    return tuple(names) if names else None


def _archived_param(request: web.Request) -> bool:
    raw = request.query.get("archived", "false")
    if raw not in ("true", "false"):
        raise _validation(f"archived must be true or false, got {raw}")
    return raw == "true"


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _property_error(name: str, code: str, message: str) -> dict[str, Any]:
    return {
        "isValid": False,
        "message": message,
        "error": code,
        "name": name,
        "localizedErrorMessage": message,
    }


def _clean_value(
    kind: ObjectType, name: str, value: Any
) -> tuple[str | None, dict[str, Any] | None]:
    """HubSpot's check of one property value; values are kept as strings, as HubSpot does."""
    if value is None or value == "":
        return None, None
    if isinstance(value, dict | list):
        return None, _property_error(
            name, "INVALID_PROPERTY_VALUE", f"{value!r} is not a valid value for {name}"
        )
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if name in kind.options and text not in kind.options[name]:
        return None, _property_error(
            name, "INVALID_OPTION", f"{text} was not one of the allowed options: {name}"
        )
    if name == "email" and not _EMAIL.match(text):
        return None, _property_error(name, "INVALID_EMAIL", f"Email address {text} is invalid")
    if name in kind.numbers:
        try:
            Decimal(text)
        except InvalidOperation:
            return None, _property_error(name, "INVALID_DECIMAL", f"{text} was not a valid number")
    if name in kind.datetimes:
        parsed = _parse_datetime(text)
        if parsed is None:
            return None, _property_error(
                name, "INVALID_DATE", f"{text} was not a valid date or timestamp"
            )
        text = parsed
    return text, None


def _parse_datetime(text: str) -> str | None:
    """Epoch milliseconds, an ISO date (midnight UTC) or an ISO instant, stored as an instant."""
    if text.isdigit():
        return _iso(int(text))
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            return _iso(int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000))
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return _iso(int(dt.timestamp() * 1000))


def _check_properties(
    portal: Portal, kind: ObjectType, body: dict[str, Any], own: Record | None
) -> dict[str, str | None]:
    """Every property known and writable, every value valid; else HubSpot's 400."""
    props = body.get("properties")
    if not isinstance(props, dict):
        raise _validation("Invalid input JSON: properties is required and must be an object")
    errors: list[dict[str, Any]] = []
    out: dict[str, str | None] = {}
    for name, value in props.items():
        if name in kind.read_only:
            errors.append(
                _property_error(name, "READ_ONLY_VALUE", f'Property "{name}" is a read only')
            )
        elif name not in kind.writable:
            errors.append(
                _property_error(name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist')
            )
        else:
            text, error = _clean_value(kind, name, value)
            if error:
                errors.append(error)
            else:
                out[name] = text
    if own is None:
        missing = [n for n in kind.required if out.get(n) is None]
        errors += [
            _property_error(n, "REQUIRED_PROPERTY", f'Property "{n}" is required') for n in missing
        ]
    if errors:
        raise _validation(
            f"Property values were not valid: {orjson.dumps(errors).decode()}",
            [
                {
                    "message": e["message"],
                    "code": e["error"],
                    "context": {"propertyName": [e["name"]]},
                }
                for e in errors
            ],
        )
    email = out.get("email")
    if email:
        existing = portal.by_email.get(email.lower())
        if existing is not None and (own is None or existing != own.id):
            raise HubSpotError(409, "CONFLICT", f"Contact already exists. Existing ID: {existing}")
    return out


def _association_inputs(
    portal: Portal, kind: ObjectType, body: dict[str, Any]
) -> list[tuple[Record, int]]:
    """The ``associations`` of a create body: each target live, each type id defined."""
    raw = body.get("associations", [])
    if not isinstance(raw, list):
        raise _validation("associations must be a list")
    out: list[tuple[Record, int]] = []
    for item in raw:
        to = item.get("to") if isinstance(item, dict) else None
        types = item.get("types") if isinstance(item, dict) else None
        if not isinstance(to, dict) or not isinstance(types, list) or not types:
            raise _validation("each association needs to.id and types")
        target_id = str(to.get("id", ""))
        for spec in types:
            tid = spec.get("associationTypeId") if isinstance(spec, dict) else None
            category = spec.get("associationCategory") if isinstance(spec, dict) else None
            pair = next(
                (
                    (f, t)
                    for (f, t), defined in ASSOCIATION_TYPES.items()
                    if f == kind.name and any(d == tid for d, _ in defined)
                ),
                None,
            )
            if category != "HUBSPOT_DEFINED" or pair is None:
                raise _validation(
                    f"{category} {tid} is not a valid association type from {kind.singular}"
                )
            target = portal.live(TYPES[pair[1]], target_id)
            if target is None:
                raise _validation(
                    f"One or more associations are invalid: {TYPES[pair[1]].singular} "
                    f"{target_id} does not exist"
                )
            out.append((target, int(tid)))  # type: ignore[arg-type]
    return out


def _with_associations(
    portal: Portal, record: Record, out: dict[str, Any], request: web.Request
) -> dict[str, Any]:
    """``?associations=companies,contacts``: each type's associated ids, as v3 answers them."""
    names = [n.strip() for v in request.query.getall("associations", []) for n in v.split(",")]
    found: dict[str, Any] = {}
    for name in filter(None, names):
        to = TYPES.get(name) or TYPE_BY_ID.get(name)
        if to is None:
            continue  # an unknown association type is left out of the answer
        results = []
        for oid, types in portal.associated(record, to):
            for tid in sorted(types):
                suffix = "" if tid in PRIMARY_TYPES else "_unlabeled"
                if (record.type.name, to.name) not in (
                    ("contacts", "companies"),
                    ("companies", "contacts"),
                    ("deals", "companies"),
                    ("companies", "deals"),
                ):
                    suffix = ""
                results.append(
                    {"id": str(oid), "type": f"{record.type.singular}_to_{to.singular}{suffix}"}
                )
        if results:
            found[to.name] = {"results": results}
    if found:
        out["associations"] = found
    return out


# --- CRM v3 objects --------------------------------------------------------------------------


async def list_objects(request: web.Request) -> web.Response:
    portal = _portal(request)
    kind = _object_type(request.match_info["object_type"])
    limit = _limit(request, 10, MAX_LIST_LIMIT)
    archived = _archived_param(request)
    after = request.query.get("after")
    if after is not None and not after.isdigit():
        raise _validation(f"after must be a cursor from paging.next.after, got {after}")
    ids = sorted(i for i, r in portal.records[kind.name].items() if r.archived == archived)
    start = 0
    if after is not None:
        start = next((n for n, i in enumerate(ids) if i >= int(after)), len(ids))
    page = ids[start : start + limit]
    wanted = _wanted(request)
    table = portal.records[kind.name]
    body: dict[str, Any] = {
        "results": [
            _with_associations(portal, table[i], table[i].to_v3(wanted), request) for i in page
        ]
    }
    if start + limit < len(ids):
        nxt = str(ids[start + limit])
        body["paging"] = {"next": {"after": nxt, "link": str(request.url.update_query(after=nxt))}}
    return _json(body)


def _found(request: web.Request, kind: ObjectType) -> Record:
    portal = _portal(request)
    key = request.match_info["object_id"]
    id_property = request.query.get("idProperty")
    if id_property is not None:
        if kind is not CONTACTS or id_property != "email":
            raise _validation(f"{id_property} is not a unique identifier property")
        found = portal.by_email.get(key.lower())
        key = str(found) if found is not None else ""
    record = portal.live(kind, key)
    if record is None:
        raise _not_found()
    return record


async def get_object(request: web.Request) -> web.Response:
    kind = _object_type(request.match_info["object_type"])
    if _archived_param(request):
        record = (
            _portal(request)
            .records[kind.name]
            .get(
                int(request.match_info["object_id"])
                if request.match_info["object_id"].isdigit()
                else -1
            )
        )
        if record is None or not record.archived:
            raise _not_found()
    else:
        record = _found(request, kind)
    return _json(
        _with_associations(_portal(request), record, record.to_v3(_wanted(request)), request)
    )


async def create_object(request: web.Request) -> web.Response:
    portal = _portal(request)
    kind = _object_type(request.match_info["object_type"])
    body = await _body(request)
    props = _check_properties(portal, kind, body, None)
    targets = _association_inputs(portal, kind, body)
    record = portal.create(kind, props)
    for target, tid in targets:
        portal.associate(record, target, tid)
    return _json(record.to_v3((*props, *kind.defaults)), 201)


async def update_object(request: web.Request) -> web.Response:
    portal = _portal(request)
    kind = _object_type(request.match_info["object_type"])
    record = _found(request, kind)
    body = await _body(request)
    props = _check_properties(portal, kind, body, record)
    portal.update(record, props)
    return _json(record.to_v3((*props, *kind.defaults)))


async def archive_object(request: web.Request) -> web.Response:
    kind = _object_type(request.match_info["object_type"])
    key = request.match_info["object_id"]
    record = _portal(request).live(kind, key)
    if record is not None:
        _portal(request).archive(record)
    return web.Response(status=204)  # archiving what is already gone answers 204 too


# --- search ----------------------------------------------------------------------------------

Predicate = Callable[[Portal, Record], bool]


def _compare(have: str | None, want: str, kind: ObjectType, name: str) -> int | None:
    """-1/0/1 comparing a stored value with a filter value as the property's type orders them."""
    if have is None:
        return None
    try:
        if name in kind.numbers or name == "hs_object_id":
            a, b = Decimal(have), Decimal(want)
        elif name in kind.datetimes or name in ("createdate", "lastmodifieddate"):
            parsed = _parse_datetime(want)
            if parsed is None:
                return None
            a, b = have, parsed  # type: ignore[assignment]
        else:
            a, b = have.lower(), want.lower()  # type: ignore[assignment]
    except InvalidOperation:
        return None
    return (a > b) - (a < b)


def _filter(kind: ObjectType, raw: Any) -> Predicate:
    if not isinstance(raw, dict):
        raise _validation(f"Invalid filter: {raw}")
    name, op = raw.get("propertyName"), raw.get("operator")
    if not isinstance(name, str) or not isinstance(op, str):
        raise _validation("each filter needs propertyName and operator")
    if name.startswith("associations."):
        other = next(
            (t for t in TYPES.values() if t.singular == name.removeprefix("associations.")), None
        )
        if other is None or op != "EQ":
            raise _validation(f"{name} supports only EQ with a known object type")
        want = str(raw.get("value", ""))

        def linked(portal: Portal, rec: Record) -> bool:
            return any(str(oid) == want for oid, _ in portal.associated(rec, other))

        return linked
    if name not in kind.known:
        raise _validation(
            f"There was a problem with the request. Property {name} does not exist on "
            f"{kind.singular}"
        )
    if op in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):
        has = op == "HAS_PROPERTY"
        return lambda _p, rec: (rec.properties.get(name) is not None) == has
    if op in ("IN", "NOT_IN"):
        values = raw.get("values")
        if not isinstance(values, list) or not values:
            raise _validation(f"{op} needs a non-empty values list")
        wanted = {str(v).lower() for v in values}
        inside = op == "IN"
        return lambda _p, rec: (
            ((rec.properties.get(name) or "").lower() in wanted) == inside
            and (inside or rec.properties.get(name) is not None)
        )
    if "value" not in raw:
        raise _validation(f"{op} needs a value")
    want = str(raw["value"]).lower() if isinstance(raw["value"], bool) else str(raw["value"])
    tests: dict[str, Callable[[int], bool]] = {
        "EQ": lambda c: c == 0,
        "NEQ": lambda c: c != 0,
        "LT": lambda c: c < 0,
        "LTE": lambda c: c <= 0,
        "GT": lambda c: c > 0,
        "GTE": lambda c: c >= 0,
    }
    if op == "CONTAINS_TOKEN":
        token = want.lower().strip("*")
        return lambda _p, rec: token in (rec.properties.get(name) or "").lower()
    test = tests.get(op)
    if test is None:
        raise _validation(f"Unsupported operator: {op}")

    def compare(_p: Portal, rec: Record) -> bool:
        c = _compare(rec.properties.get(name), want, kind, name)
        return test(c) if c is not None else op == "NEQ"

    return compare


def _sort_key(record: Record, name: str) -> tuple[int, Decimal | str]:
    """Numbers as numbers, text case-insensitively; a record without the value sorts last."""
    value = record.properties.get(name)
    if value is None:
        return (1, "")
    if name == "hs_object_id" or name in record.type.numbers:
        try:
            return (0, Decimal(value))
        except InvalidOperation:
            pass
    return (0, value.lower())


async def search_objects(request: web.Request) -> web.Response:
    """Filters in a group are ANDed, groups ORed; results by id, ``after`` an offset."""
    portal = _portal(request)
    kind = _object_type(request.match_info["object_type"])
    body = await _body(request)
    groups = body.get("filterGroups", [])
    limit = body.get("limit", 10)
    after = body.get("after", "0")
    if not isinstance(groups, list) or len(groups) > MAX_FILTER_GROUPS:
        raise _validation(f"filterGroups must be a list of at most {MAX_FILTER_GROUPS} groups")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_SEARCH_LIMIT:
        raise _validation(f"limit must be between 1 and {MAX_SEARCH_LIMIT}")
    if not str(after).isdigit():
        raise _validation(f"after must be a number, got {after}")
    start = int(after)
    if start + limit > MAX_SEARCH_RESULTS:
        raise _validation(
            f"The search API returns at most {MAX_SEARCH_RESULTS} results: after + limit "
            f"may not exceed {MAX_SEARCH_RESULTS}"
        )
    parsed: list[list[Predicate]] = []
    count = 0
    for group in groups:
        filters = group.get("filters") if isinstance(group, dict) else None
        if not isinstance(filters, list) or len(filters) > MAX_FILTERS_PER_GROUP:
            raise _validation(f"each filter group takes at most {MAX_FILTERS_PER_GROUP} filters")
        count += len(filters)
        parsed.append([_filter(kind, f) for f in filters])
    if count > MAX_FILTERS:
        raise _validation(f"a search takes at most {MAX_FILTERS} filters in all")
    sorts = body.get("sorts", [])
    if not isinstance(sorts, list) or len(sorts) > 1:
        raise _validation("sorts takes at most one sort")
    order: tuple[str, bool] | None = None
    for sort in sorts:
        name = sort.get("propertyName") if isinstance(sort, dict) else None
        direction = sort.get("direction", "ASCENDING") if isinstance(sort, dict) else None
        if name not in kind.known or direction not in ("ASCENDING", "DESCENDING"):
            raise _validation(f"Invalid sort: {sort}")
        order = (name, direction == "DESCENDING")
    props = body.get("properties")
    if props is not None and (
        not isinstance(props, list) or not all(isinstance(p, str) for p in props)
    ):
        raise _validation("properties must be a list of property names")
    wanted = tuple(props) if props else None
    table = portal.records[kind.name]
    hits = [
        table[i]
        for i in sorted(table)
        if not table[i].archived
        and (not parsed or any(all(p(portal, table[i]) for p in g) for g in parsed))
    ]
    if order is not None:
        name, descending = order
        hits.sort(key=lambda r: _sort_key(r, name), reverse=descending)
    out: dict[str, Any] = {
        "total": len(hits),
        "results": [r.to_v3(wanted) for r in hits[start : start + limit]],
    }
    nxt = start + limit
    if nxt < len(hits) and nxt < MAX_SEARCH_RESULTS:
        out["paging"] = {"next": {"after": str(nxt)}}
    return _json(out)


# --- pipelines -------------------------------------------------------------------------------


def _pipeline() -> dict[str, Any]:
    stamp = _iso(EPOCH_2025_MS)
    return {
        "id": PIPELINE_ID,
        "label": "Sales Pipeline",
        "displayOrder": 0,
        "stages": [
            {
                "id": s.id,
                "label": s.label,
                "displayOrder": n,
                "metadata": {"isClosed": str(s.closed).lower(), "probability": s.probability},
                "createdAt": stamp,
                "updatedAt": stamp,
                "archived": False,
            }
            for n, s in enumerate(STAGES)
        ],
        "createdAt": stamp,
        "updatedAt": stamp,
        "archived": False,
    }


def _pipeline_type(request: web.Request) -> None:
    if request.match_info["object_type"] != "deals":
        raise _validation(f"Object type {request.match_info['object_type']} has no pipelines here")


async def list_pipelines(request: web.Request) -> web.Response:
    _pipeline_type(request)
    return _json({"results": [_pipeline()]})


async def get_pipeline(request: web.Request) -> web.Response:
    _pipeline_type(request)
    if request.match_info["pipeline_id"] != PIPELINE_ID:
        raise _not_found()
    return _json(_pipeline())


# --- v4 associations -------------------------------------------------------------------------


def _association_types(types: set[int]) -> list[dict[str, Any]]:
    return [
        {"category": "HUBSPOT_DEFINED", "typeId": t, "label": type_label(t)} for t in sorted(types)
    ]


def _ends(request: web.Request) -> tuple[Record, ObjectType]:
    kind = _object_type(request.match_info["from_type"])
    to = _object_type(request.match_info["to_type"])
    if (kind.name, to.name) not in ASSOCIATION_TYPES:
        raise _validation(f"no association types from {kind.singular} to {to.singular}")
    record = _portal(request).live(kind, request.match_info["from_id"])
    if record is None:
        raise _not_found()
    return record, to


async def list_associations(request: web.Request) -> web.Response:
    portal = _portal(request)
    record, to = _ends(request)
    limit = _limit(request, MAX_ASSOCIATION_LIMIT, MAX_ASSOCIATION_LIMIT)
    after = request.query.get("after", "0")
    if not after.isdigit():
        raise _validation(f"after must be a cursor from paging.next.after, got {after}")
    found = portal.associated(record, to)
    start = int(after)
    body: dict[str, Any] = {
        "results": [
            {"toObjectId": oid, "associationTypes": _association_types(types)}
            for oid, types in found[start : start + limit]
        ]
    }
    if start + limit < len(found):
        nxt = str(start + limit)
        body["paging"] = {"next": {"after": nxt, "link": str(request.url.update_query(after=nxt))}}
    return _json(body)


async def associate_default(request: web.Request) -> web.Response:
    portal = _portal(request)
    record, to = _ends(request)
    other = portal.live(to, request.match_info["to_id"])
    if other is None:
        raise _not_found()
    tid = ASSOCIATION_TYPES[(record.type.name, to.name)][0][0]
    portal.associate(record, other, tid)
    now = _iso(_now_ms())
    spec = {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": tid}
    inverse = {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": INVERSE_TYPE[tid]}
    return _json(
        {
            "status": "COMPLETE",
            "results": [
                {
                    "from": {"id": str(record.id)},
                    "to": {"id": str(other.id)},
                    "associationSpec": spec,
                },
                {
                    "from": {"id": str(other.id)},
                    "to": {"id": str(record.id)},
                    "associationSpec": inverse,
                },
            ],
            "startedAt": now,
            "completedAt": now,
        }
    )


async def remove_associations(request: web.Request) -> web.Response:
    portal = _portal(request)
    record, to = _ends(request)
    other = portal.live(to, request.match_info["to_id"])
    if other is not None:
        portal.dissociate(record, other)
    return web.Response(status=204)


async def batch_read_associations(request: web.Request) -> web.Response:
    """Each input's associated ids; an input with none is an error entry (207)."""
    portal = _portal(request)
    kind = _object_type(request.match_info["from_type"])
    to = _object_type(request.match_info["to_type"])
    if (kind.name, to.name) not in ASSOCIATION_TYPES:
        raise _validation(f"no association types from {kind.singular} to {to.singular}")
    body = await _body(request)
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or len(inputs) > MAX_BATCH_INPUTS:
        raise _validation(f"inputs must be a list of at most {MAX_BATCH_INPUTS} ids")
    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for item in inputs:
        key = str(item.get("id", "")) if isinstance(item, dict) else ""
        record = portal.live(kind, key)
        found = portal.associated(record, to) if record is not None else []
        if not found:
            errors.append(
                {
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "subCategory": "crm.associations.NO_ASSOCIATIONS_FOUND",
                    "message": f"No {to.singular} is associated with {kind.singular} {key}.",
                    "context": {"fromObjectId": [key]},
                }
            )
            continue
        results.append(
            {
                "from": {"id": key},
                "to": [
                    {"toObjectId": oid, "associationTypes": _association_types(types)}
                    for oid, types in found
                ],
            }
        )
    now = _iso(_now_ms())
    out: dict[str, Any] = {
        "status": "COMPLETE",
        "results": results,
        "startedAt": now,
        "completedAt": now,
    }
    if errors:
        out["numErrors"] = len(errors)
        out["errors"] = errors
    return _json(out, 207 if errors else 200)


# --- auth, limits, errors --------------------------------------------------------------------

_NO_CREDENTIALS = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you "
    "can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer token, then the token's rate limits; HubSpotError becomes HubSpot's error body."""
    if request.path.startswith("/__"):
        return await handler(request)
    portal = _portal(request)
    header = request.headers.get("Authorization", "")
    token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else ""
    if not token:
        return HubSpotError(401, "INVALID_AUTHENTICATION", _NO_CREDENTIALS).response()
    if token != TOKEN:
        return HubSpotError(
            401,
            "INVALID_AUTHENTICATION",
            "The access token provided is invalid or has expired. Check your private app's "
            "access token.",
        ).response()
    search = request.method == "POST" and request.path.endswith("/search")
    refused = portal.admit(token, search)
    if refused is not None:
        return refused.response(_limit_headers(portal, token, search))
    try:
        response = await handler(request)
    except HubSpotError as exc:
        response = exc.response()
    response.headers.update(_limit_headers(portal, token, search))
    return response


def _limit_headers(portal: Portal, token: str, search: bool) -> dict[str, str]:
    if search:  # the search endpoints do not send the rolling limit's headers
        return {}
    return {
        "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(portal.limits.window_s * 1000)),
        "X-HubSpot-RateLimit-Max": str(portal.limits.per_window),
        "X-HubSpot-RateLimit-Remaining": str(portal.remaining(token)),
    }


async def set_limits(request: web.Request) -> web.Response:
    """``POST /__limits`` with ``Limits`` fields replaces the limits and forgets past calls."""
    portal = _portal(request)
    try:
        portal.limits = Limits.model_validate(orjson.loads(await request.read() or b"{}"))
    except (orjson.JSONDecodeError, ValidationError) as exc:
        return _json({"error": str(exc)}, 400)
    portal.calls.clear()
    portal.searches.clear()
    return _json(portal.limits.model_dump())


async def get_limits(request: web.Request) -> web.Response:
    return _json(_portal(request).limits.model_dump())


def create_app() -> web.Application:
    app = web.Application(middlewares=[_guard])
    app[PORTAL] = seeded()
    objects = "/crm/v3/objects/{object_type}"
    assoc = "/crm/v4/objects/{from_type}/{from_id}/associations"
    app.add_routes(
        [
            web.get(objects, list_objects),
            web.post(objects, create_object),
            web.post(f"{objects}/search", search_objects),
            web.get(f"{objects}/{{object_id}}", get_object),
            web.patch(f"{objects}/{{object_id}}", update_object),
            web.delete(f"{objects}/{{object_id}}", archive_object),
            web.get("/crm/v3/pipelines/{object_type}", list_pipelines),
            web.get("/crm/v3/pipelines/{object_type}/{pipeline_id}", get_pipeline),
            web.get(f"{assoc}/{{to_type}}", list_associations),
            web.put(f"{assoc}/default/{{to_type}}/{{to_id}}", associate_default),
            web.delete(f"{assoc}/{{to_type}}/{{to_id}}", remove_associations),
            web.post(
                "/crm/v4/associations/{from_type}/{to_type}/batch/read", batch_read_associations
            ),
            web.get("/__limits", get_limits),
            web.post("/__limits", set_limits),
        ]
    )
    return app
